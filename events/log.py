"""The event log port: what every adapter (Kafka, embedded SQLite) promises.

Contract (checked by ``tests/contract/event_log.py`` against every adapter):

* ``append`` returns only after every record is durably stored (Kafka: ``acks=all``),
  and returns one :class:`Position` per record, in input order. If it raises, the
  caller must assume none of the batch is stored; re-appending the same events (same
  ``event_id``) is safe because consumers dedupe on ``event_id``.
* A record's partition depends only on its key and the partition count (Kafka's murmur2
  partitioner), so one key's records stay in append order in one partition, and the
  same key lands in the same partition in every adapter.
* ``read`` yields records from a start (beginning, per-partition offsets, or a time) up
  to the end of the log *as it was when the read started*, in offset order within each
  partition, then stops. Records appended after the read started are not yielded.
* The log is never compacted or expired: offsets are dense from 0 in the embedded log,
  and may have gaps in Kafka (transaction markers), so callers track ``offset + 1``.
"""

from __future__ import annotations

from collections.abc import Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Protocol, runtime_checkable

from schemas import Envelope

Headers = tuple[tuple[str, bytes], ...]


@dataclass(frozen=True, slots=True)
class Position:
    """Where a record sits in the log."""

    partition: int
    offset: int


@dataclass(frozen=True, slots=True)
class OutgoingRecord:
    """Bytes to append: what ``append`` builds from an event, or a raw dead letter."""

    key: bytes | None
    value: bytes
    headers: Headers = field(default_factory=tuple)


@dataclass(frozen=True, slots=True)
class LogRecord:
    """A record read back from the log."""

    topic: str
    partition: int
    offset: int
    timestamp_ms: int
    key: bytes | None
    value: bytes
    headers: Headers = ()

    @property
    def position(self) -> Position:
        return Position(self.partition, self.offset)

    @property
    def timestamp(self) -> datetime:
        return datetime.fromtimestamp(self.timestamp_ms / 1000, tz=UTC)

    def header(self, name: str) -> bytes | None:
        for key, value in self.headers:
            if key == name:
                return value
        return None


class LogError(RuntimeError):
    """The log could not do what was asked; the message says why."""


class LogUnavailableError(LogError):
    """The log's servers did not answer in time: nothing of the failed call is acknowledged."""


class LogConfigError(LogError):
    """The topic exists with settings that break the log's guarantees."""


@runtime_checkable
class EventLog(Protocol):
    """An append-only, partitioned, never-expiring log of events."""

    @property
    def topic(self) -> str: ...

    def partition_count(self) -> int: ...

    def append(self, events: Sequence[Envelope]) -> list[Position]:
        """Serialize, key and durably append events; see the module contract."""
        ...

    def records_of(self, events: Sequence[Envelope]) -> list[OutgoingRecord]:
        """The records ``append`` would write for ``events`` (serialized, keyed, sealed
        on a door's log): CPU work, no I/O. ``append(events)`` is
        ``append_records(records_of(events))``."""
        ...

    def append_records(self, records: Sequence[OutgoingRecord]) -> list[Position]:
        """Durably append pre-serialized records (dead letters, replays of raw bytes)."""
        ...

    def read(
        self,
        *,
        from_offsets: Mapping[int, int] | None = None,
        from_time: datetime | None = None,
        partitions: Collection[int] | None = None,
        until_offsets: Mapping[int, int] | None = None,
    ) -> Iterator[LogRecord]:
        """Yield records from the start given (default: the beginning) up to the current end.

        ``from_offsets`` maps partition to the first offset to read (missing partitions
        start at the beginning); ``from_time`` starts each partition at its first record
        appended at or after that time. At most one of the two may be given.
        ``until_offsets`` stops each partition it names before that offset.
        """
        ...

    def end_offsets(self) -> dict[int, int]:
        """The next offset to be written, per partition."""
        ...

    def offsets_for_time(self, when: datetime) -> dict[int, int]:
        """Per partition, the first offset appended at or after ``when`` (else the end)."""
        ...

    def close(self) -> None: ...


def check_read_args(from_offsets: object, from_time: datetime | None) -> None:
    if from_offsets is not None and from_time is not None:
        raise ValueError("give from_offsets or from_time, not both")
    if from_time is not None and from_time.tzinfo is None:
        raise ValueError("from_time must be timezone-aware (e.g. 2026-01-31T00:00:00+00:00)")


def to_epoch_ms(when: datetime) -> int:
    return int(when.timestamp() * 1000)
