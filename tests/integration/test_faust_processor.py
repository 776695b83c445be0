"""The faust projection worker on a real broker: exactly-once effect through crashes.

Workers run as subprocesses (``python -m tests.integration.test_faust_processor``), so
they can be killed with SIGKILL; they share a :class:`SqliteBatchProjector`, a test
double with the projector contract's semantics (records and checkpoints committed in one
SQLite transaction, offsets below the checkpoint skipped). Exactly once means: every
appended (partition, offset) was applied, and none twice.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import closing, contextmanager
from functools import partial
from pathlib import Path

import pytest
from faust.types import TP
from kafka import KafkaConsumer, TopicPartition
from kafka.structs import OffsetAndMetadata

from crm.devservices.testing import TestServices
from crm.settings import Settings
from events.kafka import KafkaEventLog
from events.log import LogRecord, Position
from producers.synthetic import SyntheticTouchpoints
from projections.faust_app import DEFAULT_STOP_TIMEOUT_S, STOP_TIMEOUT_EXIT_CODE, Projection
from projections.processing import BatchProjector
from schemas import Envelope

REPO = Path(__file__).resolve().parents[2]
PARTITIONS = 4
# Short sessions so that a killed worker's partitions move on within seconds.
FAST_GROUP = {
    "broker_session_timeout": 6.0,
    "broker_heartbeat_interval": 1.0,
    "broker_rebalance_timeout": 10.0,
}


# -- test doubles -----------------------------------------------------------------------


class InMemoryBatchProjector:
    """The projector contract in memory: applied records and checkpoints move together."""

    def __init__(self) -> None:
        self.applied: list[LogRecord] = []
        self.published = 0
        self._checkpoints: dict[str, dict[int, int]] = {}
        self._lock = threading.Lock()

    def checkpoints(self, topic: str) -> dict[int, int]:
        with self._lock:
            return dict(self._checkpoints.get(topic, {}))

    def apply_batch(self, topic: str, records: Sequence[LogRecord]) -> int:
        with self._lock:
            nexts = dict(self._checkpoints.get(topic, {}))
            fresh = _fresh(records, nexts)
            self.applied.extend(fresh)
            self._checkpoints[topic] = nexts
            return len(fresh)

    def publish_outbox(self) -> int:
        return 0


def _fresh(records: Sequence[LogRecord], nexts: dict[int, int]) -> list[LogRecord]:
    """The records at or after their partition's checkpoint; advances ``nexts``."""
    fresh = []
    for record in sorted(records, key=lambda r: (r.partition, r.offset)):
        if record.offset >= nexts.get(record.partition, 0):
            fresh.append(record)
            nexts[record.partition] = record.offset + 1
    return fresh


