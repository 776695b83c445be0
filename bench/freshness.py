"""Freshness: how long after an append an event is visible through the read API.

``crm process`` and ``crm api serve`` run as subprocesses on a fresh topic and schema.
This process publishes pre-generated, pre-encoded events with ``KafkaEventLog`` at a
steady rate (1,000 then 5,000 events/s), a small batch every 10 ms on an open-loop
schedule. About 20 published events a second are sampled: a separate poller process
asks the read API for each one with ``min_position=P:O+1&wait_ms=5000`` and records
publish -> visible, from the moment ``append`` was called (so the producer's
acknowledgement is included) to the moment an answer reports ``caught_up``. Any answer
also resolves every other pending sample its ``freshness.positions`` cover, and a
20 Hz probe does the same while samples wait, so a backlog cannot hide behind the
poller's own concurrency limit.

Baseline: the same publisher at the same rate onto a raw topic, and a raw
``KafkaConsumer`` in another process; publish -> the consumer's ``poll`` returns it.
"""

from __future__ import annotations

import asyncio
import math
import multiprocessing as mp
import queue
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import sqlalchemy as sa

from bench import procs
from bench.core import BenchContext, Figure
from bench.load import percentile
from events.codec import to_record
from events.kafka import KafkaEventLog
from events.log import OutgoingRecord
from producers.synthetic import SyntheticTouchpoints

SECTION = "freshness"
RATES = (1_000, 5_000)
TICK_S = 0.01
SAMPLES_PER_S = 20
WAIT_MS = 5_000
POLLERS = 16
WARMUP = 100

SETTLE_S = 5.0  # the p99 "after the first seconds" of a phase leaves this much out

# (tag, t0 monotonic, partition, offset) | None to finish
Sample = tuple[str, float, int, int]
# (tag, seconds from append to visible or None if not within the cap, t0 monotonic)
Measured = tuple[str, float | None, float]


@dataclass
class PhaseStats:
    rate: int
    seconds: float
    started: float  # monotonic
    sent: int
    achieved_rate: float
    max_behind_s: float  # how far the publisher fell behind its schedule


