"""The read API under open-loop load: the customer 360 and a segment member page.

A population (``SyntheticTouchpoints``, ``ctx.sizes.customers`` customers, 10 events
each) is appended to a fresh topic and projected in this process (``catch_up`` until
settled) into a fresh schema; a "buyers" segment is defined and evaluated so member
pages exist. ``crm api serve`` then runs as a subprocess, and ``python -m bench.load``
(another subprocess, open loop: latency from each request's scheduled send time) asks
it at fixed rates for ``/v1/customers/{id}`` (random live ids) and
``/v1/segments/buyers/members?limit=50``.

Baseline: the same statements the API's store issues for that read (checkpoints, then
the rows), as raw SQL through psycopg2 on one autocommit connection, paced at the same
rate from a separate process and timed the same way (from the scheduled time). That is
what the database alone costs; the difference is HTTP, FastAPI, auth, pydantic and
SQLAlchemy.
"""

from __future__ import annotations

import asyncio
import json
import multiprocessing as mp
import os
import random
import resource
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import httpx
import psycopg2
import sqlalchemy as sa

from bench import procs
from bench.core import BenchContext, Figure, descendants
from bench.load import percentile
from crm.bootstrap import build_event_log, build_projection_store
from events.gcpause import freeze_heap
from producers.synthetic import SyntheticTouchpoints
from projections import planning

SECTION = "read_api"
EVENTS_PER_CUSTOMER = 10
SEGMENT = "buyers"
PAGE = 50
TARGET_RATE = 500
CONNECTIONS = 64
HTTPX_SECONDS = 3.0
HTTPX_GRACE_S = 90.0

SQL_360 = (
    ("SELECT partition, next_offset FROM checkpoints WHERE topic = %(topic)s", False),
    ("SELECT * FROM customers WHERE customer_id = %(id)s", False),
    (
        "SELECT node, shared FROM identity_nodes WHERE customer_id = %(id)s ORDER BY node",
        False,
    ),
)
SQL_MEMBERS = (
    ("SELECT partition, next_offset FROM checkpoints WHERE topic = %(topic)s", False),
    ("SELECT max(version) FROM segment_definitions WHERE segment_id = %(segment)s", True),
    (
        "SELECT cs.customer_id, cs.since, c.display_name, c.rfm_segment, c.value_tier "
        "FROM customer_segments cs JOIN customers c ON c.customer_id = cs.customer_id "
        "WHERE cs.segment_id = %(segment)s AND cs.version = %(version)s AND cs.member "
        "ORDER BY cs.customer_id LIMIT %(limit)s",
        False,
    ),
)


@dataclass(frozen=True)
class Result:
    rate: float
    sent: int
    ok: int
    errors: int
    achieved_rate: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float

    def describe(self) -> str:
        return (
            f"{self.ok}/{self.sent} ok ({self.errors} errors) at {self.achieved_rate:.0f}/s "
            f"achieved; p50 {self.p50_ms:.1f} ms, p90 {self.p90_ms:.1f} ms, "
            f"p99 {self.p99_ms:.1f} ms, max {self.max_ms:.1f} ms"
        )


def rates(ctx: BenchContext, case: str) -> tuple[int, ...]:
    if case == "/healthz":
        return (TARGET_RATE,)
    if ctx.quick:
        return (100, TARGET_RATE) if case == "customer 360" else (TARGET_RATE,)
    return (100, 250, TARGET_RATE)


# -- the population -------------------------------------------------------------------