class SqliteBatchProjector:
    """The projector contract on one SQLite file, shareable by worker processes.

    ``apply_batch`` takes the write lock first (``BEGIN IMMEDIATE``), so concurrent
    workers serialize and each sees the other's checkpoints. ``applied`` has no unique
    constraint on purpose: a double application must show up as a duplicate row.
    """

    def __init__(self, path: Path, *, apply_delay_s: float = 0.0) -> None:
        self.path = path
        self.apply_delay_s = apply_delay_s
        with closing(self._connect()) as db, db:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute(
                "CREATE TABLE IF NOT EXISTS checkpoints "
                "(topic TEXT, partition INTEGER, next_offset INTEGER, "
                "PRIMARY KEY (topic, partition))"
            )
            db.execute(
                "CREATE TABLE IF NOT EXISTS applied "
                "(topic TEXT, partition INTEGER, offset INTEGER, event_key BLOB, pid INTEGER)"
            )

    def _connect(self) -> sqlite3.Connection:
        return sqlite3.connect(self.path, timeout=60, isolation_level=None)

    def checkpoints(self, topic: str) -> dict[int, int]:
        with closing(self._connect()) as db:
            rows = db.execute(
                "SELECT partition, next_offset FROM checkpoints WHERE topic = ?", (topic,)
            )
            return {int(p): int(o) for p, o in rows}

    def apply_batch(self, topic: str, records: Sequence[LogRecord]) -> int:
        with closing(self._connect()) as db:
            db.execute("BEGIN IMMEDIATE")
            try:
                nexts = {
                    int(p): int(o)
                    for p, o in db.execute(
                        "SELECT partition, next_offset FROM checkpoints WHERE topic = ?", (topic,)
                    )
                }
                fresh = _fresh(records, nexts)
                db.executemany(
                    "INSERT INTO applied VALUES (?, ?, ?, ?, ?)",
                    [(topic, r.partition, r.offset, r.key, os.getpid()) for r in fresh],
                )
                db.executemany(
                    "INSERT INTO checkpoints VALUES (?, ?, ?) ON CONFLICT (topic, partition) "
                    "DO UPDATE SET next_offset = excluded.next_offset",
                    [(topic, p, o) for p, o in nexts.items()],
                )
                time.sleep(self.apply_delay_s)  # widen the window for kill -9 mid-transaction
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
            return len(fresh)

    def publish_outbox(self) -> int:
        return 0

    def applied(self, topic: str) -> list[tuple[int, int]]:
        with closing(self._connect()) as db:
            rows = db.execute("SELECT partition, offset FROM applied WHERE topic = ?", (topic,))
            return [(int(p), int(o)) for p, o in rows]

    def in_transaction(self) -> bool:
        """Whether a worker holds the write lock, i.e. is inside ``apply_batch``."""
        db = sqlite3.connect(self.path, timeout=0, isolation_level=None)
        try:
            db.execute("BEGIN IMMEDIATE")
            db.execute("ROLLBACK")
            return False
        except sqlite3.OperationalError:  # database is locked
            return True
        finally:
            db.close()

    def applied_more_than(self, topic: str, count: int) -> bool:
        with closing(self._connect()) as db:
            row = db.execute("SELECT count(*) FROM applied WHERE topic = ?", (topic,)).fetchone()
            return int(row[0]) > count

    def applied_by_pid(self, topic: str) -> dict[int, int]:
        with closing(self._connect()) as db:
            rows = db.execute(
                "SELECT pid, count(*) FROM applied WHERE topic = ? GROUP BY pid", (topic,)
            )
            return {int(pid): int(n) for pid, n in rows}


# -- worker subprocesses ----------------------------------------------------------------


def _worker_main() -> None:
    """Entry point of a worker subprocess: ``run_worker`` with the SQLite double."""
    from projections.faust_app import run_worker

    parser = argparse.ArgumentParser()
    parser.add_argument("--db", type=Path, required=True)
    parser.add_argument("--group", required=True)
    parser.add_argument("--batch-size", type=int, default=500)
    parser.add_argument("--apply-delay", type=float, default=0.0)
    parser.add_argument("--stop-timeout", type=float, default=DEFAULT_STOP_TIMEOUT_S)
    parser.add_argument("--build-delay", type=float, default=0.0)
    args = parser.parse_args()

    def factory(settings: Settings) -> BatchProjector:
        if args.build_delay:  # a projector slow to start; the test waits for the marker
            (args.db.parent / f"building-{os.getpid()}").touch()
            time.sleep(args.build_delay)
        return SqliteBatchProjector(args.db, apply_delay_s=args.apply_delay)

    run_worker(
        Settings(),
        factory,
        group_id=args.group,
        batch_size=args.batch_size,
        batch_wait=0.2,
        log_level="info",
        options=FAST_GROUP,
        stop_timeout=args.stop_timeout,
    )


