"""Processes under test, as real subprocesses: ``crm process`` and ``crm api serve``.

Shared by the freshness, read API and memory sections: the environment of a fresh
topic and schema, starting and always stopping the processes, waiting for the
projections to catch up, API keys, and cleaning up schemas and topics afterwards.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import httpx
import sqlalchemy as sa

from auth import Scope
from bench.core import BenchContext
from bench.pipeline import delete_topics, drop_schemas
from crm.bootstrap_auth import build_api_key_store
from crm.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
CRM = str(Path(sys.executable).parent / "crm")
WORKERS = max(2, os.cpu_count() or 1)
"""``--workers`` of the HTTP services as deployed: one process per core (at least 2)."""


@dataclass(frozen=True)
class Target:
    """Where one section's processes read and write: a fresh topic and schema."""

    topic: str
    schema: str
    group: str
    env: Mapping[str, str]

    def settings(self) -> Settings:
        return Settings(
            kafka_bootstrap=self.env["CRM_KAFKA_BOOTSTRAP"],
            database_url=self.env["CRM_DATABASE_URL"],
            topic=self.topic,
            projection_schema=self.schema,
            privacy_schema=self.env["CRM_PRIVACY_SCHEMA"],
            data_dir=Path(self.env["CRM_DATA_DIR"]),
        )


def target(ctx: BenchContext, what: str) -> Target:
    """A fresh topic/schema/consumer group named after ``what`` and this run."""
    topic, schema, group = ctx.name(f"{what}_topic"), ctx.name(what), ctx.name(f"{what}_group")
    data_dir = ctx.workdir / ctx.name(what)
    data_dir.mkdir(parents=True, exist_ok=True)
    env = {
        **os.environ,
        "CRM_KAFKA_BOOTSTRAP": ctx.kafka_bootstrap,
        "CRM_DATABASE_URL": ctx.database_url,
        "CRM_TOPIC": topic,
        "CRM_PROJECTION_SCHEMA": schema,
        # its own key store: the master key is this run's (CRM_DATA_DIR/master.key)
        "CRM_PRIVACY_SCHEMA": f"{schema}_keys",
        "CRM_DATA_DIR": str(data_dir),
        "PYTHONUNBUFFERED": "1",
    }
    return Target(topic, schema, group, env)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Proc:
    """A started subprocess with its log file; ``stop()`` is idempotent."""

    def __init__(self, name: str, args: list[str], env: Mapping[str, str], log: Path) -> None:
        self.name = name
        self.log = log
        self._log_file = log.open("wb")
        self.popen = subprocess.Popen(
            args, env=dict(env), cwd=ROOT, stdout=self._log_file, stderr=subprocess.STDOUT
        )

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def check(self) -> None:
        if not self.alive():
            raise RuntimeError(f"{self.name} exited with {self.popen.returncode}: {self.tail()}")

    def tail(self, chars: int = 2_000) -> str:
        try:
            return self.log.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    def stop(self, timeout: float = 20.0) -> None:
        if self.alive():
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(5)
        self._log_file.close()


def start_processor(ctx: BenchContext, t: Target, *, log_level: str = "info") -> Proc:
    return Proc(
        "crm process",
        [CRM, "process", "--workers-group", t.group, "--log-level", log_level],
        t.env,
        ctx.workdir / f"{t.schema}_process.log",
    )


def start_api(ctx: BenchContext, t: Target, port: int, workers: int = 1) -> Proc:
    command = [CRM, "api", "serve", "--host", "127.0.0.1", "--port", str(port)]
    command += ["--log-level", "warning", "--workers", str(workers)]
    return Proc("crm api serve", command, t.env, ctx.workdir / f"{t.schema}_api{workers}.log")