def _sample_every(rate: int) -> int:
    return max(1, rate // SAMPLES_PER_S)


def publish(
    log: KafkaEventLog,
    records: Sequence[OutgoingRecord],
    rate: int,
    seconds: float,
    tag: str,
    samples: Any,
) -> PhaseStats:
    """Append ``rate * seconds`` records on a fixed schedule, a batch per ``TICK_S``.

    Once per tick, not whenever the next record is due: a call per record (every 1 ms at
    1,000 events/s) cost the publisher half a core, taken from the processes measured."""
    total = min(len(records), int(rate * seconds))
    every = _sample_every(rate)
    start = time.monotonic()
    sent, behind, tick = 0, 0.0, start
    while sent < total:
        now = time.monotonic()
        if now < tick:
            time.sleep(tick - now)
            continue
        # how late the first record not yet sent is, against the tick it was due by
        behind = max(behind, now - (start + math.ceil(sent / rate / TICK_S) * TICK_S))
        due = min(total, int((now - start) * rate) + 1)
        due = min(due, sent + max(1, int(rate * TICK_S * 20)))  # cap one batch at 200 ms
        positions = log.append_records(records[sent:due])
        for i, pos in enumerate(positions, start=sent):
            if i % every == 0:
                samples.put((tag, now, pos.partition, pos.offset))
        sent = due
        tick = start + (math.floor((time.monotonic() - start) / TICK_S) + 1) * TICK_S
    elapsed = time.monotonic() - start
    return PhaseStats(rate, seconds, start, sent, sent / elapsed if elapsed else 0.0, behind)


# -- the poller: a separate process asking the read API -------------------------------


def _poller_main(url: str, key: str, samples: Any, results: Any, ready: Any, cap_s: float) -> None:
    results.put(asyncio.run(_poll(url, key, samples, ready, cap_s)))


async def _poll(url: str, key: str, samples: Any, ready: Any, cap_s: float) -> list[Measured]:
    """Per sample: (tag, seconds from append to visible or None if not within cap_s, t0).

    Sets ``ready`` once it has had an answer from the API: a sample published before
    then would time the poller's own start-up (imports, connections), not the pipeline."""
    pending: dict[int, Sample] = {}
    out: list[Measured] = []
    todo: asyncio.Queue[int] = asyncio.Queue()
    done_reading = asyncio.Event()
    loop = asyncio.get_running_loop()

    def resolve(positions: Mapping[str, int], now: float) -> None:
        for sid, (tag, t0, p, o) in list(pending.items()):
            if positions.get(str(p), 0) >= o + 1:
                out.append((tag, now - t0, t0))
                del pending[sid]
            elif now - t0 > cap_s:
                out.append((tag, None, t0))
                del pending[sid]

    async def reader() -> None:
        sid = 0
        while True:
            item = await loop.run_in_executor(None, samples.get)
            if item is None:
                done_reading.set()
                return
            pending[sid] = item
            todo.put_nowait(sid)
            sid += 1

    async def ask(client: httpx.AsyncClient, params: dict[str, Any]) -> None:
        try:
            response = await client.get("/v1/customers", params=params)
        except httpx.HTTPError:
            return
        if response.status_code == 200:
            resolve(response.json()["freshness"]["positions"], time.monotonic())

    async def worker(client: httpx.AsyncClient) -> None:
        while True:
            sid = await todo.get()
            if sid not in pending:
                continue
            _, _, p, o = pending[sid]
            await ask(client, {"limit": 1, "min_position": f"{p}:{o + 1}", "wait_ms": WAIT_MS})
            if sid in pending:
                todo.put_nowait(sid)

    async def probe(client: httpx.AsyncClient) -> None:
        while True:
            await asyncio.sleep(0.05)
            if pending:
                await ask(client, {"limit": 1})

    async with httpx.AsyncClient(
        base_url=url, headers={"Authorization": f"Bearer {key}"}, timeout=WAIT_MS / 1000 + 30
    ) as client:
        (await client.get("/v1/customers", params={"limit": 1})).raise_for_status()
        ready.set()
        tasks = [asyncio.create_task(worker(client)) for _ in range(POLLERS)]
        tasks.append(asyncio.create_task(probe(client)))
        await reader()
        while pending:
            await asyncio.sleep(0.05)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    return out


# -- the baseline: a raw consumer in a separate process -------------------------------


def _consumer_main(bootstrap: str, topic: str, ready: Any, stop: Any, results: Any) -> None:
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False)
    parts = consumer.partitions_for_topic(topic) or set()
    tps = [TopicPartition(topic, p) for p in parts]
    consumer.assign(tps)
    consumer.seek_to_end(*tps)
    for tp in tps:
        consumer.position(tp)
    seen: dict[tuple[int, int], float] = {}
    ready.set()
    idle_since: float | None = None
    while True:
        batches = consumer.poll(timeout_ms=100)
        now = time.monotonic()
        for tp, messages in batches.items():
            for m in messages:
                seen[(tp.partition, m.offset)] = now
        if stop.is_set():
            idle_since = idle_since or now
            if batches:
                idle_since = now
            if now - idle_since > 1.0:
                break
    consumer.close()
    results.put(seen)


def _raw_kafka(
    ctx: BenchContext, records: Sequence[OutgoingRecord], topic: str
) -> dict[int, list[float]]:
    """Publish -> raw consumer latencies (ms) of the sampled records, per rate."""
    spawn = mp.get_context("spawn")
    log = KafkaEventLog(ctx.kafka_bootstrap, topic)
    ready, stop, results = spawn.Event(), spawn.Event(), spawn.Queue()
    consumer = spawn.Process(
        target=_consumer_main, args=(ctx.kafka_bootstrap, topic, ready, stop, results)
    )
    consumer.start()
    samples: queue.Queue[Sample] = queue.Queue()
    try:
        log.append_records(records[:WARMUP])
        if not ready.wait(60):
            raise TimeoutError("the raw consumer did not start")
        offset = WARMUP
        for rate in RATES:
            stats = publish(
                log, records[offset:], rate, ctx.sizes.freshness_seconds, str(rate), samples
            )
            offset += stats.sent
        stop.set()
        seen: dict[tuple[int, int], float] = results.get(timeout=120)
    finally:
        stop.set()
        consumer.join(30)
        if consumer.is_alive():
            consumer.terminate()
        log.close()
    out: dict[int, list[float]] = {rate: [] for rate in RATES}
    while not samples.empty():
        tag, t0, p, o = samples.get()
        if (p, o) in seen:
            out[int(tag)].append((seen[(p, o)] - t0) * 1e3)
    return out


# -- the section ----------------------------------------------------------------------


