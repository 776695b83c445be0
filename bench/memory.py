"""Peak memory of the processes under test (Linux ``VmHWM`` from /proc, summed over a
process and its children: `crm process` applies batches in a child process).

Processor: ``crm process`` starts on an empty fresh topic and schema; once it has its
partitions its peak RSS so far is the idle baseline. Then a population (N customers,
10 events each) is appended while it runs, and its peak RSS is read when the
projections have caught up. Done for N and 4N customers: the state lives in
PostgreSQL, so the ratio of the two peaks should be about 1.

API: ``crm api serve`` on the larger population; peak RSS after start-up and a first
request (baseline), then after an open-loop run of customer 360 reads (``bench.load``
in a subprocess).
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass

import sqlalchemy as sa

from bench import procs
from bench.core import BenchContext, Figure, peak_rss_tree_mib
from bench.read_api import EVENTS_PER_CUSTOMER, lean_load, wait_idle
from events.kafka import KafkaEventLog
from producers.synthetic import SyntheticTouchpoints

SECTION = "memory"
API_RATE = 500
API_RATE_QUICK = 500
GROWTH = 4


@dataclass(frozen=True)
class ProcessorRun:
    customers: int
    events: int
    idle_mib: float
    peak_mib: float
    seconds: float


def api_rate(ctx: BenchContext) -> int:
    return API_RATE_QUICK if ctx.quick else API_RATE


def populations(ctx: BenchContext) -> tuple[int, int]:
    small = max(250, ctx.sizes.customers // GROWTH)
    return small, small * GROWTH


def _rss(pid: int) -> float:
    value = peak_rss_tree_mib(pid)
    if value is None:
        raise RuntimeError(f"no /proc/{pid}/status: the process is gone")
    return value


def project_with_processor(ctx: BenchContext, t: procs.Target, customers_n: int) -> ProcessorRun:
    log = KafkaEventLog(ctx.kafka_bootstrap, t.topic)  # creates the topic
    engine = sa.create_engine(ctx.database_url, pool_size=1)
    processor = procs.start_processor(ctx, t)
    try:
        procs.wait_log(processor, "starting at checkpoints")
        time.sleep(0.5)
        idle = _rss(processor.pid)
        started = time.monotonic()
        generator = SyntheticTouchpoints(customers=customers_n, seed=31)
        events = customers_n * EVENTS_PER_CUSTOMER
        batch = []
        for event in generator.events(events):
            batch.append(event)
            if len(batch) == 2_000:
                log.append(batch)
                batch = []
        log.append(batch)
        procs.wait_caught_up(engine, t, log.end_offsets, proc=processor, timeout=3_600)
        seconds = time.monotonic() - started
        peak = _rss(processor.pid)
    finally:
        processor.stop()
        log.close()
        engine.dispose()
    return ProcessorRun(customers_n, events, idle, peak, seconds)


def api_under_load(ctx: BenchContext, t: procs.Target) -> tuple[float, float, str]:
    """(peak RSS after start-up, peak RSS after the load run, what the run achieved)."""
    engine = sa.create_engine(ctx.database_url, pool_size=1)
    try:
        with engine.connect() as conn:
            ids = [
                str(i)
                for (i,) in conn.execute(
                    sa.text(f'SELECT customer_id FROM "{t.schema}".customers WHERE event_count > 0')
                )
            ]
    finally:
        engine.dispose()
    paths = [f"/v1/customers/{i}" for i in random.Random(9).sample(ids, len(ids))]
    key, key_id = procs.create_key(t)
    port = procs.free_port()
    url = f"http://127.0.0.1:{port}"
    api = procs.start_api(ctx, t, port)
    try:
        procs.wait_http(api, f"{url}/healthz")
        lean_load(url, key, paths[:20], 10, 1)
        wait_idle(url)
        idle = _rss(api.pid)
        result, _ = lean_load(url, key, paths, api_rate(ctx), ctx.sizes.load_seconds)
        peak = _rss(api.pid)
    finally:
        api.stop()
        procs.revoke_key(t, key_id)
    return idle, peak, result.describe()


def run(ctx: BenchContext) -> list[Figure]:
    ctx.workdir.mkdir(parents=True, exist_ok=True)
    small_n, large_n = populations(ctx)
    small_t, large_t = procs.target(ctx, "memory_small"), procs.target(ctx, "memory_large")
    try:
        small = project_with_processor(ctx, small_t, small_n)
        procs.cleanup(ctx, small_t)
        ctx.log(
            f"memory: processor at {small_n:,} customers: idle {small.idle_mib:.0f} MiB, "
            f"peak {small.peak_mib:.0f} MiB ({small.events:,} events in {small.seconds:.0f}s)"
        )
        large = project_with_processor(ctx, large_t, large_n)
        ctx.log(
            f"memory: processor at {large_n:,} customers: idle {large.idle_mib:.0f} MiB, "
            f"peak {large.peak_mib:.0f} MiB ({large.events:,} events in {large.seconds:.0f}s)"
        )
        api_idle, api_peak, api_run = api_under_load(ctx, large_t)
        ctx.log(f"memory: API idle {api_idle:.0f} MiB, peak {api_peak:.0f} MiB under load")
    finally:
        procs.cleanup(ctx, small_t, large_t)

    def how(r: ProcessorRun) -> str:
        return (
            f"crm process (default --batch-size 10,000) projecting {r.events:,} events "
            f"({EVENTS_PER_CUSTOMER}/customer) appended while it ran, caught up in "
            f"{r.seconds:.0f}s ({r.events / r.seconds:.0f} ev/s incl. appending); "
            "VmHWM of the worker and its projector process, summed"
        )

    return [
        Figure(
            SECTION,
            f"processor peak RSS at {small_n:,} customers",
            small.peak_mib,
            "MiB",
            small.idle_mib,
            "the same processor's peak RSS when idle (partitions assigned, no events)",
            None,
            how(small),
        ),
        Figure(
            SECTION,
            f"processor peak RSS at {large_n:,} customers",
            large.peak_mib,
            "MiB",
            small.peak_mib,
            f"processor peak RSS at {small_n:,} customers",
            "ratio ≈ 1 (memory must not grow with customers)",
            how(large) + f"; idle it was {large.idle_mib:.0f} MiB",
        ),
        Figure(
            SECTION,
            f"API peak RSS under {api_rate(ctx)} req/s of customer 360",
            api_peak,
            "MiB",
            api_idle,
            "the same API's peak RSS after start-up and a first request",
            None,
            f"crm api serve on {large_n:,} customers; load: {api_run}",
        ),
    ]
