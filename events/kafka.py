"""The event log on Apache Kafka: appends and reads through aiokafka, offsets and topic
admin through kafka-python.

Appends use an idempotent producer with ``acks=all`` and wait for every
acknowledgement. The producer is aiokafka's, fed whole record batches (one per
partition per call, built by its C extension) from a private event-loop thread, so the
synchronous ``append`` costs a few µs per record: kafka-python's ``send`` costs ~40 µs
per record in Python and contends for its accumulator's locks under concurrent callers
(the gateway's request threads). Reads fetch through an ``AIOKafkaConsumer`` on its own
private loop thread too: ~7 µs of CPU per record against kafka-python's ~28.

The topic is created on demand with infinite retention, delete (never compact)
cleanup and ``LogAppendTime`` timestamps, so "read from a time" means "what was
appended since then"; an existing topic with finite retention or compaction is refused,
because the log is the system of record. Records are partitioned with the same murmur2
function as :mod:`events.sqlite`, so both adapters place a key identically.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
from collections.abc import Collection, Coroutine, Iterator, Mapping, Sequence
from datetime import datetime
from typing import Any, TypeVar

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka import TopicPartition as AioTopicPartition
from aiokafka.errors import KafkaError as AioKafkaError
from kafka import KafkaAdminClient, KafkaConsumer, TopicPartition
from kafka.admin import ConfigResource, ConfigResourceType
from kafka.errors import KafkaError, TopicAlreadyExistsError

from events.codec import partition_for, to_record
from events.log import (
    LogConfigError,
    LogError,
    LogRecord,
    LogUnavailableError,
    OutgoingRecord,
    Position,
    check_read_args,
    to_epoch_ms,
)
from schemas import Envelope

log = logging.getLogger(__name__)
T = TypeVar("T")
# what a failed or timed-out produce or fetch raises (asyncio's and concurrent.futures'
# timeouts are TimeoutError since Python 3.11)
_AIO_ERRORS = (AioKafkaError, OSError, TimeoutError)

BATCH_BYTES = 256 * 1024
"""A producer batch (one partition's records per request)."""
MAX_REQUEST_BYTES = 4 * 1024 * 1024

TOPIC_CONFIG = {
    "retention.ms": "-1",
    "retention.bytes": "-1",
    "cleanup.policy": "delete",
    "message.timestamp.type": "LogAppendTime",
}


class KafkaEventLog:
    """An :class:`events.log.EventLog` on one Kafka topic."""

    def __init__(
        self,
        bootstrap: str,
        topic: str,
        *,
        partitions: int = 6,
        replication_factor: int = 1,
        client_id: str = "loopcrm",
        delivery_timeout_ms: int = 30_000,
        producer_config: Mapping[str, Any] | None = None,
    ) -> None:
        self._bootstrap = bootstrap
        self._topic = topic
        self._client_id = client_id
        self._timeout_ms = delivery_timeout_ms
        self._producer_config: dict[str, Any] = {  # aiokafka's AIOKafkaProducer options
            "acks": "all",
            "enable_idempotence": True,
            "max_batch_size": BATCH_BYTES,
            "max_request_size": MAX_REQUEST_BYTES,
            "request_timeout_ms": min(delivery_timeout_ms // 2, 30_000),
            **(producer_config or {}),
        }
        self._producer: _Producer | None = None
        self._producer_lock = threading.Lock()
        self._partitions = self._ensure_topic(partitions, replication_factor)

    # -- topic ------------------------------------------------------------------------

    def _ensure_topic(self, partitions: int, replication_factor: int) -> int:
        try:
            admin = KafkaAdminClient(
                bootstrap_servers=self._bootstrap,
                client_id=f"{self._client_id}-admin",
                request_timeout_ms=self._timeout_ms,
                bootstrap_timeout_ms=self._timeout_ms,
            )
        except KafkaError as exc:
            raise LogUnavailableError(f"Kafka at {self._bootstrap} did not answer: {exc}") from exc
        try:
            try:
                admin.create_topics(
                    {
                        self._topic: {
                            "num_partitions": partitions,
                            "replication_factor": replication_factor,
                            "configs": TOPIC_CONFIG,
                        }
                    },
                    wait_for_metadata=True,
                )
                log.info("created topic %s with %d partitions", self._topic, partitions)
            except TopicAlreadyExistsError:
                self._check_existing_topic(admin)
            described = admin.describe_topics([self._topic])
            return len(described[0]["partitions"])
        except KafkaError as exc:
            raise LogUnavailableError(f"could not set up topic {self._topic!r}: {exc}") from exc
        finally:
            admin.close()

    def _check_existing_topic(self, admin: KafkaAdminClient) -> None:
        resource = ConfigResource(ConfigResourceType.TOPIC, self._topic)
        described = admin.describe_configs([resource], config_filter="all")
        configs = described["topic"][self._topic]
        actual = {name: str(configs[name]["value"]) for name in TOPIC_CONFIG if name in configs}
        if actual.get("retention.ms") != "-1" or "compact" in actual.get("cleanup.policy", ""):
            raise LogConfigError(
                f"topic {self._topic!r} exists with retention.ms={actual.get('retention.ms')} "
                f"cleanup.policy={actual.get('cleanup.policy')}; the event log is the system of "
                "record and must keep every event: set retention.ms=-1 and cleanup.policy=delete"
            )

    @property
    def topic(self) -> str:
        return self._topic

    def partition_count(self) -> int:
        return self._partitions

    # -- append -----------------------------------------------------------------------

    def _get_producer(self) -> _Producer:
        with self._producer_lock:
            if self._producer is None or self._producer.pid != os.getpid():
                config = {"client_id": self._client_id, **self._producer_config}
                self._producer = _Producer(self._bootstrap, config, self._timeout_ms / 1000)
            return self._producer

    def _reset_producer(self) -> None:
        """Drop a producer whose batch failed; its idempotence state cannot be trusted."""
        with self._producer_lock:
            producer, self._producer = self._producer, None
        if producer is not None:
            producer.close(timeout_s=0)  # unsent records are abandoned: the caller was told

    def append(self, events: Sequence[Envelope]) -> list[Position]:
        return self.append_records(self.records_of(events))

    def records_of(self, events: Sequence[Envelope]) -> list[OutgoingRecord]:
        return [to_record(event) for event in events]

    def append_records(self, records: Sequence[OutgoingRecord]) -> list[Position]:
        if not records:
            return []
        # Records of one partition keep their order (one batch, or batches in sequence);
        # positions come back in the order of ``records``.
        by_partition: dict[int, list[int]] = {}
        for index, record in enumerate(records):
            partition = 0 if record.key is None else partition_for(record.key, self._partitions)
            by_partition.setdefault(partition, []).append(index)
        try:
            producer = self._get_producer()
            offsets = producer.send(self._topic, records, by_partition)
        except _AIO_ERRORS as exc:
            self._reset_producer()
            raise LogUnavailableError(
                f"Kafka did not acknowledge {len(records)} record(s) on {self._topic!r} "
                f"within {self._timeout_ms / 1000:g} s: {exc!r}"
            ) from exc
        positions: list[Position | None] = [None] * len(records)
        for partition, indexes in by_partition.items():
            for index, offset in zip(indexes, offsets[partition], strict=True):
                positions[index] = Position(partition, offset)
        return positions  # type: ignore[return-value]

    # -- read -------------------------------------------------------------------------

    def _consumer(self) -> KafkaConsumer:
        try:
            return KafkaConsumer(
                bootstrap_servers=self._bootstrap,
                client_id=f"{self._client_id}-reader",
                group_id=None,
                enable_auto_commit=False,
                max_poll_records=5_000,
                fetch_max_bytes=64 * 1024 * 1024,
                max_partition_fetch_bytes=8 * 1024 * 1024,
                request_timeout_ms=max(self._timeout_ms, 30_000) + 5_000,
            )
        except KafkaError as exc:
            raise LogUnavailableError(f"Kafka consumer could not start: {exc}") from exc

    def _partitions_of(self) -> list[TopicPartition]:
        return [TopicPartition(self._topic, p) for p in range(self._partitions)]

    def end_offsets(self) -> dict[int, int]:
        consumer = self._consumer()
        try:
            ends = consumer.end_offsets(self._partitions_of())
            return {tp.partition: int(offset) for tp, offset in ends.items()}
        except KafkaError as exc:
            raise LogUnavailableError(f"could not read end offsets: {exc}") from exc
        finally:
            consumer.close()

    def offsets_for_time(self, when: datetime) -> dict[int, int]:
        consumer = self._consumer()
        try:
            return self._offsets_for_time(consumer, when)
        finally:
            consumer.close()

    def _offsets_for_time(self, consumer: KafkaConsumer, when: datetime) -> dict[int, int]:
        tps = self._partitions_of()
        try:
            found = consumer.offsets_for_times({tp: to_epoch_ms(when) for tp in tps})
            ends = consumer.end_offsets(tps)
        except KafkaError as exc:
            raise LogUnavailableError(f"could not look up offsets for {when}: {exc}") from exc
        return {
            tp.partition: int(found[tp].offset) if found.get(tp) else int(ends[tp]) for tp in tps
        }

    def read(
        self,
        *,
        from_offsets: Mapping[int, int] | None = None,
        from_time: datetime | None = None,
        partitions: Collection[int] | None = None,
        until_offsets: Mapping[int, int] | None = None,
        stall_timeout_s: float = 60.0,
    ) -> Iterator[LogRecord]:
        check_read_args(from_offsets, from_time)
        wanted = sorted(partitions) if partitions is not None else list(range(self._partitions))
        for p in wanted:
            if not 0 <= p < self._partitions:
                raise ValueError(f"partition {p} does not exist in {self._topic!r}")
        consumer = self._consumer()
        try:
            starts, ends = self._read_range(
                consumer, wanted, from_offsets, from_time, until_offsets or {}
            )
        finally:
            consumer.close()
        if not starts:
            return
        try:
            fetcher = _Fetcher(self._bootstrap, self._topic, self._fetcher_config(), starts, ends)
        except _AIO_ERRORS as exc:
            raise LogUnavailableError(f"could not start reading {self._topic!r}: {exc!r}") from exc
        try:
            yield from self._fetch(fetcher, ends, stall_timeout_s)
        finally:
            fetcher.close()

    def _read_range(
        self,
        consumer: KafkaConsumer,
        wanted: list[int],
        from_offsets: Mapping[int, int] | None,
        from_time: datetime | None,
        until_offsets: Mapping[int, int],
    ) -> tuple[dict[int, int], dict[int, int]]:
        """(offset to start at, offset to stop before) of each partition with records
        to read."""
        tps = [TopicPartition(self._topic, p) for p in wanted]
        try:
            ends = {
                tp.partition: min(int(o), until_offsets.get(tp.partition, int(o)))
                for tp, o in consumer.end_offsets(tps).items()
            }
            begins = {tp.partition: int(o) for tp, o in consumer.beginning_offsets(tps).items()}
        except KafkaError as exc:
            raise LogUnavailableError(f"could not start reading {self._topic!r}: {exc}") from exc
        starts = self._offsets_for_time(consumer, from_time) if from_time else from_offsets or {}
        first = {p: max(begins[p], int(starts.get(p, 0))) for p in wanted}
        return (
            {p: first[p] for p in wanted if first[p] < ends[p]},
            {p: ends[p] for p in wanted if first[p] < ends[p]},
        )

    def _fetcher_config(self) -> dict[str, Any]:
        return {
            "client_id": f"{self._client_id}-reader",
            "enable_auto_commit": False,
            "fetch_max_bytes": 64 * 1024 * 1024,
            "max_partition_fetch_bytes": 8 * 1024 * 1024,
            "request_timeout_ms": max(self._timeout_ms, 30_000) + 5_000,
        }

    def _fetch(
        self, fetcher: _Fetcher, ends: Mapping[int, int], stall_timeout_s: float
    ) -> Iterator[LogRecord]:
        topic = self._topic
        last_progress = time.monotonic()
        while not fetcher.done():
            try:
                batches = fetcher.poll()
            except _AIO_ERRORS as exc:
                raise LogUnavailableError(f"reading {topic!r} failed: {exc!r}") from exc
            if batches:
                last_progress = time.monotonic()
            elif time.monotonic() - last_progress > stall_timeout_s:
                raise LogUnavailableError(
                    f"reading {topic!r} made no progress for {stall_timeout_s:.0f}s"
                )
            for partition, messages in batches.items():
                end = ends[partition]
                for m in messages:
                    if m.offset >= end:
                        break
                    yield LogRecord(
                        topic,
                        partition,
                        m.offset,
                        m.timestamp,
                        m.key,
                        m.value,
                        tuple(m.headers),
                    )

    def close(self) -> None:
        with self._producer_lock:
            producer, self._producer = self._producer, None
        if producer is not None and not producer.close(timeout_s=self._timeout_ms / 1000):
            raise LogError(f"the producer of {self._topic!r} did not close cleanly")


class _LoopThread:
    """A private event loop on a daemon thread, for synchronous callers of aiokafka."""

    def __init__(self, name: str) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name=name, daemon=True)
        self._thread.start()

    def _run(self, coro: Coroutine[Any, Any, T], timeout_s: float) -> T:
        future = asyncio.run_coroutine_threadsafe(coro, self._loop)
        try:
            return future.result(timeout_s)
        except TimeoutError:
            future.cancel()
            raise

    def _stop_loop(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        if not self._thread.is_alive():
            self._loop.close()


class _Fetcher(_LoopThread):
    """An ``AIOKafkaConsumer`` (no group, no commits) assigned to some partitions of one
    topic from given offsets; ``poll`` returns the next records of the partitions not
    read up to their end yet."""

    POLL_MS = 500

    def __init__(
        self,
        bootstrap: str,
        topic: str,
        config: Mapping[str, Any],
        starts: Mapping[int, int],
        ends: Mapping[int, int],
    ) -> None:
        super().__init__("loopcrm-kafka-reader")
        self._timeout_s = config["request_timeout_ms"] / 1000 + 5
        self._positions = dict(starts)
        self._ends = ends
        try:
            self._consumer = self._run(self._start(bootstrap, topic, config), self._timeout_s)
        except BaseException:
            self._stop_loop()
            raise

    async def _start(
        self, bootstrap: str, topic: str, config: Mapping[str, Any]
    ) -> AIOKafkaConsumer:
        consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None, **config)
        try:
            await consumer.start()
            consumer.assign([AioTopicPartition(topic, p) for p in self._positions])
            for partition, offset in self._positions.items():
                consumer.seek(AioTopicPartition(topic, partition), offset)
        except BaseException:
            await consumer.stop()
            raise
        return consumer

    def done(self) -> bool:
        return all(position >= self._ends[p] for p, position in self._positions.items())

    def poll(self) -> dict[int, list[Any]]:
        return self._run(self._poll(), self._timeout_s)

    async def _poll(self) -> dict[int, list[Any]]:
        consumer = self._consumer
        fetched = await consumer.getmany(timeout_ms=self.POLL_MS, max_records=5_000)
        for tp in consumer.assignment():
            if tp not in consumer.paused():
                self._positions[tp.partition] = position = await consumer.position(tp)
                if position >= self._ends[tp.partition]:
                    consumer.pause(tp)  # read to its end: fetch no further
        return {tp.partition: messages for tp, messages in fetched.items()}

    def close(self) -> None:
        try:
            self._run(self._consumer.stop(), self._timeout_s)
        except _AIO_ERRORS as exc:
            log.debug("the Kafka reader did not stop cleanly: %r", exc)
        self._stop_loop()


class _Producer(_LoopThread):
    """An ``AIOKafkaProducer`` on a private event-loop thread, for synchronous callers.

    ``send`` blocks its caller (any thread) until every record is acknowledged, or
    raises after ``timeout_s``. Created per process: a forked child builds its own.
    """

    def __init__(self, bootstrap: str, config: Mapping[str, Any], timeout_s: float) -> None:
        super().__init__("loopcrm-kafka-producer")
        self.pid = os.getpid()
        self._timeout_s = timeout_s
        try:
            self._producer = self._run(self._start(bootstrap, config), timeout_s)
        except BaseException:
            self._stop_loop()
            raise

    async def _start(self, bootstrap: str, config: Mapping[str, Any]) -> AIOKafkaProducer:
        producer = AIOKafkaProducer(bootstrap_servers=bootstrap, **config)
        try:
            await producer.start()
        except BaseException:
            await producer.stop()
            raise
        return producer

    def send(
        self, topic: str, records: Sequence[OutgoingRecord], by_partition: Mapping[int, list[int]]
    ) -> dict[int, list[int]]:
        """Send ``records`` (indexes of each partition's, in order) and wait for the
        acknowledgements: the offsets of each partition's records, in order."""
        return self._run(self._send(topic, records, by_partition), self._timeout_s)

    async def _send(
        self, topic: str, records: Sequence[OutgoingRecord], by_partition: Mapping[int, list[int]]
    ) -> dict[int, list[int]]:
        producer = self._producer
        sent: list[tuple[int, int, asyncio.Future[Any]]] = []  # partition, count, future

        async def send(batch: Any, partition: int, count: int) -> None:
            batch.close()
            future = await producer.send_batch(batch, topic, partition=partition)
            sent.append((partition, count, future))

        for partition, indexes in by_partition.items():
            batch, count = producer.create_batch(), 0
            for index in indexes:
                record = records[index]
                headers = list(record.headers)
                # full: send it and start the next (a batch's first record always fits)
                while (
                    batch.append(
                        key=record.key, value=record.value, timestamp=None, headers=headers
                    )
                    is None
                ):
                    await send(batch, partition, count)
                    batch, count = producer.create_batch(), 0
                count += 1
            await send(batch, partition, count)
        acknowledged = await asyncio.gather(*(future for _, _, future in sent))
        offsets: dict[int, list[int]] = {partition: [] for partition in by_partition}
        for (partition, count, _), metadata in zip(sent, acknowledged, strict=True):
            offsets[partition].extend(range(metadata.offset, metadata.offset + count))
        return offsets

    def close(self, timeout_s: float) -> bool:
        """Flush for up to ``timeout_s`` and stop; with 0, abandon at once what is
        unsent (its callers were told). False if it did not stop cleanly."""
        clean = True
        try:
            if timeout_s > 0:
                self._run(self._producer.stop(), timeout_s)
            else:
                self._run(self._abandon(), 5.0)
        except _AIO_ERRORS as exc:
            log.debug("the Kafka producer did not stop cleanly: %r", exc)
            clean = False
        self._stop_loop()
        return clean

    async def _abandon(self) -> None:
        current = asyncio.current_task()
        tasks = [task for task in asyncio.all_tasks() if task is not current]
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=2)
        await self._producer.client.close()
