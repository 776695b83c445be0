"""The catalog of event types, and the two entry points: ``new_event`` and ``parse_event``."""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from types import MappingProxyType, UnionType
from typing import Annotated, Any, Final, Literal, Union, cast, get_args, get_origin
from uuid import UUID

from pydantic import BaseModel, ConfigDict, ValidationError, create_model

from schemas.envelope import CustomerEnvelope, Envelope
from schemas.errors import EventValidationError, unknown_type_error
from schemas.fields import EVENT_TYPE_PATTERN
from schemas.identifiers import Identifiers
from schemas.payloads import PAYLOAD_TYPES, EventPayload
from schemas.source import Source
from schemas.upcasting import upcast


@dataclass(frozen=True, slots=True)
class EventType:
    """One entry of the catalog: a payload class and its pinned envelope model."""

    name: str
    payload: type[EventPayload]
    model: type[Envelope]
    version: int
    customer_event: bool

    @property
    def description(self) -> str:
        """The first line of the payload's docstring: what happened."""
        return (self.payload.__doc__ or "").strip().splitlines()[0]


def _class_name_for(event_type: str) -> str:
    return "".join(part.capitalize() for part in re.split(r"[._]", event_type))


class _PinnedEnvelope(Envelope):
    """Base of the catalog's envelope models, which are made at run time: they have no
    source for pydantic to read attribute docstrings from, and looking for it took over a
    second of every process's start (``inspect.getmodule`` over every loaded module)."""

    model_config = ConfigDict(use_attribute_docstrings=False)


class _PinnedCustomerEnvelope(CustomerEnvelope):
    """The same, for customer events."""

    model_config = ConfigDict(use_attribute_docstrings=False)


def _build(payload: type[EventPayload]) -> EventType:
    name = payload.event_type
    if re.fullmatch(EVENT_TYPE_PATTERN, name) is None:
        raise ValueError(f"event type {name!r} should be dotted snake_case like 'order.placed'")
    if payload.__name__ != _class_name_for(name):
        raise ValueError(f"payload class for {name!r} should be named {_class_name_for(name)}")
    if not (payload.__doc__ or "").strip():
        raise ValueError(f"payload class {payload.__name__} needs a docstring")
    base = _PinnedCustomerEnvelope if payload.customer_event else _PinnedEnvelope
    pinned: dict[str, Any] = {
        "type": (Literal[name], ...),
        "schema_version": (Literal[payload.schema_version], ...),
        "payload": (payload, ...),
    }
    model = cast(
        type[Envelope],
        create_model(
            f"{payload.__name__}Event",
            __base__=base,
            __module__=__name__,
            __doc__=payload.__doc__,
            **pinned,
        ),
    )
    return EventType(name, payload, model, payload.schema_version, payload.customer_event)


def _catalog() -> Mapping[str, EventType]:
    entries: dict[str, EventType] = {}
    for payload in PAYLOAD_TYPES:
        if payload.event_type in entries:
            raise ValueError(f"event type {payload.event_type!r} is defined twice")
        entries[payload.event_type] = _build(payload)
    return MappingProxyType(entries)


CATALOG: Final[Mapping[str, EventType]] = _catalog()
_BY_PAYLOAD: Final = {entry.payload: entry for entry in CATALOG.values()}
# Module attributes, so envelopes pickle (e.g. across a process pool) like any class.
globals().update({entry.model.__name__: entry.model for entry in CATALOG.values()})