class Workers:
    """Starts and stops worker subprocesses of one consumer group."""

    def __init__(self, services: TestServices, topic: str, db: Path, logs: Path) -> None:
        self.env = {
            **os.environ,
            "CRM_KAFKA_BOOTSTRAP": services.kafka_bootstrap,
            "CRM_TOPIC": topic,
            "CRM_DATA_DIR": str(logs),
            "PYTHONUNBUFFERED": "1",
        }
        self.db, self.logs, self.group = db, logs, f"group-{topic}"
        self.started: list[subprocess.Popen[bytes]] = []

    def start(
        self,
        *,
        apply_delay: float = 0.0,
        stop_timeout: float = 20,  # below the tests' 30 s waits: a hung stop shows its stacks
        build_delay: float = 0.0,
    ) -> subprocess.Popen[bytes]:
        log = (self.logs / f"worker-{len(self.started)}.log").open("wb")
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tests.integration.test_faust_processor",
                *("--db", str(self.db), "--group", self.group, "--apply-delay", str(apply_delay)),
                *("--stop-timeout", str(stop_timeout), "--build-delay", str(build_delay)),
            ],
            cwd=REPO,
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        self.started.append(proc)
        return proc

    def stop_all(self) -> None:
        for proc in self.started:
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)

    def tail(self) -> str:
        return "\n".join(
            f"--- {path.name}\n" + path.read_text(errors="replace")[-3000:]
            for path in sorted(self.logs.glob("worker-*.log"))
        )


@contextmanager
def workers(services: TestServices, topic: str, tmp_path: Path) -> Iterator[Workers]:
    group = Workers(services, topic, tmp_path / "projections.sqlite3", tmp_path)
    try:
        yield group
    finally:
        group.stop_all()


def append_in_background(
    log: KafkaEventLog, count: int, *, batch: int = 200, pause_s: float = 0.05
) -> tuple[threading.Thread, list[Position]]:
    """Append ``count`` synthetic events in batches from a thread; positions collect."""
    positions: list[Position] = []
    events = list(SyntheticTouchpoints(customers=500, seed=7).events(count))

    def run() -> None:
        for i in range(0, len(events), batch):
            positions.extend(log.append(events[i : i + batch]))
            time.sleep(pause_s)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, positions


def wait_until(condition: Callable[[], bool], what: str, timeout: float, group: Workers) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:.0f}s waiting for {what}\n{group.tail()}")
        time.sleep(0.2)


def assert_exactly_once(
    projector: SqliteBatchProjector, topic: str, positions: Sequence[Position]
) -> None:
    applied = projector.applied(topic)
    expected = {(p.partition, p.offset) for p in positions}
    duplicates = len(applied) - len(set(applied))
    assert duplicates == 0, f"{duplicates} records applied more than once"
    assert set(applied) == expected
    nexts = projector.checkpoints(topic)
    assert nexts == {p: max(o for q, o in expected if q == p) + 1 for p in {q for q, _ in expected}}


@pytest.fixture
def topic_log(services: TestServices) -> Iterator[KafkaEventLog]:
    log = KafkaEventLog(
        services.kafka_bootstrap, f"faust-{uuid.uuid4().hex[:8]}", partitions=PARTITIONS
    )
    yield log
    log.close()


# -- tests ------------------------------------------------------------------------------


class FlakyProjector(InMemoryBatchProjector):
    """Fails its first ``failures`` batches, as a projector does while the database is down."""

    def __init__(self, failures: int) -> None:
        super().__init__()
        self.failures = failures

    def apply_batch(self, topic: str, records: Sequence[LogRecord]) -> int:
        if self.failures:
            self.failures -= 1
            raise ConnectionError("database unavailable: secret@example.com")
        return super().apply_batch(topic, records)


