"""Upcasters: bring payloads written under an old schema version up to the current one.

The log is immutable, so old events stay as written; readers upcast them on the way in.
An upcaster for ``(event_type, n)`` turns a version-``n`` payload dict into version
``n + 1``; ``upcast`` chains them. When a payload class bumps ``schema_version`` it must
register an upcaster for the previous version (``check_upcaster_chains`` enforces it).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Final

from schemas.errors import EventValidationError, unknown_type_error
from schemas.payloads import PAYLOAD_TYPES

Upcaster = Callable[[dict[str, Any]], dict[str, Any]]

UPCASTERS: Final[dict[tuple[str, int], Upcaster]] = {}
"""``(event_type, from_version)`` → function turning that payload into ``from_version + 1``."""

CURRENT_VERSIONS: Final[Mapping[str, int]] = {p.event_type: p.schema_version for p in PAYLOAD_TYPES}


def upcaster(event_type: str, from_version: int) -> Callable[[Upcaster], Upcaster]:
    """Register the decorated function as the upcaster of ``event_type`` ``from_version``."""

    def register(function: Upcaster) -> Upcaster:
        key = (event_type, from_version)
        if key in UPCASTERS:
            raise ValueError(f"upcaster for {event_type!r} v{from_version} already registered")
        UPCASTERS[key] = function
        return function

    return register


def upcast(event_type: str, version: int, payload: Mapping[str, Any]) -> dict[str, Any]:
    """Return ``payload`` (written as ``version``) transformed to the current version.

    The input is never mutated. Raises ``EventValidationError`` for unknown types,
    versions newer than this LoopCRM knows, and payloads an upcaster cannot read.
    """
    current = CURRENT_VERSIONS.get(event_type)
    if current is None:
        raise unknown_type_error(event_type, CURRENT_VERSIONS)
    if version > current:
        raise EventValidationError.single(
            "schema_version",
            f"schema_version {version} of {event_type!r} is newer than this LoopCRM knows "
            f"({current})",
            "schema_version_too_new",
        )
    if version < 1:
        raise EventValidationError.single(
            "schema_version", "Input should be greater than or equal to 1", "greater_than_equal"
        )
    data = dict(payload)
    for from_version in range(version, current):
        step = UPCASTERS.get((event_type, from_version))
        if step is None:  # pragma: no cover - prevented by check_upcaster_chains
            raise LookupError(f"no upcaster for {event_type!r} v{from_version}")
        try:
            data = step(data)
        except (ValueError, TypeError, KeyError) as exc:
            raise EventValidationError.single(
                "payload",
                f"cannot upcast {event_type!r} from v{from_version} to v{from_version + 1}: {exc}",
                "upcast_failed",
            ) from None
    return data


def check_upcaster_chains() -> None:
    """Fail loudly if a type's version chain has gaps or an upcaster targets nothing."""
    for event_type, current in CURRENT_VERSIONS.items():
        missing = [v for v in range(1, current) if (event_type, v) not in UPCASTERS]
        if missing:
            raise LookupError(f"{event_type!r} is at v{current} but has no upcaster for {missing}")
    for event_type, from_version in UPCASTERS:
        if from_version >= CURRENT_VERSIONS.get(event_type, 0):
            raise LookupError(f"upcaster {event_type!r} v{from_version} targets no known version")


# --- registered upcasters --------------------------------------------------------------


@upcaster("customer.registered", 1)
def _split_full_name(payload: dict[str, Any]) -> dict[str, Any]:
    """v1 had one ``full_name``; v2 splits it on the last space into first and last name."""
    full_name = payload.pop("full_name", None)
    if not isinstance(full_name, str) or not full_name.strip():
        raise ValueError("full_name should be a non-empty string")
    first, _, last = full_name.strip().rpartition(" ")
    if first:
        payload["first_name"], payload["last_name"] = first.strip(), last
    else:
        payload["first_name"] = last
    return payload


check_upcaster_chains()
