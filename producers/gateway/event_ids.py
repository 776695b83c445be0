"""Deterministic event ids for events that arrive without one, so retries dedupe.

Consumers count an ``event_id`` once. A producer that retries a request (after a
timeout, a 503, a crash) must therefore send the *same* ids again. Producers that set
``event_id`` themselves get exactly that; for the others the gateway derives it from
the event's content, so the same event sent twice gets the same id:

* native envelope without ``event_id``:
  ``uuid5(INGEST_NAMESPACE, sha256(canonical JSON of the event minus event_id and
  recorded_at))``, canonical = orjson with sorted keys, no whitespace. Two events that
  differ in nothing (same type, time, source, identifiers, payload) are one event.
* CloudEvent: ``uuid5(INGEST_NAMESPACE, source + "\\n" + id)``, CloudEvents' own
  identity rule (``source`` + ``id`` is unique per distinct event).
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Mapping
from typing import Any, Final

import orjson

INGEST_NAMESPACE: Final = uuid.uuid5(uuid.NAMESPACE_URL, "urn:loopcrm:ingest")
"""Namespace of derived event ids. Changing it would change every derived id: never do."""

_NOT_CONTENT: Final = frozenset({"event_id", "recorded_at"})


def content_event_id(event: Mapping[str, Any]) -> uuid.UUID:
    """The id of a native event that came without one (see the module doc)."""
    content = {key: value for key, value in event.items() if key not in _NOT_CONTENT}
    canonical = orjson.dumps(content, option=orjson.OPT_SORT_KEYS)
    return uuid.uuid5(INGEST_NAMESPACE, hashlib.sha256(canonical).hexdigest())


def cloudevent_event_id(source: str, event_id: str) -> uuid.UUID:
    """The id of a CloudEvent: its ``source`` and ``id`` (see the module doc)."""
    return uuid.uuid5(INGEST_NAMESPACE, f"{source}\n{event_id}")
