"""The embedded event log: Kafka's semantics in one SQLite file, for the zero-server mode.

Each topic has a fixed partition count; a record's partition comes from its key exactly
as in Kafka, offsets are dense per partition from 0, and timestamps are append time.
Appends run in one ``BEGIN IMMEDIATE`` transaction with ``synchronous=FULL``, so an
append that returned survives a crash, and several processes may append to one file.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Collection, Iterator, Mapping, Sequence
from datetime import datetime
from pathlib import Path

import orjson

from events.codec import partition_for, to_record
from events.log import (
    LogRecord,
    OutgoingRecord,
    Position,
    check_read_args,
    to_epoch_ms,
)
from schemas import Envelope

_SCHEMA = """
CREATE TABLE IF NOT EXISTS topics (
    name TEXT PRIMARY KEY,
    partitions INTEGER NOT NULL CHECK (partitions > 0)
);
CREATE TABLE IF NOT EXISTS records (
    topic TEXT NOT NULL,
    partition INTEGER NOT NULL,
    offset INTEGER NOT NULL,
    timestamp_ms INTEGER NOT NULL,
    key BLOB,
    value BLOB NOT NULL,
    headers BLOB,
    PRIMARY KEY (topic, partition, offset)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS records_by_time ON records (topic, partition, timestamp_ms);
"""

_READ_CHUNK = 5_000


class SqliteEventLog:
    """An :class:`events.log.EventLog` stored in a SQLite file (``path``)."""

    def __init__(self, path: Path, topic: str, *, partitions: int = 6) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._path = path
        self._topic = topic
        self._lock = threading.Lock()
        self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=30)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(_SCHEMA)
        self._partitions = self._ensure_topic(partitions)

    def _ensure_topic(self, partitions: int) -> int:
        with self._lock:
            self._db.execute(
                "INSERT OR IGNORE INTO topics (name, partitions) VALUES (?, ?)",
                (self._topic, partitions),
            )
            row = self._db.execute(
                "SELECT partitions FROM topics WHERE name = ?", (self._topic,)
            ).fetchone()
        return int(row[0])  # an existing topic keeps its partition count, as in Kafka

    @property
    def topic(self) -> str:
        return self._topic

    def partition_count(self) -> int:
        return self._partitions

    def append(self, events: Sequence[Envelope]) -> list[Position]:
        return self.append_records(self.records_of(events))

    def records_of(self, events: Sequence[Envelope]) -> list[OutgoingRecord]:
        return [to_record(event) for event in events]

    def append_records(self, records: Sequence[OutgoingRecord]) -> list[Position]:
        if not records:
            return []
        now_ms = int(time.time() * 1000)
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                next_offset = self._next_offsets()
                positions: list[Position] = []
                rows = []
                for record in records:
                    partition = self._partition(record.key)
                    offset = next_offset[partition]
                    next_offset[partition] = offset + 1
                    positions.append(Position(partition, offset))
                    headers = orjson.dumps([[k, v.decode("latin-1")] for k, v in record.headers])
                    rows.append(
                        (self._topic, partition, offset, now_ms, record.key, record.value, headers)
                    )
                self._db.executemany("INSERT INTO records VALUES (?, ?, ?, ?, ?, ?, ?)", rows)
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
        return positions

    def _partition(self, key: bytes | None) -> int:
        # Kafka spreads keyless records; a stable choice keeps the embedded log simple.
        return 0 if key is None else partition_for(key, self._partitions)

    def _next_offsets(self) -> dict[int, int]:
        rows = self._db.execute(
            "SELECT partition, MAX(offset) + 1 FROM records WHERE topic = ? GROUP BY partition",
            (self._topic,),
        ).fetchall()
        ends = dict.fromkeys(range(self._partitions), 0)
        ends.update({int(p): int(o) for p, o in rows})
        return ends

    def end_offsets(self) -> dict[int, int]:
        with self._lock:
            return self._next_offsets()

    def offsets_for_time(self, when: datetime) -> dict[int, int]:
        since_ms = to_epoch_ms(when)
        with self._lock:
            ends = self._next_offsets()
            found = self._db.execute(
                "SELECT partition, MIN(offset) FROM records"
                " WHERE topic = ? AND timestamp_ms >= ? GROUP BY partition",
                (self._topic, since_ms),
            ).fetchall()
        ends.update({int(p): int(o) for p, o in found})
        return ends

    def read(
        self,
        *,
        from_offsets: Mapping[int, int] | None = None,
        from_time: datetime | None = None,
        partitions: Collection[int] | None = None,
        until_offsets: Mapping[int, int] | None = None,
    ) -> Iterator[LogRecord]:
        check_read_args(from_offsets, from_time)
        ends = self.end_offsets()
        for p, until in (until_offsets or {}).items():
            if p in ends:
                ends[p] = min(ends[p], until)
        starts = self.offsets_for_time(from_time) if from_time else dict(from_offsets or {})
        for partition in sorted(partitions if partitions is not None else ends):
            if partition not in ends:
                raise ValueError(f"partition {partition} does not exist in {self._topic!r}")
            offset, end = max(0, starts.get(partition, 0)), ends[partition]
            while offset < end:
                with self._lock:
                    rows = self._db.execute(
                        "SELECT offset, timestamp_ms, key, value, headers FROM records"
                        " WHERE topic = ? AND partition = ? AND offset >= ? AND offset < ?"
                        " ORDER BY offset LIMIT ?",
                        (self._topic, partition, offset, end, _READ_CHUNK),
                    ).fetchall()
                if not rows:
                    break
                for off, ts, key, value, headers in rows:
                    yield LogRecord(
                        self._topic,
                        partition,
                        off,
                        ts,
                        key,
                        value,
                        tuple((k, v.encode("latin-1")) for k, v in orjson.loads(headers)),
                    )
                offset = rows[-1][0] + 1

    def close(self) -> None:
        with self._lock:
            self._db.close()
