"""The projection worker on Kafka (faust-streaming): batches of events, one transaction each.

Exactly-once effect rests on the projector's checkpoints, never on faust's offset
commits (faust has known commit bugs, e.g. faust-streaming/faust#312, #606). Every
position the consumer reads from comes from ``BatchProjector.checkpoints``:

* when partitions are assigned, the aiokafka rebalance listener seeks them to their
  checkpoints before faust resumes them, so nothing is fetched from faust's committed
  offsets (faust-streaming/faust#216: a stream could start before faust's own seek);
* whenever faust itself "seeks to committed offsets" (after each rebalance, and when
  its fetcher finds the flow stopped) :class:`CheckpointConsumer` seeks to the
  checkpoints instead.

The worker commits the offsets of applied batches to Kafka, which keeps consumer-lag
tools meaningful; nothing reads those commits back. Partitions never applied start at 0
(the log keeps every event). A restarted or rebalanced worker therefore resumes exactly
at the database checkpoint, and the projector skips whatever is delivered twice.

Fetched records go to the batches in bulk (:meth:`CheckpointConsumer._drain_messages`),
not through faust's conductor, channels and stream: those cost two ``wait_first`` calls
(four asyncio tasks) and a ``ConsumerMessage`` per record, 0.5 ms of CPU per event on a
2-core machine, as much as applying it. The exactly-once effect never needed faust's
per-message acks.

All projector calls run on one thread per worker, in order, off the event loop; with
``child_process`` that thread hands them to the projector in a child process, whose GIL
faust's threads do not share.
"""

from __future__ import annotations

import asyncio
import faulthandler
import logging
import os
import signal
import sys
import threading
import traceback
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from time import monotonic
from typing import Any, TypeVar, cast

import faust
from faust.transport.drivers import aiokafka as faust_aiokafka
from faust.types import TP

from events.log import LogRecord
from projections.child_process import ChildProcessProjector
from projections.processing import (
    BATCH_SIZE,
    FIRST_RETRY_S,
    MAX_RETRY_S,
    BatchProjector,
    ProcessorSettings,
)

__all__ = [
    "DEFAULT_GROUP_ID",
    "DEFAULT_STOP_TIMEOUT_S",
    "STOP_TIMEOUT_EXIT_CODE",
    "Batches",
    "CheckpointConsumer",
    "Projection",
    "ProjectionApp",
    "build_app",
    "run_worker",
    "to_log_record",
]

log = logging.getLogger(__name__)

S = TypeVar("S", bound=ProcessorSettings)
T = TypeVar("T")

DEFAULT_GROUP_ID = "loopcrm-projections"


class Projection:
    """Runs a projector's blocking calls on one thread, retrying failures forever.

    A failed call is retried with exponential backoff (0.5 s doubling to 30 s) and never
    skipped: a batch that cannot be applied stops its worker's progress until the cause
    (usually the database) is fixed. Logs carry exception types, positions and code
    locations only, never record contents or exception messages (both can hold PII).
    """

    def __init__(self, projector: BatchProjector, topic: str) -> None:
        self.projector = projector
        self.topic = topic
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="projector")

    async def apply(self, records: Sequence[LogRecord]) -> int:
        """Apply one batch in one transaction, then publish the derived events."""
        where = _describe(records)
        applied = await self._until_done(
            f"apply_batch({where})", lambda: self.projector.apply_batch(self.topic, records)
        )
        published = await self._until_done("publish_outbox", self.projector.publish_outbox)
        log.debug("batch %s: %d applied, %d derived published", where, applied, published)
        return applied

    async def next_offsets(self, partitions: Iterable[Any]) -> dict[Any, int]:
        """The offset to resume each of our topic's ``partitions`` at (0 if never applied)."""
        ours = [tp for tp in partitions if tp.topic == self.topic]
        if not ours:
            return {}
        checkpoints = await self._until_done(
            "checkpoints", lambda: self.projector.checkpoints(self.topic)
        )
        return {tp: checkpoints.get(tp.partition, 0) for tp in ours}

    def close(self) -> None:
        """Wait for the call in progress (its transaction commits or rolls back)."""
        self._executor.shutdown(wait=True, cancel_futures=True)
        close = getattr(self.projector, "close", None)  # a child process, a BackgroundOutbox
        if close is not None:
            close()

    async def _until_done(self, what: str, call: Callable[[], T]) -> T:
        loop = asyncio.get_running_loop()
        delay, failures = FIRST_RETRY_S, 0
        while True:
            try:
                result = await loop.run_in_executor(self._executor, call)
            except Exception as exc:
                failures += 1
                frames = _code_locations(exc) if failures == 1 else ""
                log.error(
                    "%s failed (%s, attempt %d); retrying in %.1f s%s",
                    what,
                    type(exc).__qualname__,
                    failures,
                    delay,
                    frames,
                )
                await asyncio.sleep(delay)
                delay = min(delay * 2, MAX_RETRY_S)
                continue
            if failures:
                log.warning("%s succeeded after %d failed attempts", what, failures)
            return result