def load_population(t: procs.Target, customers_n: int, *, segment: bool = True) -> list[str]:
    """Append and project a population into ``t``; returns the live customer ids."""
    settings = t.settings()
    event_log = build_event_log(settings)
    store = build_projection_store(settings, event_log)
    try:
        generator = SyntheticTouchpoints(customers=customers_n, seed=21)
        batch: list[Any] = []
        for event in generator.events(customers_n * EVENTS_PER_CUSTOMER):
            batch.append(event)
            if len(batch) == 2_000:
                event_log.append(batch)
                batch = []
        event_log.append(batch)
        planning.settle(event_log, store)
        if segment:
            now = datetime.now(UTC)
            planning.define_segment(
                event_log,
                store,
                segment_id=SEGMENT,
                name="Buyers",
                rule={"field": "order_count", "op": "ge", "value": 1},
                now=now,
            )
            planning.settle(event_log, store)
            planning.evaluate_segments(event_log, store, now=now)
            planning.settle(event_log, store)
        with store.engine.connect() as conn:
            ids = conn.execute(
                sa.text(
                    f'SELECT customer_id FROM "{t.schema}".customers WHERE event_count > 0 '
                    "ORDER BY customer_id"
                )
            )
            return [str(i) for (i,) in ids]
    finally:
        store.engine.dispose()
        event_log.close()


# -- the load: bench.load in a subprocess ---------------------------------------------


def cpu_seconds(pid: int) -> float:
    """User + system CPU time a process and its live descendants (uvicorn's worker
    processes) have used so far."""
    total = 0
    for each in [pid, *descendants(pid)]:
        try:
            fields = Path(f"/proc/{each}/stat").read_text().rpartition(")")[2].split()
        except OSError:
            continue  # gone meanwhile
        total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


def wait_idle(url: str, timeout: float = 180.0) -> None:
    """Until the API answers /healthz quickly three times running (an overloaded run can
    leave queued requests behind that would spill into the next run)."""
    deadline = time.monotonic() + timeout
    fast = 0
    with httpx.Client(base_url=url, timeout=30) as client:
        while fast < 3 and time.monotonic() < deadline:
            started = time.perf_counter()
            try:
                client.get("/healthz")
            except httpx.HTTPError:
                fast = 0
                time.sleep(0.5)
                continue
            fast = fast + 1 if time.perf_counter() - started < 0.05 else 0
            time.sleep(0.2)


def http_load(url: str, key: str, path: str, ids_file: Path, rate: float, seconds: float) -> Result:
    completed = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench.load",
            "--url",
            url,
            "--path",
            path,
            "--ids",
            str(ids_file),
            "--rate",
            str(rate),
            "--seconds",
            str(seconds),
        ],
        env={**os.environ, "CRM_BENCH_KEY": key},
        cwd=procs.ROOT,
        capture_output=True,
        text=True,
        timeout=seconds + HTTPX_GRACE_S,
        check=False,
    )
    if completed.returncode != 0:
        raise RuntimeError(f"bench.load failed: {completed.stderr[-2000:]}")
    data = json.loads(completed.stdout.strip().splitlines()[-1])
    return Result(**{f: data[f] for f in Result.__dataclass_fields__})


# -- a lean open-loop generator: keep-alive HTTP/1.1 on raw asyncio streams ------------


def _result(rate: float, total: int, latencies: list[float], errors: int, elapsed: float) -> Result:
    return Result(
        rate=rate,
        sent=total,
        ok=len(latencies),
        errors=errors,
        achieved_rate=len(latencies) / elapsed if elapsed > 0 else 0.0,
        p50_ms=statistics.median(latencies) if latencies else float("nan"),
        p90_ms=percentile(latencies, 0.90),
        p99_ms=percentile(latencies, 0.99),
        max_ms=max(latencies, default=float("nan")),
    )


async def read_response(reader: asyncio.StreamReader) -> int:
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ", 2)[1])
    length = None
    for line in lines[1:]:
        name, _, value = line.partition(":")
        if name.strip().lower() == "content-length":
            length = int(value.strip())
    if length is None:
        raise ValueError("a response without Content-Length")
    await reader.readexactly(length)
    return status


