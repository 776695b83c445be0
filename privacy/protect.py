"""Sealing events at the doors and opening them in the processor, in batches.

``Protector`` turns validated events into log records with their personal data sealed
(``privacy.crypto``) under their subjects' data keys, fetching every key a batch needs
in one call to the ``KeyStore``; and opens records read back, again one key lookup
per batch. ``SealingEventLog`` wraps an ``EventLog`` so that whatever a door appends
(HTTP gateway, SDK, bulk import, ``crm log append``, the demo) is sealed.
"""

from __future__ import annotations

from collections.abc import Collection, Iterator, Mapping, Sequence
from datetime import datetime
from typing import Any

import orjson
import sqlalchemy as sa

from events.codec import event_headers, event_json, key_for
from events.gcpause import collection_paused
from events.log import EventLog, LogRecord, OutgoingRecord, Position
from privacy.crypto import IdentifierHasher, JsonDict, open_sealed, redact, seal, sealed_kid
from privacy.crypto import subject_of as _subject_of
from privacy.keystore import KeyStore, SqlKeyStore, decode_master_key
from schemas import IDENTIFIER_KINDS, Envelope


class Protector:
    """Seals and opens events with the keys of a ``KeyStore``."""

    def __init__(self, keystore: KeyStore) -> None:
        self.keystore = keystore
        self.hasher = IdentifierHasher(keystore.identifier_hash_key())

    @classmethod
    def connect(cls, database_url: str, master_key: str, *, schema: str = "privacy") -> Protector:
        """The protector of a LoopCRM installation, for a producer outside it (the SDK
        writing to Kafka directly): its PostgreSQL URL and ``CRM_MASTER_KEY``."""
        engine = sa.create_engine(database_url, pool_pre_ping=True, pool_size=2)
        return cls(SqlKeyStore(engine, decode_master_key(master_key), schema=schema))

    def seal(self, events: Sequence[Envelope]) -> list[OutgoingRecord]:
        """Log records of ``events`` with their personal data sealed."""
        with collection_paused():
            return self._seal(events)

    def _seal(self, events: Sequence[Envelope]) -> list[OutgoingRecord]:
        datas = [event_json(event) for event in events]
        subjects = {
            d["event_id"]: s for d in datas if d.get("pii") is None and (s := self.subject(d))
        }
        keys = self.keystore.subject_keys(set(subjects.values())) if subjects else {}
        records = []
        for event, data in zip(events, datas, strict=True):
            subject = subjects.get(data["event_id"])
            if subject is not None:
                kid, key = keys[subject]
                seal(data, self.hasher, kid, key)
            else:
                data["identifiers"] = self._hashed(data.get("identifiers"))
            records.append(OutgoingRecord(self.key(data), orjson.dumps(data), event_headers(event)))
        return records

    def subject(self, data: Mapping[str, Any]) -> str | None:
        return _subject_of(data, self.hasher)

    def _hashed(self, identifiers: Any) -> Any:
        if not isinstance(identifiers, dict):
            return identifiers
        return {
            kind: value if value is None else self.hasher.hash(kind, value)
            for kind, value in identifiers.items()
        }

    def key(self, data: Mapping[str, Any]) -> bytes:
        """The partition key of a sealed event (its first identifier is hashed already)."""
        identifiers = data.get("identifiers") or {}
        first = None
        for kind in IDENTIFIER_KINDS:
            if value := identifiers.get(kind):
                first = (kind, value)
                break
        return key_for(first, str(data["type"]))

    def open_all(self, datas: Sequence[JsonDict]) -> list[JsonDict]:
        """Open sealed events (in place) with one key lookup; others pass unchanged."""
        kids = {kid for d in datas if (kid := sealed_kid(d)) is not None}
        keys = self.keystore.keys(kids) if kids else {}
        for data in datas:
            kid = sealed_kid(data)
            if kid is not None:
                open_sealed(data, keys.get(kid))
        return list(datas)

    def redact(self, data: JsonDict) -> JsonDict:
        return redact(data, self.hasher)

    def node_value(self, kind: str, value: str) -> str:
        """How an identifier appears in identity resolution: keyed hash if personal."""
        return self.hasher.hash(kind, value)

    def destroy(self, kids: Collection[str]) -> int:
        return self.keystore.destroy(kids)


class SealingEventLog:
    """An ``EventLog`` whose ``append`` seals personal data first (a door's log)."""

    def __init__(self, inner: EventLog, protector: Protector) -> None:
        self.inner = inner
        self.protector = protector

    @property
    def topic(self) -> str:
        return self.inner.topic

    def partition_count(self) -> int:
        return self.inner.partition_count()

    def append(self, events: Sequence[Envelope]) -> list[Position]:
        return self.inner.append_records(self.records_of(events)) if events else []

    def records_of(self, events: Sequence[Envelope]) -> list[OutgoingRecord]:
        return self.protector.seal(events)

    def append_records(self, records: Sequence[OutgoingRecord]) -> list[Position]:
        return self.inner.append_records(records)

    def read(
        self,
        *,
        from_offsets: Mapping[int, int] | None = None,
        from_time: datetime | None = None,
        partitions: Collection[int] | None = None,
        until_offsets: Mapping[int, int] | None = None,
    ) -> Iterator[LogRecord]:
        return self.inner.read(
            from_offsets=from_offsets,
            from_time=from_time,
            partitions=partitions,
            until_offsets=until_offsets,
        )

    def end_offsets(self) -> dict[int, int]:
        return self.inner.end_offsets()

    def offsets_for_time(self, when: datetime) -> dict[int, int]:
        return self.inner.offsets_for_time(when)

    def close(self) -> None:
        self.inner.close()
