"""The developer's local stack behind ``crm dev``: one Kafka and one PostgreSQL.

Everything lives under one home (``$CRM_DEV_HOME`` or ``~/.local/state/loopcrm/dev``)::

    home/state.json   what was started: ports, pids, paths, versions (for humans and tools)
    home/kafka/       LocalKafka's home (config, data, kafka.log)
    home/postgres/    LocalPostgres's home (as root the cluster itself lives in
                      /var/tmp/loopcrm-postgres/…; state.json and home/postgres/pgdata
                      say where)

The services are detached processes: they outlive the CLI that started them.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from crm.devservices._proc import file_lock, read_json, write_json
from crm.devservices.errors import DevServiceError
from crm.devservices.kafka import LocalKafka
from crm.devservices.postgres import LocalPostgres

__all__ = ["DevStack", "default_dev_home"]

Progress = Callable[[str], None]


def default_dev_home() -> Path:
    """``$CRM_DEV_HOME`` if set, else ``~/.local/state/loopcrm/dev``."""
    env = os.environ.get("CRM_DEV_HOME")
    return Path(env).expanduser() if env else Path.home() / ".local/state/loopcrm/dev"


class DevStack:
    """Start, stop and describe the local Kafka + PostgreSQL pair of one home.

    Every method may be called from a fresh process: state is rediscovered from disk.
    ``up`` and ``down`` hold a lock on ``home/.lock`` so concurrent CLIs do not race.
    """

    def __init__(self, home: Path | None = None) -> None:
        self.home = (home or default_dev_home()).expanduser().resolve()
        self.kafka = LocalKafka(self.home / "kafka")
        self.postgres = LocalPostgres(self.home / "postgres")

    @property
    def state_path(self) -> Path:
        return self.home / "state.json"

    def up(self, on_progress: Progress | None = None) -> dict[str, Any]:
        """Start whichever service is not running (both concurrently) and wait until
        they answer. A no-op when both run. Records ``state.json`` (also on failure)
        and returns ``status()``. Raises DevServiceError naming every failure.
        """
        say = on_progress or (lambda _msg: None)
        with file_lock(self.home / ".lock"):
            tasks: dict[str, Callable[[], None]] = {}
            if not self.kafka.is_running():
                tasks["kafka"] = lambda: self.kafka.start(on_progress=say)
            if not self.postgres.is_running():
                tasks["postgres"] = lambda: self.postgres.start(on_progress=say)
            errors = _run_concurrently(tasks)
            status = self._record()
        if errors:
            raise DevServiceError("\n\n".join(f"{name}: {err}" for name, err in errors.items()))
        return status

    def down(self, on_progress: Progress | None = None) -> None:
        """Stop both services (concurrently); afterwards none of their processes is left.

        Idempotent. Raises DevServiceError if a service could not be stopped.
        """
        say = on_progress or (lambda _msg: None)
        say("stopping Kafka and PostgreSQL…")
        with file_lock(self.home / ".lock"):
            errors = _run_concurrently({"kafka": self.kafka.stop, "postgres": self.postgres.stop})
            if self.state_path.exists():
                self._record()
        if errors:
            raise DevServiceError("\n\n".join(f"{name}: {err}" for name, err in errors.items()))

    def status(self) -> dict[str, Any]:
        """Live view: ``{"home", "configured", "kafka": {...}, "postgres": {...}}``.

        ``configured`` is False until the first ``up()``. Each service dict has
        ``running``, ``pid``, ``version``, its endpoint (``bootstrap`` / ``url``),
        ``port`` and where its data and log are.
        """
        kafka, pg = self.kafka, self.postgres
        return {
            "home": str(self.home),
            "configured": self.state_path.exists(),
            "kafka": {
                "running": kafka.is_running(),
                "pid": kafka.pid,
                "bootstrap": kafka.bootstrap,
                "port": kafka.port,
                "controller_port": kafka.controller_port,
                "version": kafka.version,
                "data_dir": str(kafka.data_dir),
                "log": str(kafka.log_path),
            },
            "postgres": {
                "running": pg.is_running(),
                "pid": pg.pid,
                "url": pg.url,
                "port": pg.port,
                "version": _safe_pg_version(pg),
                "data_dir": str(pg.data_dir),
                "log": str(pg.log_path),
            },
        }

    def env(self) -> dict[str, str]:
        """``CRM_KAFKA_BOOTSTRAP`` and ``CRM_DATABASE_URL`` of this stack.

        Raises DevServiceError if the stack was never brought up (ports not chosen yet).
        """
        if not self.state_path.exists():
            raise DevServiceError(f"no dev stack in {self.home} yet: run `crm dev up` first")
        state = read_json(self.state_path)
        return {
            "CRM_KAFKA_BOOTSTRAP": state["kafka"]["bootstrap"],
            "CRM_DATABASE_URL": state["postgres"]["url"],
        }

    def _record(self) -> dict[str, Any]:
        status = {**self.status(), "configured": True}
        write_json(self.state_path, {**status, "recorded_at": time.time()})
        return status


def _safe_pg_version(pg: LocalPostgres) -> str | None:
    try:
        return pg.version
    except DevServiceError:
        return None


def _run_concurrently(tasks: dict[str, Callable[[], None]]) -> dict[str, BaseException]:
    """Run ``tasks`` in threads; return the exceptions raised, by task name."""
    if not tasks:
        return {}
    with ThreadPoolExecutor(max_workers=len(tasks), thread_name_prefix="devstack") as pool:
        futures = {name: pool.submit(task) for name, task in tasks.items()}
    errors: dict[str, BaseException] = {}
    for name, future in futures.items():
        exc = future.exception()
        if exc is not None:
            errors[name] = exc
    return errors