class Batches:
    """Records waiting for the projector. The next batch is whatever arrived while the
    last one was applied (up to ``max_size``), taken as soon as the projector is free.

    faust's ``take_events`` waits its ``within`` after every batch and accepts no events
    while one is applied; with the projector in a child process that left the child idle
    for that wait, and a backlog drained in batches of what arrived within it.
    ``linger`` keeps a short wait, once the projector is free, for more events to join.
    """

    def __init__(self, max_size: int, linger: float = 0.0) -> None:
        self.max_size = max_size
        self.linger = linger
        self._records: list[LogRecord] = []
        self._arrived = asyncio.Event()
        self._room = asyncio.Event()
        self._room.set()

    def __len__(self) -> int:
        return len(self._records)

    async def put(self, record: LogRecord) -> None:
        """Add a record; waits while ``max_size`` records are waiting already."""
        await self.put_many((record,))

    async def put_many(self, records: Sequence[LogRecord]) -> None:
        """Add records (one fetch); waits while ``max_size`` records are waiting already."""
        if not records:
            return
        while len(self._records) >= self.max_size:
            self._room.clear()
            await self._room.wait()
        self._records.extend(records)
        self._arrived.set()

    async def take(self) -> list[LogRecord]:
        """The next batch: at least one record, in log order per partition, once each
        (a partition sought back after a rebalance may deliver a record twice)."""
        await self._arrived.wait()
        if self.linger and len(self._records) < self.max_size:
            await asyncio.sleep(self.linger)
        taken = self._records[: self.max_size]
        del self._records[: self.max_size]
        if not self._records:
            self._arrived.clear()
        self._room.set()
        once = {(r.partition, r.offset): r for r in taken}
        return [once[position] for position in sorted(once)]


def _code_locations(exc: BaseException) -> str:
    """Where ``exc`` was raised: files, lines and functions only (no values, no source)."""
    frames = traceback.extract_tb(exc.__traceback__)
    return "".join(f"\n  {f.filename}:{f.lineno} in {f.name}" for f in frames)


def _describe(records: Sequence[LogRecord]) -> str:
    """``p0:120-245 p3:7-9``: which offsets a batch spans, without any content."""
    spans: dict[int, tuple[int, int]] = {}
    for r in records:
        low, high = spans.get(r.partition, (r.offset, r.offset))
        spans[r.partition] = (min(low, r.offset), max(high, r.offset))
    return " ".join(f"p{p}:{low}-{high}" for p, (low, high) in sorted(spans.items()))


def to_log_record(record: Any) -> LogRecord:
    """An aiokafka ``ConsumerRecord`` (timestamps in ms) as the log's record type."""
    return LogRecord(
        topic=record.topic,
        partition=record.partition,
        offset=record.offset,
        timestamp_ms=record.timestamp or 0,
        key=record.key,
        value=record.value if record.value is not None else b"",
        headers=tuple((str(k), bytes(v or b"")) for k, v in record.headers or ()),
    )


def next_offsets(records: Iterable[LogRecord]) -> dict[tuple[str, int], int]:
    """``{(topic, partition): last offset + 1}``: what to commit once ``records`` are applied."""
    ends: dict[tuple[str, int], int] = {}
    for r in records:
        key = (r.topic, r.partition)
        ends[key] = max(ends.get(key, 0), r.offset + 1)
    return ends