def test_a_failing_batch_is_retried_with_backoff_never_skipped_nor_logged(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr("projections.faust_app.FIRST_RETRY_S", 0.01)
    projector = FlakyProjector(failures=3)
    projection = Projection(projector, "t")
    records = [LogRecord("t", 0, o, 0, b"k", b'{"email": "secret@example.com"}') for o in range(5)]
    try:
        assert asyncio.run(projection.apply(records)) == 5
        assert asyncio.run(projection.apply(records)) == 0  # redelivered: skipped
        assert asyncio.run(projection.next_offsets([TP("t", 0), TP("t", 1), TP("u", 0)])) == {
            TP("t", 0): 5,
            TP("t", 1): 0,
        }
    finally:
        projection.close()
    assert projector.applied == records
    failures = [r for r in caplog.records if "failed (ConnectionError" in r.getMessage()]
    assert len(failures) == 3
    assert "secret" not in caplog.text


def test_a_worker_applies_every_event_once_ignoring_kafka_commits_and_stops_on_sigterm(
    services: TestServices, topic_log: KafkaEventLog, tmp_path: Path
) -> None:
    with workers(services, topic_log.topic, tmp_path) as group:
        projector = SqliteBatchProjector(group.db)
        positions = [p for i in range(5) for p in topic_log.append(_events(1_000, seed=i))]
        # The group's Kafka offsets claim everything was consumed: a worker that trusted
        # them would skip all 5,000 events. The (empty) database checkpoints must win.
        commit_offsets(services, group.group, topic_log.topic, topic_log.end_offsets())
        started = time.monotonic()
        worker = group.start()
        wait_until(
            lambda: len(projector.applied(topic_log.topic)) >= len(positions),
            "the first 5,000 events",
            60,
            group,
        )
        first_s = time.monotonic() - started
        positions += topic_log.append(_events(1_000, seed=99))  # arrives while running
        wait_until(
            lambda: len(projector.applied(topic_log.topic)) >= len(positions),
            "events appended while running",
            30,
            group,
        )
        # Kafka's offsets follow the applied batches (for lag tools), though never read back
        ends = topic_log.end_offsets()
        wait_until(
            lambda: committed_offsets(services, group.group, topic_log.topic) == ends,
            "the group's Kafka offsets at the end of the topic",
            30,
            group,
        )
        worker.send_signal(signal.SIGTERM)
        assert worker.wait(30) == 0, group.tail()
        assert_exactly_once(projector, topic_log.topic, positions)
        print(f"\n[figures] faust worker: start + 5,000 events applied in {first_s:.1f}s")


def committed_offsets(services: TestServices, group: str, topic: str) -> dict[int, int]:
    consumer = KafkaConsumer(
        bootstrap_servers=services.kafka_bootstrap, group_id=group, enable_auto_commit=False
    )
    try:
        tps = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or ()]
        return {tp.partition: consumer.committed(tp) or 0 for tp in tps}
    finally:
        consumer.close()


def commit_offsets(services: TestServices, group: str, topic: str, offsets: dict[int, int]) -> None:
    consumer = KafkaConsumer(
        bootstrap_servers=services.kafka_bootstrap, group_id=group, enable_auto_commit=False
    )
    try:
        consumer.assign([TopicPartition(topic, p) for p in offsets])
        consumer.commit(
            {TopicPartition(topic, p): OffsetAndMetadata(o, "", -1) for p, o in offsets.items()}
        )
    finally:
        consumer.close()


def test_kill_9_mid_stream_and_restart_loses_and_repeats_nothing(
    services: TestServices, topic_log: KafkaEventLog, tmp_path: Path
) -> None:
    with workers(services, topic_log.topic, tmp_path) as group:
        projector = SqliteBatchProjector(group.db)
        writer, positions = append_in_background(topic_log, 12_000)
        worker = group.start(apply_delay=0.05)
        for round_ in range(3):
            applied_before = len(projector.applied(topic_log.topic))
            wait_until(
                partial(projector.applied_more_than, topic_log.topic, applied_before + 500),
                f"progress before kill #{round_ + 1}",
                60,
                group,
            )
            worker.kill()  # SIGKILL: mid-batch, maybe mid-transaction
            worker.wait(10)
            worker = group.start(apply_delay=0.05)
        writer.join(120)
        assert not writer.is_alive()
        wait_until(
            lambda: len(projector.applied(topic_log.topic)) >= len(positions),
            "every event after the last restart",
            60,
            group,
        )
        time.sleep(1)  # a stray duplicate would land now
        assert_exactly_once(projector, topic_log.topic, positions)
        assert len(projector.applied_by_pid(topic_log.topic)) == 4  # each worker did work


