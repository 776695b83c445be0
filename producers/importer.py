"""Bulk import of legacy files (CSV, JSON Lines) as events, in bounded memory.

The file is streamed row by row; valid events are appended in batches of
``batch_size`` (one ``EventLog.append`` each, acknowledged before the next), rejected
rows go to a rejects file as JSON Lines ``{line, reason, errors, row}`` and never stop
the import. Memory holds one batch, whatever the file's size.

**Re-runs publish no duplicates.** Each event id is
``uuid5(IMPORT_NAMESPACE, "{source}|{event_type}|{natural key values}")``, so importing
the same file again, or resuming an interrupted run (``resume_from_line``), appends
events whose ids are already in the log, and consumers dedupe on ``event_id``. Without
``natural_key`` the whole row is the key (identical rows are one event).
"""

from __future__ import annotations

import csv
import hashlib
import io
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import date, datetime, tzinfo
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import IO, Any, Final
from uuid import UUID, uuid5
from zoneinfo import ZoneInfo

import orjson
from pydantic import ValidationError

from events.log import EventLog, LogError
from producers.import_mapping import (
    FieldSpec,
    ImportMapping,
    ValueKind,
    check_columns,
    field_kind,
)
from schemas import CATALOG, Envelope, EventValidationError, FieldError, LineItem

IMPORT_NAMESPACE: Final = UUID("6b1f6f0e-2f0a-5c1e-9d3b-4c52d8a1e7a0")
"""Never change it: event ids of every past import depend on it."""

_TRUE = frozenset({"true", "t", "yes", "y", "1"})
_FALSE = frozenset({"false", "f", "no", "n", "0"})
_SAMPLE_REJECTS = 5
_PROGRESS_EVERY = 1_000


def import_event_id(source: str, event_type: str, key: list[str]) -> UUID:
    """The stable id of an imported row's event (``|`` and ``\\`` in values are escaped)."""
    values = "|".join(v.replace("\\", "\\\\").replace("|", "\\|") for v in key)
    return uuid5(IMPORT_NAMESPACE, f"{source}|{event_type}|{values}")


# --- reading rows ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Row:
    line: int
    """The (first) line of the row in the file, from 1; a CSV header is line 1."""
    data: dict[str, Any] | None
    raw: Any
    error: str | None = None


class RowReader(ABC):
    """Rows of a file and how many bytes have been read (for progress)."""

    header: list[str] | None = None

    def __init__(self, binary: IO[bytes]) -> None:
        self._binary = binary

    @property
    def bytes_read(self) -> int:
        return self._binary.tell()

    @abstractmethod
    def __iter__(self) -> Iterator[Row]: ...


class CsvRows(RowReader):
    def __init__(self, binary: IO[bytes], mapping: ImportMapping) -> None:
        super().__init__(binary)
        options = mapping.csv
        self._text = io.TextIOWrapper(binary, encoding=options.encoding, newline="")
        self._reader = csv.reader(
            self._text, delimiter=options.delimiter, quotechar=options.quotechar
        )
        self.header = [name.strip() for name in next(self._reader, [])]

    def __iter__(self) -> Iterator[Row]:
        header, reader = self.header or [], self._reader
        last = reader.line_num
        while True:
            try:
                values = next(reader)
            except StopIteration:
                return
            except csv.Error as exc:
                start, last = last + 1, reader.line_num
                yield Row(start, None, None, f"unreadable CSV: {exc}")
                continue
            start, last = last + 1, reader.line_num
            if not values:
                continue
            if len(values) != len(header):
                yield Row(
                    start,
                    None,
                    values,
                    f"row has {len(values)} fields, the header has {len(header)}",
                )
            else:
                data = dict(zip(header, values, strict=True))
                yield Row(start, data, data)


class JsonLinesRows(RowReader):
    def __iter__(self) -> Iterator[Row]:
        for number, line in enumerate(self._binary, start=1):
            if not line.strip():
                continue
            try:
                data = orjson.loads(line)
            except orjson.JSONDecodeError as exc:
                text = line.decode("utf-8", "replace").rstrip("\r\n")
                yield Row(number, None, text, f"malformed JSON: {exc}")
                continue
            if isinstance(data, dict):
                yield Row(number, data, data)
            else:
                yield Row(
                    number, None, data, f"a line should be a JSON object, not {type(data).__name__}"
                )


@contextmanager
def open_rows(path: Path, mapping: ImportMapping) -> Iterator[RowReader]:
    with path.open("rb") as binary:
        yield (
            CsvRows(binary, mapping)
            if mapping.file_format(path) == "csv"
            else JsonLinesRows(binary)
        )