async def _lean(
    url: str, key: str, paths: list[str], rate: float, seconds: float, connections: int
) -> Result:
    """Requests are queued on a fixed schedule; ``connections`` keep-alive connections
    take them in order; latency runs from the scheduled time (no coordinated omission:
    a request waiting for a free connection is waiting on the server)."""
    parsed = urlparse(url)
    host, port = parsed.hostname or "127.0.0.1", parsed.port or 80
    if host not in {"127.0.0.1", "localhost", "::1"}:
        raise ValueError("load tests send traffic to loopback only")
    total = int(rate * seconds)
    todo: asyncio.Queue[tuple[int, bytes] | None] = asyncio.Queue()
    latencies: list[float] = []
    errors = 0
    start = time.perf_counter() + 0.3

    def request(path: str) -> bytes:
        return (
            f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\n"
            f"Authorization: Bearer {key}\r\nAccept: application/json\r\n\r\n"
        ).encode()

    requests = [request(p) for p in paths]

    async def connection() -> None:
        nonlocal errors
        reader, writer = await asyncio.open_connection(host, port)
        while (item := await todo.get()) is not None:
            i, raw = item
            try:
                writer.write(raw)
                status = await read_response(reader)
            except (OSError, ValueError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
                status = 0
                writer.close()
                reader, writer = await asyncio.open_connection(host, port)
            if status == 200:
                latencies.append((time.perf_counter() - (start + i / rate)) * 1e3)
            else:
                errors += 1
        writer.close()

    workers = [asyncio.create_task(connection()) for _ in range(connections)]
    for i in range(total):
        delay = start + i / rate - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        todo.put_nowait((i, requests[i % len(requests)]))
    for _ in workers:
        todo.put_nowait(None)
    await asyncio.gather(*workers)
    return _result(rate, total, latencies, errors, time.perf_counter() - start)


def _lean_main(
    url: str,
    key: str,
    paths: list[str],
    rate: float,
    seconds: float,
    connections: int,
    results: Any,
) -> None:
    freeze_heap()  # its own full collections would be timed as latency
    result = asyncio.run(_lean(url, key, paths, rate, seconds, connections))
    usage = resource.getrusage(resource.RUSAGE_SELF)
    results.put((result, usage.ru_utime + usage.ru_stime))


def lean_load(
    url: str,
    key: str,
    paths: list[str],
    rate: float,
    seconds: float,
    connections: int = CONNECTIONS,
) -> tuple[Result, float]:
    """(result, CPU seconds the generator used), from a separate process."""
    spawn = mp.get_context("spawn")
    results = spawn.Queue()
    worker = spawn.Process(
        target=_lean_main, args=(url, key, paths, rate, seconds, connections, results)
    )
    worker.start()
    try:
        out: tuple[Result, float] = results.get(timeout=seconds + 300)
    finally:
        worker.join(30)
        if worker.is_alive():
            worker.terminate()
    return out


# -- the baseline: raw SQL in a separate process --------------------------------------


def _dsn(database_url: str) -> str:
    url = sa.engine.make_url(database_url).set(drivername="postgresql")
    return url.render_as_string(hide_password=False)


def _raw_sql_main(
    dsn: str,
    schema: str,
    statements: tuple[tuple[str, bool], ...],
    params: list[dict[str, Any]],
    rate: float,
    seconds: float,
    results: Any,
) -> None:
    freeze_heap()  # its own full collections would be timed as latency
    conn = psycopg2.connect(dsn)
    conn.autocommit = True
    latencies: list[float] = []
    errors = 0
    total = int(rate * seconds)
    with conn.cursor() as cur:
        cur.execute(f'SET search_path TO "{schema}"')
        start = time.perf_counter() + 0.2
        for i in range(total):
            scheduled = start + i / rate
            delay = scheduled - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            args = dict(params[i % len(params)])
            try:
                for sql, sets_version in statements:
                    cur.execute(sql, args)
                    rows = cur.fetchall()
                    if sets_version:
                        args["version"] = rows[0][0]
            except psycopg2.Error:
                errors += 1
                continue
            latencies.append((time.perf_counter() - scheduled) * 1e3)
        elapsed = time.perf_counter() - start
    conn.close()
    results.put(_result(rate, total, latencies, errors, elapsed))


def raw_sql_load(
    ctx: BenchContext,
    t: procs.Target,
    statements: tuple[tuple[str, bool], ...],
    params: list[dict[str, Any]],
    rate: float,
    seconds: float,
) -> Result:
    spawn = mp.get_context("spawn")
    results = spawn.Queue()
    worker = spawn.Process(
        target=_raw_sql_main,
        args=(_dsn(ctx.database_url), t.schema, statements, params, rate, seconds, results),
    )
    worker.start()
    try:
        result: Result = results.get(timeout=seconds + 120)
    finally:
        worker.join(30)
        if worker.is_alive():
            worker.terminate()
    return result


# -- the section ----------------------------------------------------------------------


@dataclass(frozen=True)
class Run:
    case: str
    api: Result
    raw: Result
    api_cpu_ms: float  # the API's CPU per answered request
    client_cpu_ms: float  # the load generator's CPU per request sent


def run(ctx: BenchContext) -> list[Figure]:
    ctx.workdir.mkdir(parents=True, exist_ok=True)
    seconds = ctx.sizes.load_seconds
    t = procs.target(ctx, "read_api")
    api: procs.Proc | None = None
    key_id = None
    runs: list[Run] = []
    workers_run: Run | None = None
    skipped: list[str] = []
    try:
        started = time.monotonic()
        ids = load_population(t, ctx.sizes.customers)
        ctx.log(
            f"read_api: {len(ids)} live customers projected in {time.monotonic() - started:.0f}s"
        )
        shuffled = random.Random(5).sample(ids, len(ids))
        ids_file = ctx.workdir / f"{t.schema}_ids.txt"
        ids_file.write_text("\n".join(shuffled) + "\n")
        key, key_id = procs.create_key(t)
        port = procs.free_port()
        url = f"http://127.0.0.1:{port}"
        api = procs.start_api(ctx, t, port)
        procs.wait_http(api, f"{url}/healthz")
        members = f"/v1/segments/{SEGMENT}/members?limit={PAGE}"
        Case = tuple[str, list[str], tuple[tuple[str, bool], ...], list[dict[str, Any]]]
        cases: tuple[Case, ...] = (
            (
                "customer 360",
                [f"/v1/customers/{i}" for i in shuffled],
                SQL_360,
                [{"topic": t.topic, "id": i} for i in shuffled],
            ),
            (
                "segment members page",
                [members],
                SQL_MEMBERS,
                [{"topic": t.topic, "segment": SEGMENT, "limit": PAGE + 1}],
            ),
            ("/healthz", ["/healthz"], (), []),
        )
        lean_load(url, key, [f"/v1/customers/{i}" for i in shuffled[:200]], 50, 1)  # warm up

        def measure(case: str, paths: list[str], rate: int) -> tuple[Result, float, float]:
            assert api is not None
            api.check()
            wait_idle(url)
            before = cpu_seconds(api.pid)
            result, client_cpu = lean_load(url, key, paths, rate, seconds)
            api_cpu = (cpu_seconds(api.pid) - before) * 1e3 / max(1, result.ok)
            ctx.log(f"read_api: {case} at {rate}/s: API {result.describe()}")
            return result, api_cpu, client_cpu * 1e3 / max(1, result.sent)

        for case, paths, statements, params in cases:
            saturated_at: int | None = None
            for rate in rates(ctx, case):
                if saturated_at is not None and not (
                    case == "customer 360" and rate == TARGET_RATE
                ):
                    skipped.append(f"{case} at {rate} req/s (saturated at {saturated_at})")
                    continue
                result, api_cpu, client_cpu = measure(case, paths, rate)
                if statements:
                    raw = raw_sql_load(ctx, t, statements, params, rate, seconds)
                    ctx.log(f"read_api: {case} at {rate}/s: raw SQL {raw.describe()}")
                else:
                    raw = result
                runs.append(Run(case, result, raw, api_cpu, client_cpu))
                if result.achieved_rate < 0.9 * rate or result.errors > 0.01 * result.sent:
                    saturated_at = saturated_at or rate
        # The same target through bench.load (httpx), briefly: what that generator drives.
        via_httpx: Result | str | None = None
        if not ctx.quick:
            wait_idle(url)
            try:
                via_httpx = http_load(
                    url, key, "/v1/customers/{id}", ids_file, TARGET_RATE, HTTPX_SECONDS
                )
            except (subprocess.TimeoutExpired, RuntimeError) as exc:
                via_httpx = f"bench.load did not finish: {type(exc).__name__}"
            ctx.log(f"read_api: 360 at {TARGET_RATE}/s via bench.load: {via_httpx}")
        # The target again as deployed for it: one worker process per core.
        api.stop()
        api = procs.start_api(ctx, t, port, workers=procs.WORKERS)
        procs.wait_listening(api, port, procs.WORKERS)
        lean_load(url, key, [f"/v1/customers/{i}" for i in shuffled[:400]], 100, 2)  # warm up
        result, api_cpu, client_cpu = measure(
            f"customer 360, {procs.WORKERS} workers", cases[0][1], TARGET_RATE
        )
        baseline = next(
            r.raw for r in runs if r.case == "customer 360" and r.api.rate == TARGET_RATE
        )
        workers_run = Run(
            f"customer 360, {procs.WORKERS} workers", result, baseline, api_cpu, client_cpu
        )
    finally:
        if api is not None:
            api.stop()
        if key_id is not None:
            procs.revoke_key(t, key_id)
        procs.cleanup(ctx, t)

    how = (
        f"{ctx.sizes.customers:,} customers; open loop for {seconds:.0f}s from a separate "
        f"process ({CONNECTIONS} keep-alive HTTP/1.1 connections on raw asyncio; latency from "
        f"the scheduled send time, so waiting for a connection counts)"
    )
    figures: list[Figure] = []
    for r in runs + ([workers_run] if workers_run else []):
        rate = int(r.api.rate)
        processes = (
            f"{procs.WORKERS} uvicorn worker processes"
            if r is workers_run
            else "one uvicorn process"
        )
        notes = (
            f"API: {r.api.describe()}; API CPU {r.api_cpu_ms:.2f} ms per answered request, "
            f"load generator CPU {r.client_cpu_ms:.2f} ms per request. {how}; {processes}"
        )
        if r.case == "/healthz":
            notes = "the floor (no auth, no database): " + notes
            figures.append(
                Figure(SECTION, f"/healthz p99 at {rate} req/s", r.api.p99_ms, "ms", notes=notes)
            )
            continue
        notes += (
            f". Baseline: the store's statements for this read as raw SQL (psycopg2, one "
            f"autocommit connection, paced at the same rate, separate process): {r.raw.describe()}"
        )
        if skipped:
            notes += f". Not run (the API was already saturated): {'; '.join(skipped)}"
        base_name = f"raw SQL of the same read at {rate} req/s"
        target = "360 p99 ≤ 20 ms at 500 req/s" if r is workers_run else None
        figures += [
            Figure(
                SECTION,
                f"{r.case} p50 at {rate} req/s",
                r.api.p50_ms,
                "ms",
                r.raw.p50_ms,
                base_name,
                None,
                notes,
            ),
            Figure(
                SECTION,
                f"{r.case} p99 at {rate} req/s",
                r.api.p99_ms,
                "ms",
                r.raw.p99_ms,
                base_name,
                target,
                notes,
            ),
            Figure(
                SECTION,
                f"{r.case} achieved rate at {rate} req/s",
                r.api.achieved_rate,
                "req/s",
                float(rate),
                "rate offered",
                None,
                f"{r.api.ok} answered 200 of {r.api.sent} sent, {r.api.errors} errors",
            ),
        ]
    if isinstance(via_httpx, Result):
        figures.append(
            Figure(
                SECTION,
                f"customer 360 achieved rate at {TARGET_RATE} req/s via bench.load (httpx)",
                via_httpx.achieved_rate,
                "req/s",
                float(TARGET_RATE),
                "rate offered",
                None,
                f"the same target driven by bench/load.py for {HTTPX_SECONDS:.0f}s: "
                f"{via_httpx.describe()}. Its httpx client uses about a CPU core by itself "
                "well below this rate on this machine, so its latencies measure the "
                "generator; the figures above use the lean generator",
            )
        )
    elif isinstance(via_httpx, str) and figures:
        last = figures[-1]
        figures[-1] = Figure(**{**last.__dict__, "notes": f"{last.notes}. {via_httpx}"})
    return figures