def new_event(
    payload: EventPayload,
    *,
    source: Source,
    occurred_at: datetime,
    identifiers: Identifiers | None = None,
    event_id: UUID | None = None,
    correlation_id: UUID | None = None,
    causation_id: UUID | None = None,
    recorded_at: datetime | None = None,
) -> Envelope:
    """Wrap ``payload`` in the envelope of its type; raise ``EventValidationError`` if invalid.

    ``event_id`` defaults to a fresh UUID and ``recorded_at`` to now (UTC).
    """
    entry = _BY_PAYLOAD.get(type(payload))
    if entry is None:
        raise TypeError(f"{type(payload).__name__} is not a payload class of the catalog")
    data: dict[str, Any] = {
        "type": entry.name,
        "schema_version": entry.version,
        "occurred_at": occurred_at,
        "source": source,
        "identifiers": identifiers,
        "correlation_id": correlation_id,
        "causation_id": causation_id,
        "payload": payload,
    }
    if event_id is not None:
        data["event_id"] = event_id
    if recorded_at is not None:
        data["recorded_at"] = recorded_at
    try:
        return entry.model.model_validate(data)
    except ValidationError as exc:
        raise EventValidationError.from_pydantic(exc) from None


def parse_event(data: Mapping[str, Any]) -> Envelope:
    """Decode one event (e.g. ``orjson.loads`` of a Kafka record) into its envelope model.

    Checks the type is known, upcasts an old payload to the current schema version,
    then validates. Raises ``EventValidationError`` listing every problem found.
    """
    if not isinstance(data, Mapping):
        raise EventValidationError.single("", "An event should be a JSON object", "model_type")
    event_type = data.get("type")
    entry = CATALOG.get(event_type) if isinstance(event_type, str) else None
    if entry is None:
        if event_type is None:
            raise EventValidationError.single("type", "Field required", "missing")
        raise unknown_type_error(event_type, CATALOG)
    version = data.get("schema_version")
    if type(version) is not int or version != entry.version:
        data = {**data, "schema_version": entry.version, "payload": _upcast(entry, data)}
    try:
        return entry.model.model_validate(data)
    except ValidationError as exc:
        raise EventValidationError.from_pydantic(exc) from None


def _upcast(entry: EventType, data: Mapping[str, Any]) -> dict[str, Any]:
    version = data.get("schema_version")
    if version is None:
        raise EventValidationError.single("schema_version", "Field required", "missing")
    if type(version) is not int:
        raise EventValidationError.single(
            "schema_version", "Input should be a valid integer", "int_type"
        )
    payload = data.get("payload")
    if not isinstance(payload, Mapping):
        raise EventValidationError.single(
            "payload", "Input should be a valid dictionary", "dict_type"
        )
    return upcast(entry.name, version, payload)


def pii_fields(event_type: str) -> list[str]:
    """Dotted paths of the personal-data fields of ``event_type`` (``*`` = every list item).

    E.g. ``identifiers.email``, ``payload.address``, ``payload.answers.*.answer``.
    """
    entry = CATALOG.get(event_type)
    if entry is None:
        raise unknown_type_error(event_type, CATALOG)
    return list(_PII_FIELDS[event_type])


def _pii_paths(model: type[BaseModel], prefix: str) -> Iterator[str]:
    for name, info in model.model_fields.items():
        path = f"{prefix}{name}"
        extra = info.json_schema_extra
        if isinstance(extra, dict) and extra.get("x-pii") is True:
            yield path
        else:
            yield from _pii_in_type(info.annotation, path)


def _pii_in_type(annotation: Any, path: str) -> Iterator[str]:
    origin = get_origin(annotation)
    if origin is Annotated:
        yield from _pii_in_type(get_args(annotation)[0], path)
    elif origin in (Union, UnionType):
        for arg in get_args(annotation):
            yield from _pii_in_type(arg, path)
    elif origin in (list, tuple, set, frozenset):
        yield from _pii_in_type(get_args(annotation)[0], f"{path}.*")
    elif isinstance(annotation, type) and issubclass(annotation, BaseModel):
        yield from _pii_paths(annotation, f"{path}.")


_PII_FIELDS: Final[Mapping[str, tuple[str, ...]]] = {
    name: tuple(dict.fromkeys(_pii_paths(entry.model, ""))) for name, entry in CATALOG.items()
}