# --- rows to events ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Field:
    path: tuple[str, ...]
    column: str | None
    kind: ValueKind
    default: Any
    format: str | None


def _compile(name: str, spec: str | FieldSpec, kind: ValueKind) -> _Field:
    if isinstance(spec, str):
        return _Field(tuple(name.split(".")), spec, kind, None, None)
    return _Field(tuple(name.split(".")), spec.column, spec.type or kind, spec.default, spec.format)


@dataclass(frozen=True, slots=True)
class _Plan:
    """How to build one event type's payload from a row."""

    event_type: str
    fields: list[_Field]
    lines: bool


_LINE_KINDS: Final = {name: field_kind(LineItem, name) or "json" for name in LineItem.model_fields}


class RowMapper:
    """Turns rows (column → value) into validated envelopes, as the mapping says."""

    def __init__(self, mapping: ImportMapping) -> None:
        self.mapping = mapping
        self._tz = ZoneInfo(mapping.occurred_at.timezone)
        self._plans = {name: self._plan(name) for name in mapping.type_names()}
        self._line = [
            _compile(name, spec, _LINE_KINDS[name]) for name, spec in (mapping.line or {}).items()
        ]

    def _plan(self, event_type: str) -> _Plan:
        payload = CATALOG[event_type].payload
        fields = []
        for name, spec in self.mapping.payload.items():
            kind = field_kind(payload, name)
            if kind is not None:
                fields.append(_compile(name, spec, kind))
        return _Plan(event_type, fields, "lines" in payload.model_fields)

    def event_type(self, row: dict[str, Any]) -> str:
        mapping = self.mapping
        if mapping.event_type is not None:
            return mapping.event_type
        column = str(mapping.event_type_column)
        value = _text(_lookup(row, column))
        found = mapping.event_types.get(value)
        if found is None:
            raise EventValidationError.single(
                "type",
                f"{column}={value!r} has no event type in the mapping's event_types "
                f"({', '.join(map(repr, mapping.event_types))})",
                "import_event_type",
            )
        return found

    def event(self, row: dict[str, Any]) -> Envelope:
        """Build and validate one event; raise ``EventValidationError`` naming each field."""
        mapping = self.mapping
        plan = self._plans[self.event_type(row)]
        errors: list[FieldError] = []
        payload: dict[str, Any] = {}
        for spec in plan.fields:
            value = self._value(row, spec, "payload", errors)
            if value is not None:
                _set_path(payload, spec.path, value)
        if plan.lines:
            lines = self._lines(row, errors)
            if lines is not None:
                payload["lines"] = lines
        identifiers = {}
        for kind, column in mapping.identifiers.items():
            value = _text(_lookup(row, column)).strip()
            if value:
                identifiers[kind] = value
        occurred = _lookup(row, mapping.occurred_at.column)
        occurred_at = None
        if not _empty(occurred):
            try:
                occurred_at = _timestamp(occurred, mapping.occurred_at.format, self._tz)
            except ValueError as exc:
                errors.append(FieldError("occurred_at", str(exc), "import_value"))
        data = {
            "event_id": self._event_id(row, plan.event_type, errors),
            "type": plan.event_type,
            "schema_version": CATALOG[plan.event_type].version,
            "occurred_at": occurred_at,
            "source": {"system": mapping.source, "channel": mapping.channel},
            "identifiers": identifiers or None,
            "payload": payload,
        }
        try:
            event = CATALOG[plan.event_type].model.model_validate(data)
        except ValidationError as exc:
            # A value that could not be converted was left out: drop "Field required" for it.
            failed = {error.loc for error in errors}
            errors += [
                e
                for e in EventValidationError.from_pydantic(exc).errors
                if not any(e.loc == loc or e.loc.startswith(loc + ".") for loc in failed)
            ]
            raise EventValidationError(errors) from None
        if errors:
            raise EventValidationError(errors)
        return event

    def _value(
        self, row: dict[str, Any], spec: _Field, prefix: str, errors: list[FieldError]
    ) -> Any:
        value = _lookup(row, spec.column) if spec.column else None
        if _empty(value):
            value = spec.default
        if value is None:
            return None
        try:
            return _convert(value, spec.kind, spec.format, self._tz)
        except ValueError as exc:
            where = f" (column {spec.column})" if spec.column else ""
            loc = ".".join((prefix, *spec.path))
            errors.append(FieldError(loc, f"{exc}{where}", "import_value"))
            return None

    def _lines(self, row: dict[str, Any], errors: list[FieldError]) -> list[Any] | None:
        if self._line:
            line: dict[str, Any] = {}
            for spec in self._line:
                value = self._value(row, spec, "payload.lines.0", errors)
                if value is not None:
                    line[spec.path[0]] = value
            return [line]
        column = self.mapping.lines_column
        if column is None:
            return None
        value = _lookup(row, column)
        if _empty(value):
            return None
        try:
            items = _convert(value, "json", None, self._tz)
        except ValueError as exc:
            errors.append(FieldError("payload.lines", f"{exc} (column {column})", "import_value"))
            return None
        if not isinstance(items, list):
            return items  # type: ignore[no-any-return]  # validation names the problem
        return [self._line_item(i, item, errors) for i, item in enumerate(items)]

    def _line_item(self, index: int, item: Any, errors: list[FieldError]) -> Any:
        if not isinstance(item, dict):
            return item
        converted = dict(item)
        for name, value in item.items():
            kind = _LINE_KINDS.get(name)
            if kind is None or _empty(value):
                continue
            try:
                converted[name] = _convert(value, kind, None, self._tz)
            except ValueError as exc:
                errors.append(FieldError(f"payload.lines.{index}.{name}", str(exc), "import_value"))
        return converted

    def _event_id(self, row: dict[str, Any], event_type: str, errors: list[FieldError]) -> UUID:
        columns = self.mapping.natural_key
        if not columns:
            digest = hashlib.sha256(orjson.dumps(row, option=orjson.OPT_SORT_KEYS)).hexdigest()
            return import_event_id(self.mapping.source, event_type, [f"row:{digest}"])
        key = [_text(_lookup(row, column)).strip() for column in columns]
        if not any(key):
            errors.append(
                FieldError(
                    "event_id",
                    f"the natural key ({', '.join(columns)}) is empty",
                    "import_natural_key",
                )
            )
        return import_event_id(self.mapping.source, event_type, key)


