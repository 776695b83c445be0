"""The projection worker's consumer (``projections.faust_app``): records as the log's type,
the offsets to commit after a batch, and fuller fetches than aiokafka's default."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import cast

from aiokafka.structs import ConsumerRecord
from faust.transport.drivers import aiokafka as faust_aiokafka
from faust.types import TP

from events.log import LogRecord
from projections.faust_app import (
    FETCH_MAX_WAIT_MS,
    FETCH_MIN_BYTES,
    CheckpointConsumer,
    build_app,
    next_offsets,
    to_log_record,
)


def _consumer_record(offset: int, value: bytes | None, headers: list[tuple[str, bytes]]) -> object:
    return ConsumerRecord(
        topic="crm.events",
        partition=3,
        offset=offset,
        timestamp=1_700_000_000_123,
        timestamp_type=0,
        key=b"k",
        value=value,
        checksum=None,
        serialized_key_size=1,
        serialized_value_size=len(value or b""),
        headers=headers,
    )


def test_a_fetched_record_becomes_a_log_record_with_its_position_timestamp_and_headers() -> None:
    record = to_log_record(_consumer_record(41, b'{"a": 1}', [("content-type", b"json")]))
    assert record == LogRecord(
        "crm.events", 3, 41, 1_700_000_000_123, b"k", b'{"a": 1}', (("content-type", b"json"),)
    )
    tombstone = to_log_record(_consumer_record(42, None, []))
    assert tombstone.value == b"" and tombstone.headers == ()


def test_the_offsets_to_commit_are_one_past_the_last_record_of_each_partition() -> None:
    records = [
        LogRecord("a", 0, 7, 0, None, b""),
        LogRecord("a", 0, 9, 0, None, b""),
        LogRecord("a", 1, 2, 0, None, b""),
        LogRecord("b", 0, 4, 0, None, b""),
    ]
    assert next_offsets(records) == {("a", 0): 10, ("a", 1): 3, ("b", 0): 5}
    assert next_offsets([]) == {}


@dataclass
class _Settings:
    kafka_bootstrap: str
    topic: str
    data_dir: Path


class _NoProjector:
    def apply_batch(self, topic: str, records: Sequence[LogRecord]) -> int:
        return len(records)

    def publish_outbox(self) -> int:
        return 0

    def checkpoints(self, topic: str) -> dict[int, int]:
        return {}


def test_the_worker_subscribes_to_the_topic_and_asks_the_broker_for_fuller_fetches(
    tmp_path: Path,
) -> None:
    async def scenario() -> tuple[int, int, list[str]]:
        settings = _Settings("127.0.0.1:9", "crm.events", tmp_path)
        app = build_app(settings, lambda _: _NoProjector())
        thread = cast(CheckpointConsumer, app.consumer)._thread
        transport = cast(faust_aiokafka.Transport, app.transport)
        consumer = thread._create_worker_consumer(transport)  # not started
        topics = [name for topic in app.topics for name in topic.topics]
        return consumer._fetch_min_bytes, consumer._fetch_max_wait_ms, topics

    min_bytes, max_wait_ms, topics = asyncio.run(scenario())
    assert (min_bytes, max_wait_ms) == (FETCH_MIN_BYTES, FETCH_MAX_WAIT_MS)
    assert min_bytes > 1  # aiokafka's default: a fetch round trip per event at 1,000 ev/s
    assert topics == ["crm.events"]


def test_applied_batches_are_committed_in_the_background_and_count_as_progress(
    tmp_path: Path,
) -> None:
    """Kafka itself is in the integration test; here only what is asked of it. The
    batch loop does not wait for a commit; batches applied while one is on its way go
    in the next, merged; a failed commit is logged, never raised."""
    first = [
        LogRecord("crm.events", 0, 9, 0, None, b""),
        LogRecord("crm.events", 1, 2, 0, None, b""),
    ]
    during = [
        LogRecord("crm.events", 0, 12, 0, None, b""),
        LogRecord("crm.events", 2, 0, 0, None, b""),
    ]
    later = [LogRecord("crm.events", 1, 5, 0, None, b"")]

    async def scenario(fail: bool) -> tuple[list[dict[TP, int]], set[TP]]:
        app = build_app(_Settings("127.0.0.1:9", "crm.events", tmp_path), lambda _: _NoProjector())
        consumer = cast(CheckpointConsumer, app.consumer)
        asked: list[dict[TP, int]] = []
        release = asyncio.Event()

        async def commit_offsets(
            offsets: Mapping[TP, int], start_new_transaction: bool = True
        ) -> bool:
            asked.append(dict(offsets))
            await release.wait()
            if fail:
                raise RuntimeError("rebalance in progress")
            return True

        consumer._commit_offsets = commit_offsets  # type: ignore[method-assign]
        consumer.applied(first)
        await asyncio.sleep(0)  # the first commit is on its way
        consumer.applied(during)
        consumer.applied(later)
        assert len(asked) == 1
        release.set()
        assert consumer._committer is not None
        await consumer._committer
        return asked, set(app.monitor.stream_inbound_time)

    for fail in (False, True):
        asked, progressed = asyncio.run(scenario(fail))
        assert asked == [
            {TP("crm.events", 0): 10, TP("crm.events", 1): 3},
            {TP("crm.events", 0): 13, TP("crm.events", 2): 1, TP("crm.events", 1): 6},
        ]
        assert progressed == {TP("crm.events", p) for p in (0, 1, 2)}