def test_a_second_worker_joining_and_leaving_mid_stream_keeps_exactly_once(
    services: TestServices, topic_log: KafkaEventLog, tmp_path: Path
) -> None:
    with workers(services, topic_log.topic, tmp_path) as group:
        projector = SqliteBatchProjector(group.db)
        writer, positions = append_in_background(topic_log, 12_000, batch=100, pause_s=0.2)
        first = group.start(apply_delay=0.02)
        wait_until(
            lambda: len(projector.applied(topic_log.topic)) > 1_000, "first progress", 60, group
        )
        second = group.start(apply_delay=0.02)
        wait_until(
            lambda: second.pid in projector.applied_by_pid(topic_log.topic),
            "the second worker to take partitions",
            60,
            group,
        )
        applied_by_second = projector.applied_by_pid(topic_log.topic)[second.pid]
        wait_until(
            lambda: projector.applied_by_pid(topic_log.topic)[second.pid] > applied_by_second + 300,
            "the second worker to keep going",
            30,
            group,
        )
        second.send_signal(signal.SIGTERM)  # leaves the group: the first takes over
        assert second.wait(30) == 0, group.tail()
        writer.join(120)
        assert not writer.is_alive()
        wait_until(
            lambda: len(projector.applied(topic_log.topic)) >= len(positions),
            "every event after the second worker left",
            60,
            group,
        )
        time.sleep(1)
        assert first.poll() is None, group.tail()
        assert_exactly_once(projector, topic_log.topic, positions)


def test_a_worker_signalled_while_starting_stops_cleanly_before_joining(
    services: TestServices, topic_log: KafkaEventLog, tmp_path: Path
) -> None:
    with workers(services, topic_log.topic, tmp_path) as group:
        topic_log.append(_events(100, seed=6))
        worker, impatient = group.start(build_delay=5), group.start(build_delay=120)
        for proc in (worker, impatient):
            building = tmp_path / f"building-{proc.pid}"
            wait_until(building.exists, "the projector being built", 60, group)
        worker.send_signal(signal.SIGTERM)
        assert worker.wait(30) == 0, group.tail()  # not killed by the signal (-15)
        log = (group.logs / "worker-0.log").read_text(errors="replace")
        assert "stopped by a signal while starting" in log
        assert "Traceback" not in log
        assert SqliteBatchProjector(group.db).applied(topic_log.topic) == []
        # a second signal does not wait for the build: it acts at once, as the default does
        impatient.send_signal(signal.SIGTERM)
        time.sleep(0.5)
        impatient.send_signal(signal.SIGTERM)
        assert impatient.wait(10) == -signal.SIGTERM


def test_a_stop_past_its_deadline_exits_with_the_stacks_and_loses_nothing(
    services: TestServices, topic_log: KafkaEventLog, tmp_path: Path
) -> None:
    with workers(services, topic_log.topic, tmp_path) as group:
        projector = SqliteBatchProjector(group.db)
        positions = topic_log.append(_events(1_000, seed=5))
        stuck = group.start(apply_delay=300, stop_timeout=3)  # a batch that never ends
        wait_until(projector.in_transaction, "the worker inside a batch", 60, group)
        stuck.send_signal(signal.SIGTERM)
        signalled = time.monotonic()
        assert stuck.wait(30) == STOP_TIMEOUT_EXIT_CODE, group.tail()
        took = time.monotonic() - signalled
        assert 3 <= took < 15, took
        log = (group.logs / "worker-0.log").read_text(errors="replace")
        assert "did not stop within 3 s" in log
        assert "in apply_batch" in log  # the stack of the thread it waited for
        assert projector.applied(topic_log.topic) == []  # the batch rolled back

        group.start()  # the next worker applies everything, once
        wait_until(
            lambda: len(projector.applied(topic_log.topic)) >= len(positions),
            "every event after the cut-short stop",
            60,
            group,
        )
        assert_exactly_once(projector, topic_log.topic, positions)


def _events(count: int, *, seed: int) -> list[Envelope]:
    return list(SyntheticTouchpoints(customers=300, seed=seed).events(count))


if __name__ == "__main__":
    _worker_main()
