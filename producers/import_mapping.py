"""The mapping file of a bulk import: how a legacy file's rows become events.

A mapping (YAML) names the legacy ``source`` system, the file ``format``, the event
type (fixed, or read from a column through ``event_types``), the ``channel``, where
``occurred_at`` and the customer ``identifiers`` are, the ``natural_key`` columns that
make event ids stable, and the ``payload`` fields::

    source: legacy-shop
    event_type: order.placed
    channel: ecommerce
    occurred_at: {column: ordered, format: "%d/%m/%Y %H:%M", timezone: Europe/Lisbon}
    identifiers: {email: email, account_id: customer_no}
    natural_key: [order_no]
    payload:
      order_id: order_no
      currency: {default: EUR}             # a constant
      total: {column: total, type: decimal}
      address.country: country             # dotted = nested field
    line: {sku: sku, quantity: qty, unit_price: price}   # or lines_column: lines (JSON)

``type`` (int, decimal, str, bool, date, datetime, json) is inferred from the payload
class when omitted. ``load_mapping`` checks everything it can before a row is read
(event types, payload fields, time zone); ``check_columns`` checks a CSV header.
"""

from __future__ import annotations

import difflib
import types
from collections.abc import Iterable, Iterator, Mapping
from datetime import date, datetime
from decimal import Decimal
from enum import Enum
from pathlib import Path
from typing import Annotated, Any, Literal, Union, get_args, get_origin
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from schemas import CATALOG, Channel, EventPayload, IdentifierKind, LineItem

ValueKind = Literal["int", "decimal", "str", "bool", "date", "datetime", "json"]
FORMATS = ("csv", "jsonl")
_EXTENSIONS = {".csv": "csv", ".tsv": "csv", ".jsonl": "jsonl", ".ndjson": "jsonl"}


class MappingError(ValueError):
    """The mapping (or the file's header) cannot work; one line per problem."""

    def __init__(self, problems: Iterable[str]) -> None:
        self.problems = list(problems)
        super().__init__("\n".join(self.problems))


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class FieldSpec(_Strict):
    """A value taken from ``column`` (converted to ``type``), else ``default``."""

    column: str | None = None
    type: ValueKind | None = None
    default: Any = None
    format: str | None = None
    """strftime format of a ``date``/``datetime`` column (default ISO 8601)."""


class OccurredAtSpec(_Strict):
    column: str
    format: str = "iso"
    """``iso`` (ISO 8601) or a strftime format such as ``%d/%m/%Y %H:%M``."""
    timezone: str = "UTC"
    """IANA zone applied to times written without an offset."""


class CsvOptions(_Strict):
    delimiter: str = Field(default=",", min_length=1, max_length=1)
    quotechar: str = Field(default='"', min_length=1, max_length=1)
    encoding: str = "utf-8-sig"


class ImportMapping(_Strict):
    source: str = Field(min_length=1, max_length=100)
    format: Literal["csv", "jsonl"] | None = None
    event_type: str | None = None
    event_type_column: str | None = None
    event_types: dict[str, str] = Field(default_factory=dict)
    channel: Channel
    occurred_at: OccurredAtSpec
    identifiers: dict[IdentifierKind, str] = Field(default_factory=dict)
    natural_key: list[str] = Field(default_factory=list)
    """Columns that identify a row across runs; without them the whole row does."""
    payload: dict[str, str | FieldSpec] = Field(default_factory=dict)
    lines_column: str | None = None
    line: dict[str, str | FieldSpec] | None = None
    csv: CsvOptions = CsvOptions()

    def type_names(self) -> list[str]:
        if self.event_type is not None:
            return [self.event_type]
        return list(dict.fromkeys(self.event_types.values()))

    def file_format(self, path: Path) -> str:
        if self.format is not None:
            return self.format
        found = _EXTENSIONS.get(path.suffix.lower())
        if found is None:
            raise MappingError(
                [f"cannot tell the format of {path.name}: set format: csv or format: jsonl"]
            )
        return found

    def columns(self) -> Iterator[tuple[str, str]]:
        """Every column the mapping reads, with what it is for."""
        yield self.occurred_at.column, "occurred_at"
        if self.event_type_column:
            yield self.event_type_column, "event_type_column"
        for kind, column in self.identifiers.items():
            yield column, f"identifiers.{kind}"
        for column in self.natural_key:
            yield column, "natural_key"
        for name, spec in self.payload.items():
            if column_of(spec):
                yield str(column_of(spec)), f"payload.{name}"
        if self.lines_column:
            yield self.lines_column, "lines_column"
        for name, spec in (self.line or {}).items():
            if column_of(spec):
                yield str(column_of(spec)), f"line.{name}"


def column_of(spec: str | FieldSpec) -> str | None:
    return spec if isinstance(spec, str) else spec.column


def load_mapping(path: Path) -> ImportMapping:
    """Read and check a mapping file; raise :class:`MappingError` listing every problem."""
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise MappingError([f"cannot read mapping {path}: {exc}"]) from exc
    return parse_mapping(raw)