# -- faust wiring: seek to the projector's checkpoints -----------------------------------


class _CheckpointRebalanceListener(faust_aiokafka.ConsumerRebalanceListener):
    """Seeks newly assigned partitions to their checkpoints before faust sees them.

    Runs on the consumer thread's event loop, inside aiokafka's rebalance callback,
    where seeking is supported and wins over aiokafka's own committed-offset lookup.
    """

    async def on_partitions_assigned(self, assigned: Iterable[Any]) -> None:
        assigned = set(assigned)
        projection = cast(ProjectionApp, self._thread.app).projection
        offsets = await projection.next_offsets(assigned)
        consumer = self._thread._ensure_consumer()
        for tp, offset in offsets.items():
            consumer.seek(tp, offset)
        if offsets:
            log.info("assigned %s: starting at checkpoints", _offsets_text(offsets))
        await super().on_partitions_assigned(assigned)


FETCH_MIN_BYTES = 64 * 1024
FETCH_MAX_WAIT_MS = 20
"""The broker answers a fetch once it has 64 KiB or after 20 ms. aiokafka's default (any
byte at once) meant a fetch round trip, ~0.6 ms of Python, for almost every event at a
steady 1,000 events/s: 0.66 ms of CPU per event for a bare consumer, 0.06 with these."""


class _ConsumerThread(faust_aiokafka.AIOKafkaConsumerThread):
    def _create_worker_consumer(self, transport: Any) -> Any:
        consumer = super()._create_worker_consumer(transport)
        # faust passes neither setting; the fetcher reads them when the consumer starts
        consumer._fetch_min_bytes = FETCH_MIN_BYTES
        consumer._fetch_max_wait_ms = FETCH_MAX_WAIT_MS
        return consumer


class CheckpointConsumer(faust_aiokafka.Consumer):
    """faust's consumer, with "the committed offset" meaning the projector's checkpoint.

    Applied batches also count as progress for faust's livelock detector: it logs an
    error for a partition with lag whose stream took no event for
    ``stream_processing_timeout`` (5 min), and no stream takes them any more."""

    RebalanceListener = _CheckpointRebalanceListener

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._uncommitted: dict[TP, int] = {}
        self._committer: asyncio.Task[None] | None = None

    def _new_consumer_thread(self) -> faust_aiokafka.AIOKafkaConsumerThread:
        return _ConsumerThread(self, loop=self.loop, beacon=self.beacon)

    async def seek_to_committed(self) -> Mapping[Any, int]:
        projection = cast(ProjectionApp, self.app).projection
        offsets = await projection.next_offsets(self.assignment())
        if offsets:
            await self.seek_wait(offsets)
            log.info("resuming %s from checkpoints", _offsets_text(offsets))
        return offsets

    async def _drain_messages(self, fetcher: Any) -> None:
        """Hand each fetch's records to the app's batches in bulk (see the module doc).

        Like faust's own loop, which goes record by record, it takes records of active
        (or buffered) partitions only, skips those below the read position (after a
        seek back), and after a fetch that ended while the flow was stopped (a
        rebalance) seeks to the checkpoints instead."""
        batches = cast(ProjectionApp, self.app).batches
        read_offset = self._read_offset
        try:
            while not (self.should_stop or fetcher.should_stop):
                records, active = await self._wait_next_records(1.0)
                if not records or self.should_stop:
                    continue
                if not self.flow_active:
                    await self.perform_seek()
                    continue
                wanted = None if active is None else active | self._buffered_partitions
                taken: list[LogRecord] = []
                for tp, fetched in records.items():
                    if wanted is not None and tp not in wanted:
                        continue
                    position = read_offset[tp]
                    kept = [r for r in fetched if position is None or r.offset >= position]
                    if kept:
                        taken.extend(map(to_log_record, kept))
                        read_offset[tp] = kept[-1].offset
                await batches.put_many(taken)
        except self.consumer_stopped_errors:
            if self.app.should_stop:
                log.info("consumer stopped, shutting down")
                return
            raise

    def applied(self, records: Sequence[LogRecord]) -> None:
        """Commit the offsets after ``records`` to Kafka in the background, for lag tools.

        The next batch does not wait for it: a commit is a round trip through the
        consumer's thread to the broker (~8 ms a batch at 1,000 events/s, where batches
        take ~100 ms, so ~8% of the time to visibility). Offsets applied while a commit
        is on its way go in the next one; whatever a stop leaves uncommitted changes
        nothing, since positions come from the checkpoints."""
        offsets = {TP(t, p): o for (t, p), o in next_offsets(records).items()}
        if self.app.monitor is not None:  # see the class doc: progress for the detector
            self.app.monitor.stream_inbound_time.update(dict.fromkeys(offsets, monotonic()))
        self._uncommitted.update(offsets)
        if self._committer is None or self._committer.done():
            self._committer = asyncio.get_running_loop().create_task(self._commit_pending())

    async def _commit_pending(self) -> None:
        """A failed commit is logged (the checkpoints are the positions; the next batch
        commits again)."""
        while self._uncommitted:
            offsets, self._uncommitted = self._uncommitted, {}
            try:
                await self._commit_offsets(offsets)
            except Exception as exc:  # e.g. CommitFailedError during a rebalance
                log.info("offset commit skipped (%s)", type(exc).__qualname__)