def _lookup(row: dict[str, Any], column: str) -> Any:
    """A column's value; ``a.b`` reaches into nested JSON objects when no column is named so."""
    if column in row or "." not in column:
        return row.get(column)
    value: Any = row
    for part in column.split("."):
        if not isinstance(value, dict):
            return None
        value = value.get(part)
    return value


def _empty(value: Any) -> bool:
    return value is None or (isinstance(value, str) and not value.strip())


def _text(value: Any) -> str:
    if value is None:
        return ""
    return value if isinstance(value, str) else orjson.dumps(value).decode()


def _set_path(target: dict[str, Any], path: tuple[str, ...], value: Any) -> None:
    for part in path[:-1]:
        target = target.setdefault(part, {})
    target[path[-1]] = value


def _convert(value: Any, kind: ValueKind, fmt: str | None, tz: tzinfo) -> Any:
    """Read a legacy value as ``kind``; raise ``ValueError`` with a readable reason."""
    if kind == "str":
        if isinstance(value, int | float | Decimal) and not isinstance(value, bool):
            return str(value)
        return value
    if kind == "json":
        if isinstance(value, str):
            try:
                return orjson.loads(value)
            except orjson.JSONDecodeError:
                raise ValueError(f"cannot read {value!r} as JSON") from None
        return value
    if isinstance(value, str):
        value = value.strip()
    if kind == "int":
        if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
            raise ValueError(f"cannot read {value!r} as an integer")
        try:
            return int(value)
        except (TypeError, ValueError):
            raise ValueError(f"cannot read {value!r} as an integer") from None
    if kind == "decimal":
        if isinstance(value, bool):
            raise ValueError(f"cannot read {value!r} as a decimal number")
        try:
            return Decimal(str(value))
        except InvalidOperation:
            raise ValueError(f"cannot read {value!r} as a decimal number") from None
    if kind == "bool":
        if isinstance(value, bool):
            return value
        text = str(value).lower()
        if text in _TRUE or text in _FALSE:
            return text in _TRUE
        raise ValueError(f"cannot read {value!r} as true/false")
    if kind == "date":
        if isinstance(value, date) and not isinstance(value, datetime):
            return value
        try:
            if fmt:
                return datetime.strptime(str(value), fmt).date()
            return date.fromisoformat(str(value))
        except ValueError:
            raise ValueError(f"cannot read {value!r} as a date ({fmt or 'YYYY-MM-DD'})") from None
    return _timestamp(value, fmt or "iso", tz)  # datetime