def parse_mapping(raw: object) -> ImportMapping:
    if not isinstance(raw, Mapping):
        raise MappingError(["a mapping file should be a YAML mapping (key: value lines)"])
    try:
        mapping = ImportMapping.model_validate(raw)
    except ValidationError as exc:
        raise MappingError(
            f"{'.'.join(str(p) for p in e['loc']) or 'mapping'}: {e['msg']}"
            for e in exc.errors(include_url=False)
        ) from None
    problems = list(_problems(mapping))
    if problems:
        raise MappingError(problems)
    return mapping


def check_columns(mapping: ImportMapping, header: Iterable[str]) -> None:
    """Raise :class:`MappingError` for every mapped column missing from a CSV header."""
    present = set(header)
    problems = [
        f"column {column!r} ({purpose}) is not in the file header: {', '.join(sorted(present))}"
        + _suggest(column, present)
        for column, purpose in dict(mapping.columns()).items()
        if column not in present
    ]
    if problems:
        raise MappingError(problems)


def _problems(mapping: ImportMapping) -> Iterator[str]:
    if (mapping.event_type is None) == (mapping.event_type_column is None):
        yield "give either event_type, or event_type_column with event_types"
        return
    if mapping.event_type_column and not mapping.event_types:
        yield "event_type_column needs event_types: {legacy value: event type}"
    if mapping.event_type and mapping.event_types:
        yield "event_types is only used with event_type_column"
    names = mapping.type_names()
    unknown = [name for name in names if name not in CATALOG]
    for name in unknown:
        yield f"unknown event type {name!r}" + _suggest(name, CATALOG)
    if unknown:
        return
    payloads = [CATALOG[name].payload for name in names]
    try:
        ZoneInfo(mapping.occurred_at.timezone)
    except (ZoneInfoNotFoundError, ValueError):
        yield f"occurred_at.timezone: unknown time zone {mapping.occurred_at.timezone!r}"
    if mapping.occurred_at.format != "iso" and "%" not in mapping.occurred_at.format:
        yield "occurred_at.format: use iso or a strftime format such as %Y-%m-%d %H:%M:%S"
    if not mapping.identifiers and any(CATALOG[n].customer_event for n in names):
        yield f"identifiers: {', '.join(names)} need at least one identifier column"
    for name, spec in mapping.payload.items():
        if isinstance(spec, FieldSpec) and spec.column is None and spec.default is None:
            yield f"payload.{name}: give a column or a default"
        if not any(field_kind(p, name) for p in payloads):
            fields = sorted({f for p in payloads for f in p.model_fields})
            yield (
                f"payload.{name}: not a field of {' or '.join(names)} "
                f"(fields: {', '.join(fields)})" + _suggest(name.split(".")[0], fields)
            )
    with_lines = [p for p in payloads if "lines" in p.model_fields]
    if mapping.lines_column and mapping.line:
        yield "give lines_column or line, not both"
    if (mapping.lines_column or mapping.line) and not with_lines:
        yield f"lines_column/line: {' or '.join(names)} has no order lines"
    if "lines" in mapping.payload:
        yield "payload.lines: map order lines with lines_column or line"
    for name in mapping.line or {}:
        if name not in LineItem.model_fields:
            yield f"line.{name}: not a field of an order line ({', '.join(LineItem.model_fields)})"


def _suggest(name: str, known: Iterable[str]) -> str:
    close = difflib.get_close_matches(name, list(known), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def field_kind(payload: type[BaseModel], path: str) -> ValueKind | None:
    """The value kind of a (dotted) field of ``payload``, or None if there is no such field."""
    model: type[BaseModel] | None = payload
    kind: ValueKind | None = None
    for part in path.split("."):
        if model is None or part not in model.model_fields:
            return None
        annotation = model.model_fields[part].annotation
        kind, model = _kind_of(annotation)
    return kind


_KINDS: tuple[tuple[type, ValueKind], ...] = (
    (bool, "bool"),  # before int: bool is an int
    (int, "int"),
    (Decimal, "decimal"),
    (datetime, "datetime"),  # before date: datetime is a date
    (date, "date"),
    (str, "str"),
    (Enum, "str"),
)


def _kind_of(annotation: Any) -> tuple[ValueKind, type[BaseModel] | None]:
    """What a CSV cell must be converted to for ``annotation`` (and the nested model)."""
    origin = get_origin(annotation)
    if origin is Annotated:
        return _kind_of(get_args(annotation)[0])
    if origin in (Union, types.UnionType):
        options = [a for a in get_args(annotation) if a is not type(None)]
        return _kind_of(options[0]) if len(options) == 1 else ("json", None)
    if origin is not None:
        return "json", None
    if isinstance(annotation, type):
        if issubclass(annotation, BaseModel):
            return "json", annotation
        for base, kind in _KINDS:
            if issubclass(annotation, base):
                return kind, None
    return "json", None


def payload_class(event_type: str) -> type[EventPayload]:
    return CATALOG[event_type].payload