class _CheckpointTransport(faust_aiokafka.Transport):
    Consumer = CheckpointConsumer


class ProjectionApp(faust.App):
    """A faust app whose consumer positions come from ``projection``'s checkpoints."""

    def __init__(
        self, id: str, *, projection: Projection, batches: Batches, **options: Any
    ) -> None:
        self.projection = projection
        self.batches = batches
        super().__init__(id, **options)

    def _new_transport(self) -> Any:
        return _CheckpointTransport(self.conf.broker_consumer, self)


def _offsets_text(offsets: Mapping[Any, int]) -> str:
    return " ".join(f"p{tp.partition}@{o}" for tp, o in sorted(offsets.items()))


# -- the app ---------------------------------------------------------------------------


# A worker killed without leaving the group holds its partitions until its session
# expires: 15 s (faust's default is 60 s) bounds that stall.
GROUP_TIMEOUTS: Mapping[str, float] = {
    "broker_session_timeout": 15.0,
    "broker_heartbeat_interval": 3.0,
    "broker_rebalance_timeout": 30.0,
}


def build_app(
    settings: S,
    projector_factory: Callable[[S], BatchProjector],
    *,
    group_id: str = DEFAULT_GROUP_ID,
    batch_size: int = BATCH_SIZE,
    batch_wait: float = 0.0,
    child_process: bool = False,
    log_level: str = "info",
    options: Mapping[str, Any] | None = None,
) -> ProjectionApp:
    """A faust app projecting ``settings.topic`` in batches, as consumer group ``group_id``.

    ``child_process``: the projector runs in a child process (``ChildProcessProjector``;
    ``projector_factory`` and ``settings`` must pickle). ``options`` overrides faust
    settings (tests shorten session timeouts with it).
    """
    if not settings.kafka_bootstrap:
        raise ValueError("the Kafka stream processor needs CRM_KAFKA_BOOTSTRAP")
    datadir = settings.data_dir / "faust"  # faust creates only the last folder itself
    datadir.parent.mkdir(parents=True, exist_ok=True)
    projector: BatchProjector = (
        ChildProcessProjector(
            projector_factory, settings, logging.getLevelNamesMapping()[log_level.upper()]
        )
        if child_process
        else projector_factory(settings)
    )
    projection = Projection(projector, settings.topic)
    batches = Batches(batch_size, batch_wait)
    app = ProjectionApp(
        group_id,
        projection=projection,
        batches=batches,
        broker=[f"kafka://{host.strip()}" for host in settings.kafka_bootstrap.split(",")],
        broker_client_id=f"{group_id}-worker",
        key_serializer="raw",
        value_serializer="raw",
        web_enabled=False,
        store="memory://",
        datadir=str(datadir),
        topic_disable_leader=True,
        topic_allow_declare=False,  # KafkaEventLog creates the topic, never-expiring
        consumer_auto_offset_reset="earliest",
        broker_max_poll_records=batch_size,
        worker_redirect_stdouts=False,
        **{**GROUP_TIMEOUTS, **(options or {})},
    )
    # Subscribed without an agent: the consumer hands records to ``batches`` itself.
    events_topic = app.topic(settings.topic, key_type=bytes, value_type=bytes, internal=False)
    app.topics.add(events_topic)

    async def project_events() -> None:
        consumer = cast(CheckpointConsumer, app.consumer)
        while True:
            records = await batches.take()
            await projection.apply(records)
            consumer.applied(records)

    app.task(project_events)

    return app


