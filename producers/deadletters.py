"""Dead letters: inspect them, and replay the ones today's contract accepts.

A dead letter is a record of the dead-letter topic holding the *original bytes* of
input that could not be used (an undecodable record met by a projection, an invalid
request body at the gateway), with headers ``crm-error`` (why) and ``crm-origin``
(where from: ``topic/partition/offset``, or the gateway's request id).

Replay re-validates a dead letter with the current schemas and upcasters (so a
letter refused before an upcaster existed passes now) and appends its events to the
event topic **with their original event ids**: consumers dedupe on them, so replaying
twice, or replaying something that had got through after all, changes nothing. After
the append, a small marker record goes to the dead-letter topic with header
``crm-replayed-from: P:O``; listings use it to show what was replayed, and replay skips
letters already marked. (If the marker write fails after the append, a second replay
re-appends the same ids: harmless.)
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal
from uuid import UUID

import orjson

from events.codec import decode_event
from events.log import EventLog, Headers, LogRecord, OutgoingRecord, Position
from schemas import Envelope, EventValidationError, FieldError, parse_event

ERROR_HEADER = "crm-error"
ORIGIN_HEADER = "crm-origin"
REPLAYED_FROM_HEADER = "crm-replayed-from"
MAX_ERROR_LENGTH = 2_000


def parse_position(text: str) -> Position:
    """``"2:17"`` → ``Position(2, 17)``; raises ``ValueError`` with the expected form."""
    partition, sep, offset = text.strip().partition(":")
    try:
        if not sep:
            raise ValueError
        position = Position(int(partition), int(offset))
    except ValueError:
        raise ValueError(f"{text!r} is not a position; use PARTITION:OFFSET, e.g. 0:42") from None
    if position.partition < 0 or position.offset < 0:
        raise ValueError(f"{text!r}: partition and offset are not negative")
    return position


def format_position(position: Position) -> str:
    return f"{position.partition}:{position.offset}"


def dead_letter_record(
    value: bytes,
    *,
    error: str,
    origin: str,
    key: bytes | None = None,
    headers: Headers = (),
) -> OutgoingRecord:
    """The record a writer (projection store, gateway) appends for unusable input."""
    return OutgoingRecord(
        key,
        value,
        (
            *headers,
            (ERROR_HEADER, error[:MAX_ERROR_LENGTH].encode()),
            (ORIGIN_HEADER, origin.encode()),
        ),
    )


@dataclass(frozen=True, slots=True)
class ReplayMarker:
    """The record that says a dead letter was replayed, and where its events went."""

    position: Position
    timestamp: datetime
    dead_letter: Position
    topic: str
    event_ids: tuple[str, ...]
    appended_at: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class DeadLetter:
    position: Position
    timestamp: datetime
    key: bytes | None
    value: bytes
    headers: Headers
    replayed: ReplayMarker | None = None

    @property
    def error(self) -> str:
        return _last_header(self.headers, ERROR_HEADER) or "(no crm-error header)"

    @property
    def origin(self) -> str:
        return _last_header(self.headers, ORIGIN_HEADER) or "?"

    @property
    def size(self) -> int:
        return len(self.value)

    def json(self) -> Any:
        """The value parsed as JSON; raises ``ValueError`` if it is not JSON."""
        return orjson.loads(self.value)


def _last_header(headers: Headers, name: str) -> str | None:
    """A header's newest value (a letter dead-lettered twice carries two)."""
    found = [value for key, value in headers if key == name]
    return found[-1].decode("utf-8", "replace") if found else None


def _marker(record: LogRecord) -> ReplayMarker | None:
    source = record.header(REPLAYED_FROM_HEADER)
    if source is None:
        return None
    try:
        body = orjson.loads(record.value)
        replayed_from = parse_position(source.decode())
    except ValueError:  # a damaged marker marks nothing, and is no dead letter either
        body, replayed_from = {}, Position(-1, -1)
    if not isinstance(body, dict):
        body = {}
    return ReplayMarker(
        position=record.position,
        timestamp=record.timestamp,
        dead_letter=replayed_from,
        topic=str(body.get("topic", "?")),
        event_ids=tuple(body.get("event_ids", ())),
        appended_at=tuple(body.get("appended_at", ())),
    )


def read_dead_letters(dlq: EventLog, *, since: datetime | None = None) -> list[DeadLetter]:
    """Dead letters appended at or after ``since`` (default: all), oldest first, each
    with its replay marker if it has one. Markers themselves are not listed."""
    letters: list[DeadLetter] = []
    markers: dict[Position, ReplayMarker] = {}
    for record in dlq.read(from_time=since):
        marker = _marker(record)
        if marker is not None:
            markers.setdefault(marker.dead_letter, marker)
        else:
            letters.append(
                DeadLetter(
                    record.position, record.timestamp, record.key, record.value, record.headers
                )
            )
    letters = [_with_marker(letter, markers.get(letter.position)) for letter in letters]
    return sorted(letters, key=lambda d: (d.timestamp, d.position.partition, d.position.offset))