def _records(ctx: BenchContext) -> list[OutgoingRecord]:
    total = WARMUP + int(sum(RATES) * ctx.sizes.freshness_seconds) + 1_000
    generator = SyntheticTouchpoints(customers=ctx.sizes.customers, seed=11)
    return [to_record(event) for event in generator.events(total)]


def _wait_visible(url: str, key: str, partition_offsets: Mapping[int, int], timeout: float) -> None:
    wanted = ",".join(f"{p}:{o}" for p, o in sorted(partition_offsets.items()))
    deadline = time.monotonic() + timeout
    with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {key}"}) as client:
        while time.monotonic() < deadline:
            response = client.get(
                "/v1/customers",
                params={"limit": 1, "min_position": wanted, "wait_ms": WAIT_MS},
                timeout=30,
            )
            if response.status_code == 200 and response.json()["freshness"]["caught_up"]:
                return
    raise TimeoutError(f"the warm-up events were not visible within {timeout:.0f}s")


def _stats(values: Sequence[float]) -> tuple[float, float, float]:
    if not values:
        return float("nan"), float("nan"), float("nan")
    return percentile(list(values), 0.5), percentile(list(values), 0.99), max(values)


def run(ctx: BenchContext) -> list[Figure]:
    ctx.workdir.mkdir(parents=True, exist_ok=True)
    seconds = ctx.sizes.freshness_seconds
    records = _records(ctx)
    raw_topic = ctx.name("freshness_raw")
    ctx.log(f"freshness: baseline, raw Kafka at {RATES} ev/s for {seconds:.0f}s each")
    baseline = _raw_kafka(ctx, records, raw_topic)

    t = procs.target(ctx, "freshness")
    log = KafkaEventLog(ctx.kafka_bootstrap, t.topic)
    engine = sa.create_engine(ctx.database_url, pool_size=1)
    port = procs.free_port()
    url = f"http://127.0.0.1:{port}"
    processor = procs.start_processor(ctx, t)
    api = procs.start_api(ctx, t, port)
    key_id = None
    spawn = mp.get_context("spawn")
    poller = None
    cap_s = 10.0 if ctx.quick else max(60.0, 4 * seconds)
    phases: list[PhaseStats] = []
    lags: dict[int, dict[str, float]] = {}
    try:
        key, key_id = procs.create_key(t)
        procs.wait_http(api, f"{url}/healthz")
        procs.wait_log(processor, "starting at checkpoints")  # its tables exist by then
        warm = log.append_records(records[:WARMUP])
        ends: dict[int, int] = {}
        for pos in warm:
            ends[pos.partition] = max(ends.get(pos.partition, 0), pos.offset + 1)
        started = time.monotonic()
        _wait_visible(url, key, ends, timeout=120)
        ctx.log(f"freshness: processor ready ({time.monotonic() - started:.1f}s to warm up)")
        procs.wait_caught_up(engine, t, log.end_offsets, proc=processor, timeout=120)

        samples, results = spawn.Queue(), spawn.Queue()
        ready = spawn.Event()
        poller = spawn.Process(target=_poller_main, args=(url, key, samples, results, ready, cap_s))
        poller.start()
        if not ready.wait(timeout=120):
            raise TimeoutError("the poller process had no answer from the read API in 120 s")
        offset = WARMUP
        for rate in RATES:
            ctx.log(f"freshness: publishing {rate} ev/s for {seconds:.0f}s")
            before = sum(procs.checkpoints(engine, t).values())
            stats = publish(log, records[offset:], rate, seconds, str(rate), samples)
            offset += stats.sent
            phases.append(stats)
            ends = log.end_offsets()
            positions = procs.checkpoints(engine, t)
            behind = procs.lag(ends, positions)
            applied = sum(positions.values()) - before
            drain_start = time.monotonic()
            try:
                procs.wait_caught_up(
                    engine, t, log.end_offsets, proc=processor, timeout=cap_s, settle_s=0.2
                )
                drain = time.monotonic() - drain_start
            except TimeoutError:
                drain = float("nan")
            lags[rate] = {
                "lag_at_end": behind,
                "processor_rate": applied / seconds,
                "drain_s": drain,
            }
            ctx.log(
                f"freshness: {rate} ev/s: published {stats.achieved_rate:.0f} ev/s, "
                f"processor applied {applied / seconds:.0f} ev/s, lag {behind} at the end, "
                f"drained in {drain:.1f}s"
            )
        samples.put(None)
        measured: list[Measured] = results.get(timeout=cap_s + 60)
    finally:
        if poller is not None:
            poller.join(10)
            if poller.is_alive():
                poller.terminate()
        api.stop()
        processor.stop()
        if key_id is not None:
            procs.revoke_key(t, key_id)
        log.close()
        engine.dispose()
        procs.cleanup(ctx, t, extra_topics=(raw_topic,))

    series = {
        stats.rate: sorted(
            (t0 - stats.started, s * 1e3)
            for tag, s, t0 in measured
            if tag == str(stats.rate) and s is not None
        )
        for stats in phases
    }
    chart = ctx.out / "freshness.png" if ctx.out is not None else None
    if chart is not None:
        try:
            drawn = _draw_over_time(series, chart)
        except Exception as exc:  # a chart must not cost the figures
            ctx.log(f"freshness chart failed: {type(exc).__name__}: {exc}")
            drawn = False
        chart = chart if drawn else None
    figures: list[Figure] = []
    for stats in phases:
        rate = stats.rate
        mine = [ms for _, ms in series[rate]]
        missing = sum(1 for tag, s, _ in measured if tag == str(rate) and s is None)
        p50, p99, worst = _stats(mine)
        settled = _stats([ms for at, ms in series[rate] if at >= SETTLE_S])[1]
        b50, b99, bmax = _stats(baseline[rate])
        info = lags[rate]
        notes = (
            f"{len(mine)} sampled events (~{SAMPLES_PER_S}/s) polled through the read API "
            f"(min_position, wait_ms={WAIT_MS}; the API re-reads checkpoints when a "
            "batch's commit notifies it); "
            f"publisher achieved {stats.achieved_rate:.0f} ev/s (fell behind its schedule by "
            f"at most {stats.max_behind_s * 1e3:.0f} ms); processor applied "
            f"{info['processor_rate']:.0f} ev/s during the phase, lag at the end "
            f"{info['lag_at_end']:.0f} events, drained in {info['drain_s']:.1f}s"
        )
        if not math.isnan(settled):
            notes += f"; p99 after the phase's first {SETTLE_S:.0f} s: {settled:,.0f} ms"
        if chart is not None:
            notes += f"; latency over time: {chart.name}"
        if missing:
            notes += f"; {missing} samples not visible within {cap_s:.0f}s (left out)"
        if info["lag_at_end"] > rate * 2:
            notes += (
                "; the processor did NOT keep up at this rate (over 2 s of events behind when "
                "publishing stopped): latency grows with the phase length, so these "
                "percentiles measure the backlog, not a steady state"
            )
        base = f"raw Kafka produce -> KafkaConsumer at {rate:,} ev/s"
        label = f"at {rate:,} ev/s"
        figures += [
            Figure(SECTION, f"publish->visible p50 {label}", p50, "ms", b50, base, None, notes),
            Figure(
                SECTION,
                f"publish->visible p99 {label}",
                p99,
                "ms",
                b99,
                base,
                "p99 ≤ 250 ms at 1,000 ev/s" if rate == 1_000 else None,
                notes,
            ),
            Figure(SECTION, f"publish->visible max {label}", worst, "ms", bmax, base, None, notes),
            Figure(
                SECTION,
                f"processor throughput offered {label}",
                info["processor_rate"],
                "events/s",
                stats.achieved_rate,
                "rate published",
                None,
                "events applied (checkpoint advance) during the phase / phase length; "
                "ratio < 1 means a growing backlog",
            ),
        ]
    return figures


def _draw_over_time(series: Mapping[int, Sequence[tuple[float, float]]], path: Path) -> bool:
    """Publish -> visible of every sample against its time in the phase, one panel per
    rate: a start-up transient, a steady tail and a growing backlog look different."""
    if not any(series.values()):
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(series), figsize=(5.5 * len(series), 3.6), squeeze=False)
    for ax, (rate, points) in zip(axes[0], series.items(), strict=True):
        ax.scatter([t for t, _ in points], [ms for _, ms in points], s=4, color="#2b6cb0")
        ax.set_title(f"publish -> visible at {rate:,} ev/s", fontsize=9)
        ax.set_xlabel("seconds into the phase (publish time)", fontsize=8)
        ax.set_ylabel("ms", fontsize=8)
        ax.set_yscale("log")
        ax.grid(True, which="both", alpha=0.3)
        ax.tick_params(labelsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True