DEFAULT_STOP_TIMEOUT_S = 45.0
STOP_TIMEOUT_EXIT_CODE = 3


class _Worker(faust.Worker):
    """faust's worker, which honours a stop signal that came while it was being built, and
    whose graceful stop has a deadline.

    A stop waits for the batch in progress and for the consumer to leave its group, which
    normally takes a few seconds. Should a stop hang (a rebalance callback or a client
    waiting on something that never comes), a supervisor's stop would otherwise wait for
    ever or end in SIGKILL with no trace. After ``stop_timeout`` seconds this worker logs
    an error, writes every thread's stack (code locations only, no values) to stderr, and
    exits with ``STOP_TIMEOUT_EXIT_CODE``. Nothing is lost: a batch in progress rolls back
    and the checkpoints say where the next worker resumes.
    """

    def __init__(
        self, app: faust.App, stop_timeout: float, signalled: threading.Event, **options: Any
    ) -> None:
        super().__init__(app, **options)
        self.stop_timeout = stop_timeout
        self.signalled = signalled

    def install_signal_handlers(self) -> None:
        super().install_signal_handlers()
        if self.signalled.is_set():  # between run_worker's check and faust's handlers
            self._schedule_shutdown(signal.SIGTERM)

    def _schedule_shutdown(self, sig: signal.Signals) -> None:
        if not self._signal_stop_time:  # the first signal starts the stop, and the clock
            timer = threading.Timer(self.stop_timeout, _stop_timed_out, (self.stop_timeout,))
            timer.daemon = True
            timer.start()
        super()._schedule_shutdown(sig)


def _stop_timed_out(stop_timeout: float) -> None:
    log.error(
        "the worker did not stop within %.0f s of the signal: exiting (code %d) without "
        "waiting further; the stacks of its threads follow",
        stop_timeout,
        STOP_TIMEOUT_EXIT_CODE,
    )
    faulthandler.dump_traceback(file=sys.stderr, all_threads=True)
    os._exit(STOP_TIMEOUT_EXIT_CODE)


def run_worker(
    settings: S,
    projector_factory: Callable[[S], BatchProjector],
    *,
    group_id: str = DEFAULT_GROUP_ID,
    batch_size: int = BATCH_SIZE,
    batch_wait: float = 0.0,
    child_process: bool = False,
    log_level: str = "info",
    options: Mapping[str, Any] | None = None,
    stop_timeout: float = DEFAULT_STOP_TIMEOUT_S,
) -> None:
    """Run one worker in the foreground until SIGTERM or SIGINT, then stop gracefully.

    A graceful stop lets the batch in progress commit and leaves the consumer group. One
    that takes longer than ``stop_timeout`` seconds is cut short (see :class:`_Worker`).
    SIGTERM or SIGINT while the worker is being built (its projector can take seconds to
    start) stops it before it joins the group. Raises ``SystemExit`` (0 after a clean stop),
    as faust's worker always does.
    """
    signalled = threading.Event()

    def stop_when_built(*_: Any) -> None:
        signalled.set()  # a second signal acts at once, as before
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.default_int_handler)

    for sig in (signal.SIGTERM, signal.SIGINT):  # until faust's handlers replace these
        signal.signal(sig, stop_when_built)
    app = build_app(
        settings,
        projector_factory,
        group_id=group_id,
        batch_size=batch_size,
        batch_wait=batch_wait,
        child_process=child_process,
        log_level=log_level,
        options=options,
    )
    if signalled.is_set():
        # faust has not set up logging yet: say it on stderr, where its log would go
        print("stopped by a signal while starting, before joining the group", file=sys.stderr)
        app.projection.close()
        raise SystemExit(0)
    worker = _Worker(
        app, stop_timeout, signalled, loglevel=log_level, quiet=True, redirect_stdouts=False
    )
    try:
        worker.execute_from_commandline()
    finally:
        app.projection.close()