def _with_marker(letter: DeadLetter, marker: ReplayMarker | None) -> DeadLetter:
    if marker is None:
        return letter
    return DeadLetter(
        letter.position, letter.timestamp, letter.key, letter.value, letter.headers, marker
    )


def get_dead_letter(dlq: EventLog, position: Position) -> DeadLetter | None:
    """One dead letter (with its replay marker), or None if there is none there."""
    if position.partition >= dlq.partition_count():
        return None
    records = dlq.read(
        from_offsets={position.partition: position.offset},
        partitions=[position.partition],
        until_offsets={position.partition: position.offset + 1},
    )
    record = next(iter(records), None)
    if record is None or record.offset != position.offset or _marker(record) is not None:
        return None
    letter = DeadLetter(record.position, record.timestamp, record.key, record.value, record.headers)
    for later in dlq.read(from_time=record.timestamp):
        marker = _marker(later)
        if marker is not None and marker.dead_letter == position:
            return _with_marker(letter, marker)
    return letter


def revalidate(value: bytes) -> list[Envelope]:
    """Decode a dead letter's bytes with today's contract: one event, or a JSON array of
    events (a whole rejected request). Raises ``EventValidationError`` naming each
    problem (``3.payload.total: ...`` for item 3 of an array)."""
    try:
        data: Any = orjson.loads(value)
    except orjson.JSONDecodeError:
        return [decode_event(value)]  # raises with the JSON error
    if not isinstance(data, list):
        return [decode_event(value)]
    events, errors = [], []
    for index, item in enumerate(data):
        try:
            events.append(parse_event(item))
        except EventValidationError as exc:
            errors += [
                FieldError(f"{index}.{e.loc}" if e.loc else str(index), e.msg, e.kind)
                for e in exc.errors
            ]
    if not data:
        errors.append(FieldError("", "an empty array holds no event", "empty"))
    if errors:
        raise EventValidationError(errors)
    return events


Status = Literal["replayed", "would replay", "still invalid", "already replayed", "not found"]


@dataclass
class ReplayOutcome:
    position: Position
    status: Status
    event_ids: list[UUID] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    appended_at: list[Position] = field(default_factory=list)
    marker: ReplayMarker | None = None


def replay(
    dlq: EventLog,
    events_log: EventLog,
    positions: Sequence[Position] | None = None,
    *,
    dry_run: bool = False,
) -> list[ReplayOutcome]:
    """Replay the dead letters at ``positions`` (None: every one not yet replayed).

    Valid letters' events are appended to ``events_log`` in one batch (acknowledged),
    then one marker per letter goes to ``dlq``. Invalid letters are reported with
    today's errors and left as they are.
    """
    letters = {letter.position: letter for letter in read_dead_letters(dlq)}
    wanted: Iterable[Position] = (
        positions
        if positions is not None
        else [p for p, letter in letters.items() if letter.replayed is None]
    )
    outcomes: list[ReplayOutcome] = []
    to_append: list[tuple[ReplayOutcome, list[Envelope]]] = []
    for position in dict.fromkeys(wanted):
        outcome, events = _judge(position, letters.get(position), dry_run)
        outcomes.append(outcome)
        if events:
            to_append.append((outcome, events))
    if dry_run or not to_append:
        return outcomes
    appended = iter(events_log.append([event for _, events in to_append for event in events]))
    markers = []
    for outcome, events in to_append:
        outcome.appended_at = [next(appended) for _ in events]
        markers.append(_marker_record(outcome, events_log.topic))
    dlq.append_records(markers)
    return outcomes


def _judge(
    position: Position, letter: DeadLetter | None, dry_run: bool
) -> tuple[ReplayOutcome, list[Envelope]]:
    if letter is None:
        return ReplayOutcome(position, "not found"), []
    if letter.replayed is not None:
        ids = [UUID(i) for i in letter.replayed.event_ids]
        return ReplayOutcome(position, "already replayed", ids, marker=letter.replayed), []
    try:
        events = revalidate(letter.value)
    except EventValidationError as exc:
        return ReplayOutcome(position, "still invalid", errors=[str(e) for e in exc.errors]), []
    status: Status = "would replay" if dry_run else "replayed"
    return ReplayOutcome(position, status, [e.event_id for e in events]), events


def _marker_record(outcome: ReplayOutcome, topic: str) -> OutgoingRecord:
    source = format_position(outcome.position)
    body = {
        "replayed_from": source,
        "topic": topic,
        "event_ids": [str(i) for i in outcome.event_ids],
        "appended_at": [format_position(p) for p in outcome.appended_at],
        "replayed_at": datetime.now(UTC).isoformat(),
    }
    return OutgoingRecord(None, orjson.dumps(body), ((REPLAYED_FROM_HEADER, source.encode()),))


def first_line(text: str) -> str:
    return next(iter(text.splitlines()), "")


def pretty_value(letter: DeadLetter) -> str:
    """The letter's bytes for humans: indented JSON if it is JSON, else the text."""
    try:
        return orjson.dumps(letter.json(), option=orjson.OPT_INDENT_2).decode()
    except (ValueError, TypeError):
        return letter.value.decode("utf-8", "replace")