def wait_http(proc: Proc, url: str, timeout: float = 60.0) -> None:
    """Until ``url`` answers at all (any status), or raise."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        proc.check()
        try:
            httpx.get(url, timeout=2)
            return
        except httpx.HTTPError:
            time.sleep(0.2)
    raise TimeoutError(f"{proc.name} did not answer {url} within {timeout:.0f}s")


def wait_listening(proc: Proc, port: int, sockets: int, timeout: float = 60.0) -> None:
    """Until ``sockets`` sockets listen on ``port``: each worker process of ``crm api
    serve`` / ``crm ingest serve --workers N`` listens on its own once its app has
    started (``crm.serving.PortShare``); a load that began before the last one did would
    be served by the others alone."""
    deadline = time.monotonic() + timeout
    while (found := listening_sockets(port)) < sockets:
        proc.check()
        if time.monotonic() > deadline:
            raise TimeoutError(f"{proc.name}: {found} of {sockets} sockets listen on {port}")
        time.sleep(0.1)


def listening_sockets(port: int) -> int:
    """How many TCP sockets listen on ``port`` (Linux ``/proc/net/tcp*``)."""
    found = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError):
            for line in Path(table).read_text().splitlines()[1:]:
                fields = line.split()
                if fields[3] == "0A" and int(fields[1].rpartition(":")[2], 16) == port:
                    found += 1
    return found


def wait_log(proc: Proc, text: str, timeout: float = 90.0) -> float:
    """Until ``text`` appears in the process's log; returns the seconds waited."""
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        proc.check()
        if text in proc.tail(1_000_000):
            return time.monotonic() - start
        time.sleep(0.1)
    raise TimeoutError(f"{proc.name} did not log {text!r} within {timeout:.0f}s")


@contextlib.contextmanager
def running(*procs: Proc) -> Iterator[None]:
    try:
        yield
    finally:
        for p in procs:
            p.stop()


# -- the projections' progress ---------------------------------------------------------


def checkpoints(engine: sa.Engine, t: Target) -> dict[int, int]:
    table = sa.table(
        "checkpoints",
        sa.column("topic"),
        sa.column("partition"),
        sa.column("next_offset"),
        schema=t.schema,
    )
    query = sa.select(table.c.partition, table.c.next_offset).where(table.c.topic == t.topic)
    try:
        with engine.connect() as conn:
            return {int(p): int(o) for p, o in conn.execute(query)}
    except sa.exc.ProgrammingError:  # the processor has not created its tables yet
        return {}


def lag(ends: Mapping[int, int], positions: Mapping[int, int]) -> int:
    return sum(max(0, end - positions.get(p, 0)) for p, end in ends.items())


def wait_caught_up(
    engine: sa.Engine,
    t: Target,
    end_offsets: Callable[[], Mapping[int, int]],
    *,
    proc: Proc | None = None,
    timeout: float = 600.0,
    settle_s: float = 1.0,
) -> float:
    """Until the checkpoints reach the log's end and stay there for ``settle_s`` (derived
    events, e.g. identity merges, land after the end seen first). Returns seconds waited."""
    start = time.monotonic()
    stable_since: float | None = None
    while True:
        if proc is not None:
            proc.check()
        ends = end_offsets()
        if lag(ends, checkpoints(engine, t)) == 0 and any(ends.values()):
            stable_since = stable_since or time.monotonic()
            if time.monotonic() - stable_since >= settle_s:
                return stable_since - start
        else:
            stable_since = None
        if time.monotonic() - start > timeout:
            raise TimeoutError(f"projections still behind after {timeout:.0f}s")
        time.sleep(0.1)


# -- keys and clean-up -----------------------------------------------------------------


def create_key(t: Target, scope: Scope = Scope.READ) -> tuple[str, str]:
    """(plaintext, key id) of a new key with ``scope``."""
    key = build_api_key_store(t.settings()).create(f"bench {t.schema}", [scope])
    return key.plaintext, key.key_id


def revoke_key(t: Target, key_id: str) -> None:
    with contextlib.suppress(Exception):
        build_api_key_store(t.settings()).revoke(key_id)


def cleanup(ctx: BenchContext, *targets: Target, extra_topics: tuple[str, ...] = ()) -> None:
    """Drop the targets' schemas (projections and data keys) and topics."""
    schemas = [s for t in targets for s in (t.schema, t.env["CRM_PRIVACY_SCHEMA"])]
    with contextlib.suppress(Exception):
        drop_schemas(ctx.database_url, *schemas)
    delete_topics(ctx.kafka_bootstrap, [t.topic for t in targets] + list(extra_topics))