def _timestamp(value: Any, fmt: str, tz: tzinfo) -> datetime:
    if isinstance(value, datetime):
        parsed = value
    else:
        text = str(value).strip()
        try:
            parsed = datetime.fromisoformat(text) if fmt == "iso" else datetime.strptime(text, fmt)
        except ValueError:
            shown = "ISO 8601" if fmt == "iso" else fmt
            raise ValueError(f"cannot read {text!r} as a time ({shown})") from None
    return parsed.replace(tzinfo=tz) if parsed.tzinfo is None else parsed


# --- the import ----------------------------------------------------------------------------


@dataclass
class ImportStats:
    rows_read: int = 0
    """Rows looked at (rows before ``resume_from_line`` are ``skipped`` instead)."""
    published: int = 0
    """Events appended and acknowledged (in a dry run: events that would be)."""
    rejected: int = 0
    skipped: int = 0
    seconds: float = 0.0
    bytes_read: int = 0
    total_bytes: int = 0
    dry_run: bool = False
    samples: list[tuple[int, str]] = field(default_factory=list)
    """The first few rejects, (line, reason), for a summary."""

    @property
    def rows_per_second(self) -> float:
        return self.rows_read / self.seconds if self.seconds > 0 else 0.0


class ImportAborted(RuntimeError):
    """The log failed; rows before ``resume_line`` are published, resume from there."""

    def __init__(self, message: str, *, resume_line: int, stats: ImportStats) -> None:
        super().__init__(message)
        self.resume_line = resume_line
        self.stats = stats


class RejectsFile:
    """Rejected rows as JSON Lines, opened on the first reject (none: counted only)."""

    def __init__(self, path: Path | None, *, append: bool = False) -> None:
        self.path = path
        self._mode = "ab" if append else "wb"
        self._file: IO[bytes] | None = None

    def write(self, line: int, error: EventValidationError, row: Any) -> None:
        if self.path is None:
            return
        if self._file is None:
            self._file = self.path.open(self._mode)
        record = {
            "line": line,
            "reason": "; ".join(str(e) for e in error.errors),
            "errors": [{"loc": e.loc, "msg": e.msg} for e in error.errors],
            "row": row,
        }
        self._file.write(orjson.dumps(record, default=str) + b"\n")

    def close(self) -> None:
        if self._file is not None:
            self._file.close()


def import_file(
    path: Path,
    mapping: ImportMapping,
    event_log: EventLog | None,
    *,
    rejects_path: Path | None = None,
    batch_size: int = 2_000,
    dry_run: bool = False,
    resume_from_line: int = 1,
    on_progress: Callable[[ImportStats], None] | None = None,
) -> ImportStats:
    """Import ``path``; see the module docstring. ``event_log`` may be None in a dry run.

    Raises ``MappingError`` if the file lacks a mapped column, ``ImportAborted`` if the
    log fails (with the line to resume from).
    """
    if event_log is None and not dry_run:
        raise ValueError("an event log is needed unless dry_run")
    mapper = RowMapper(mapping)
    stats = ImportStats(total_bytes=path.stat().st_size, dry_run=dry_run)
    started = time.perf_counter()
    rejects = RejectsFile(rejects_path, append=resume_from_line > 1)
    batch: list[Envelope] = []
    batch_line = 0

    def publish() -> None:
        if batch and not dry_run:
            assert event_log is not None
            try:
                event_log.append(batch)
            except LogError as exc:
                stats.seconds = time.perf_counter() - started
                raise ImportAborted(
                    f"the log failed; rows before line {batch_line} are published: {exc}",
                    resume_line=batch_line,
                    stats=stats,
                ) from exc
        stats.published += len(batch)
        batch.clear()

    try:
        with open_rows(path, mapping) as rows:
            if rows.header is not None:
                check_columns(mapping, rows.header)
            for row in rows:
                if row.line < resume_from_line:
                    stats.skipped += 1
                    continue
                stats.rows_read += 1
                try:
                    if row.data is None:
                        raise EventValidationError.single("", str(row.error), "import_row")
                    event = mapper.event(row.data)
                except EventValidationError as exc:
                    stats.rejected += 1
                    if len(stats.samples) < _SAMPLE_REJECTS:
                        stats.samples.append((row.line, "; ".join(map(str, exc.errors))))
                    rejects.write(row.line, exc, row.raw)
                    continue
                if not batch:
                    batch_line = row.line
                batch.append(event)
                if len(batch) >= batch_size:
                    publish()
                if on_progress is not None and stats.rows_read % _PROGRESS_EVERY == 0:
                    stats.bytes_read = rows.bytes_read
                    on_progress(stats)
            publish()
            stats.bytes_read = stats.total_bytes
    finally:
        rejects.close()
    stats.seconds = time.perf_counter() - started
    if on_progress is not None:
        on_progress(stats)
    return stats
