"""Ingest throughput: how fast events get into Kafka through each of LoopCRM's doors.

Baseline: a bare kafka-python ``KafkaProducer`` with the settings of
:class:`events.kafka.KafkaEventLog`'s producer (``acks=all``, idempotence, batch and
request sizes; linger 5 ms, as kafka-python needs to batch) sending the same events,
pre-serialised, then one ``flush``; measured before and after the others, the better of
the two is the baseline. Compared:

* ``KafkaEventLog.append`` in batches of 1,000 (serialisation included);
* the HTTP gateway as ``crm ingest serve --workers N`` runs it (uvicorn, one worker
  process per core and at least 2) with requests of 1, 100 and 1,000 events from a
  client in another process over several connections; and with one worker process at
  1,000. As deployed, its API key and data keys live in PostgreSQL (``bench.procs.target``:
  a key-store schema of this run's, dropped after), where a processor finds the keys to
  open its events;
* the SDK, ``Publisher.to_kafka`` (envelopes built and validated per event, batches of
  1,000).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
from kafka import KafkaProducer

from auth import Scope
from bench import procs
from bench.core import BenchContext, Figure
from bench.pipeline import chunks, delete_topics, drop_schemas, past_year, rate
from bench.procs import WORKERS
from events.codec import encode_event, partition_for, to_record
from events.kafka import BATCH_BYTES, MAX_REQUEST_BYTES, KafkaEventLog
from privacy.crypto import b64, new_key
from privacy.protect import Protector
from producers.sdk import Publisher
from schemas import Envelope

SECTION = "ingest"
RAW = "kafka-python producer"
HTTP_TARGET = "≥ 25,000 ev/s and ≥ 0.7 of raw"
REPO = Path(__file__).resolve().parent.parent


def run(ctx: BenchContext) -> list[Figure]:
    n = ctx.sizes.ingest_events
    customers = max(50, min(ctx.sizes.customers, n // 5))
    ctx.log(f"generating {n:,} synthetic events ({customers:,} customers)")
    events = list(past_year(customers, seed=11).events(n))
    names = {kind: ctx.name(f"ingest_{kind}") for kind in ("raw", "log", "dead", "sdk")}
    # the gateway's topic, data keys (shared by its runs) and API key, as deployed
    http = procs.target(ctx, "ingest_http")
    try:
        first_raw = raw_producer(ctx, names["raw"], events)
        ctx.log(f"raw producer: {first_raw:,.0f} ev/s")
        appended = event_log_append(ctx, names["log"], events)
        ctx.log(f"KafkaEventLog.append: {appended:,.0f} ev/s")
        by_batch = gateway(ctx, http, names["dead"], events, WORKERS, (1, 100, 1_000))
        one = gateway(ctx, http, names["dead"], events, 1, (1_000,))
        sdk = sdk_publisher(ctx, names["sdk"], events)
        ctx.log(f"SDK: {sdk:,.0f} ev/s")
        second_raw = raw_producer(ctx, names["raw"], events)
        ctx.log(f"raw producer again: {second_raw:,.0f} ev/s")
        raw = max(first_raw, second_raw)
    finally:
        delete_topics(ctx.kafka_bootstrap, names.values())
        drop_schemas(ctx.database_url, ctx.name("keys"))  # sdk_publisher's data keys
        procs.cleanup(ctx, http)

    def figure(name: str, value: float, target: str | None = None, notes: str = "") -> Figure:
        baseline_notes = f"raw: best of {first_raw:,.0f} and {second_raw:,.0f} ev/s (before/after)"
        return Figure(
            SECTION,
            name,
            value,
            "ev/s",
            raw,
            RAW,
            target,
            "; ".join(filter(None, [notes, baseline_notes])),
        )

    figures = [figure("KafkaEventLog.append (batches of 1,000)", appended)]
    for workers, results in ((WORKERS, by_batch), (1, one)):
        for batch, (value, count) in results.items():
            figures.append(
                figure(
                    f"HTTP gateway, batch {batch:,}, {workers} worker process"
                    f"{'es' if workers > 1 else ''}",
                    value,
                    HTTP_TARGET if batch == 1_000 and workers == WORKERS else None,
                    f"{count:,} events, {http_concurrency(batch)} connections",
                )
            )
    figures.append(figure("SDK Publisher.to_kafka (batches of 1,000)", sdk))
    return figures


# -- the baseline -----------------------------------------------------------------------


def raw_producer(ctx: BenchContext, topic: str, events: list[Envelope]) -> float:
    """A KafkaProducer with KafkaEventLog's own settings, pre-serialised records."""
    event_log = KafkaEventLog(ctx.kafka_bootstrap, topic, client_id="loopcrm-bench")
    partitions = event_log.partition_count()
    event_log.close()
    config: dict[str, Any] = {
        "acks": "all",
        "enable_idempotence": True,
        "linger_ms": 5,
        "batch_size": BATCH_BYTES,
        "max_request_size": MAX_REQUEST_BYTES,
    }
    records = [to_record(event) for event in events]
    keyed = [(r, partition_for(r.key, partitions) if r.key else 0) for r in records]
    producer = KafkaProducer(
        bootstrap_servers=ctx.kafka_bootstrap, client_id="loopcrm-bench-raw", **config
    )
    try:
        for record, partition in keyed[:20]:  # warm up: metadata, connections
            producer.send(topic, key=record.key, value=record.value, partition=partition)
        producer.flush()
        started = time.perf_counter()
        futures = [
            producer.send(
                topic,
                key=record.key,
                value=record.value,
                headers=list(record.headers),
                partition=partition,
            )
            for record, partition in keyed
        ]
        producer.flush()
        for future in futures:
            future.get(timeout=0)
        seconds = time.perf_counter() - started
    finally:
        producer.close()
    return rate(len(records), seconds)


# -- ours ---------------------------------------------------------------------------------


def event_log_append(ctx: BenchContext, topic: str, events: list[Envelope]) -> float:
    event_log = KafkaEventLog(ctx.kafka_bootstrap, topic, client_id="loopcrm-bench")
    try:
        event_log.append(events[:20])  # warm up
        started = time.perf_counter()
        for chunk in chunks(events, 1_000):
            event_log.append(chunk)
        seconds = time.perf_counter() - started
    finally:
        event_log.close()
    return rate(len(events), seconds)


def sdk_publisher(ctx: BenchContext, topic: str, events: list[Envelope]) -> float:
    protector = Protector.connect(ctx.database_url, b64(new_key()), schema=ctx.name("keys"))
    publisher = Publisher.to_kafka(
        ctx.kafka_bootstrap,
        topic,
        source_system="bench-sdk",
        batch_size=1_000,
        protector=protector,  # personal data sealed, as in production
    )
    try:
        for event in events[:20]:  # warm up
            publisher.publish_event(event)
        publisher.flush()
        started = time.perf_counter()
        for event in events:
            publisher.publish(
                event.payload,
                identifiers=event.identifiers,
                channel=event.source.channel,
                occurred_at=event.occurred_at,
                event_id=event.event_id,
            )
        publisher.flush()
        seconds = time.perf_counter() - started
    finally:
        publisher.close()
    return rate(len(events), seconds)


def http_concurrency(batch: int) -> int:
    return 32 if batch == 1 else 8


def child_env(**extra: str) -> dict[str, str]:
    """The environment of a child process: no CRM_* settings but ``extra``, and this
    repository first on the path."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CRM_")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    env.update(extra)
    return env


def gateway(
    ctx: BenchContext,
    t: procs.Target,
    deadletters: str,
    events: list[Envelope],
    workers: int,
    batches: tuple[int, ...],
) -> dict[int, tuple[float, int]]:
    """Events/s of ``crm ingest serve --workers`` per batch size: {batch: (ev/s, events
    sent)}."""
    key, key_id = procs.create_key(t, Scope.INGEST)
    home = Path(t.env["CRM_DATA_DIR"])
    lines = [encode_event(event) for event in events]
    everything = home / "events.jsonl"
    everything.write_bytes(b"\n".join(lines))
    singles = home / "events-single.jsonl"
    single_count = min(len(lines), max(200, min(len(lines) // 20, 2_000)))
    singles.write_bytes(b"\n".join(lines[:single_count]))

    port = procs.free_port()
    url = f"http://127.0.0.1:{port}"
    env = {**t.env, "CRM_DEADLETTER_TOPIC": deadletters}
    command = [sys.executable, "-c", "from crm.cli import app; app()", "ingest", "serve"]
    command += ["--host", "127.0.0.1", "--port", str(port), "--log-level", "warning"]
    command += ["--workers", str(workers)]
    server = procs.Proc("crm ingest serve", command, env, home / f"gateway{workers}.log")
    results: dict[int, tuple[float, int]] = {}
    try:
        procs.wait_listening(server, port, workers, timeout=90)  # every worker, not just the first
        _warm_up(url, key, lines[:20])
        for batch in batches:
            source = singles if batch == 1 else everything
            outcome = _client(url, key, source, batch)
            sent = int(outcome["events"])
            results[batch] = (rate(sent, float(outcome["seconds"])), sent)
            ctx.log(f"HTTP batch {batch:,}, {workers} worker(s): {results[batch][0]:,.0f} ev/s")
    finally:
        server.stop()
        procs.revoke_key(t, key_id)
    return results


def _warm_up(url: str, key: str, lines: list[bytes]) -> None:
    response = httpx.post(
        f"{url}/v1/events",
        content=b"[" + b",".join(lines) + b"]",
        headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"},
        timeout=60,
    )
    if response.status_code != 200:
        raise RuntimeError(f"warm-up request failed: {response.status_code} {response.text}")


def _client(url: str, key: str, source: Path, batch: int) -> dict[str, Any]:
    command = [sys.executable, "-m", "bench.ingest_client", "--url", url]
    command += ["--events", str(source), "--batch", str(batch)]
    command += ["--concurrency", str(http_concurrency(batch))]
    done = subprocess.run(
        command,
        cwd=REPO,
        env=child_env(CRM_BENCH_KEY=key),
        capture_output=True,
        timeout=900,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"the HTTP client failed: {done.stderr.decode()[-2000:]}")
    outcome: dict[str, Any] = json.loads(done.stdout.decode().strip().splitlines()[-1])
    if outcome["errors"]:
        raise RuntimeError(
            f"{outcome['errors']} of {outcome['requests']} requests (batch {batch}) failed: "
            f"{outcome['first_error']}"
        )
    return outcome
