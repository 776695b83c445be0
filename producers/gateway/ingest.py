"""The ingest use case: decode a request body, validate every event, store, report.

Runs synchronously (the route calls it in a worker thread): JSON decoding, validation
and sealing of up to a thousand events is CPU work, and appending blocks until Kafka
acknowledged. The CPU work of concurrent requests runs one at a time (under the GIL,
more threads only add switching and lock contention: 8 concurrent batch requests
were ~30% slower than one), while their waits for Kafka overlap. Contract:

* Valid events are appended with ONE ``event_log.append_records`` call; invalid ones are
  reported per index and appended to the dead-letter log as their original bytes (an
  array item re-serialized compactly) with headers ``crm-error`` (the reason) and
  ``crm-origin`` (``http:/v1/events#<index>``). A body that is not JSON is dead-lettered
  whole (cut to ``max_event_bytes``) and answered 400.
* If either append fails (``LogUnavailableError``), the exception propagates and the
  request is answered 503: nothing is reported as accepted. Retrying is safe: a retried
  event keeps its ``event_id`` (given, or derived, see ``event_ids``), so consumers
  count it once.
* ``recorded_at`` is the gateway's clock, whatever the producer sent.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from http import HTTPStatus
from typing import Any, Final, NoReturn

import orjson

from events.gcpause import collection_paused
from events.log import EventLog, OutgoingRecord
from producers.gateway.cloudevents import parse_cloudevent
from producers.gateway.event_ids import content_event_id
from producers.gateway.limits import GatewayLimits
from schemas import Envelope, EventValidationError, parse_event

log = logging.getLogger(__name__)

ERROR_HEADER: Final = "crm-error"
ORIGIN_HEADER: Final = "crm-origin"
ORIGIN: Final = "http:/v1/events"
_MAX_REASON: Final = 2_000
_MAX_DEPTH: Final = 254


class BodyKind(StrEnum):
    """The accepted media types, and what each body holds."""

    NATIVE = "application/json"
    """one envelope object, or an array of them"""
    CLOUDEVENT = "application/cloudevents+json"
    """one CloudEvent (structured mode)"""
    CLOUDEVENT_BATCH = "application/cloudevents-batch+json"
    """an array of CloudEvents"""


class RequestRejected(Exception):
    """The request as a whole is refused (400, 413); nothing of it was stored."""

    def __init__(self, status: HTTPStatus, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail


class _BodyRejected(Exception):
    """A body with no events we can address: its dead letter, stored outside the lock."""

    def __init__(self, letter: OutgoingRecord, reason: str) -> None:
        super().__init__(reason)
        self.letter = letter
        self.reason = reason


@dataclass(frozen=True, slots=True)
class IngestOutcome:
    status: HTTPStatus
    body: bytes
    accepted: int
    rejected: int


@dataclass(frozen=True, slots=True)
class _Prepared:
    """A request's outcome and the records it must store before it is answered."""

    outcome: IngestOutcome
    records: list[OutgoingRecord]
    letters: list[OutgoingRecord]


def _utc_now() -> datetime:
    return datetime.now(UTC)


class Ingestor:
    """Validates request bodies and stores their events (see the module contract)."""

    def __init__(
        self,
        event_log: EventLog,
        deadletters_log: EventLog,
        limits: GatewayLimits,
        *,
        clock: Callable[[], datetime] = _utc_now,
    ) -> None:
        self.event_log = event_log
        self.deadletters_log = deadletters_log
        self.limits = limits
        self._clock = clock
        self._cpu = threading.Lock()

    def ingest(self, body: bytes, kind: BodyKind) -> IngestOutcome:
        try:
            with self._cpu, collection_paused():  # a thousand events' objects live till here
                prepared = self._prepare(body, kind)
        except _BodyRejected as rejected:
            self.deadletters_log.append_records([rejected.letter])
            raise RequestRejected(HTTPStatus.BAD_REQUEST, rejected.reason) from None
        if prepared.letters:
            self.deadletters_log.append_records(prepared.letters)
        if prepared.records:
            self.event_log.append_records(prepared.records)
        return prepared.outcome

    def _prepare(self, body: bytes, kind: BodyKind) -> _Prepared:
        items, single = self._decode(body, kind)
        recorded_at = self._clock()
        parse = parse_cloudevent if kind is not BodyKind.NATIVE else _parse_native
        accepted: list[Envelope] = []
        results: list[dict[str, Any]] = []
        letters: list[OutgoingRecord] = []
        for index, item in enumerate(items):
            try:
                event = parse(item, recorded_at)
            except EventValidationError as exc:
                errors = [{"loc": e.loc, "msg": e.msg, "kind": e.kind} for e in exc.errors]
                results.append(
                    {"index": index, "event_id": None, "status": "rejected", "errors": errors}
                )
                raw = body if single else orjson.dumps(item)
                letters.append(_dead_letter(raw, str(exc), f"{ORIGIN}#{index}"))
            else:
                accepted.append(event)
                results.append(
                    {"index": index, "event_id": str(event.event_id), "status": "accepted"}
                )
        records = self.event_log.records_of(accepted) if accepted else []
        if not letters:
            code = HTTPStatus.OK
        elif accepted:
            code = HTTPStatus.MULTI_STATUS
        else:
            code = HTTPStatus.UNPROCESSABLE_ENTITY
        payload = {"accepted": len(accepted), "rejected": len(letters), "results": results}
        outcome = IngestOutcome(code, orjson.dumps(payload), len(accepted), len(letters))
        return _Prepared(outcome, records, letters)

    def _decode(self, body: bytes, kind: BodyKind) -> tuple[list[Any], bool]:
        """The events of the body, and whether it was a single object (not an array)."""
        limits = self.limits
        try:
            data = orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            self._reject_body(body, f"malformed JSON: {exc}")
        if kind is BodyKind.CLOUDEVENT_BATCH and not isinstance(data, list):
            self._reject_body(body, "a CloudEvents batch must be a JSON array of events")
        if kind is BodyKind.CLOUDEVENT and not isinstance(data, dict):
            self._reject_body(body, "a CloudEvent must be a JSON object")
        if not isinstance(data, list | dict):
            self._reject_body(body, "the body must be an event object or an array of events")
        items = data if isinstance(data, list) else [data]
        if len(items) > limits.max_events:
            raise _too_large(
                f"{len(items):,} events in one request; the limit is {limits.max_events:,}"
            )
        single = isinstance(data, dict)
        for index, item in enumerate(items):
            try:  # orjson reads 1024 levels but writes 254; ids and dead letters need writing
                written = orjson.dumps(item)
            except orjson.JSONEncodeError:
                self._reject_body(body, f"JSON nested deeper than {_MAX_DEPTH} levels")
            size = len(body) if single else len(written)
            if size > limits.max_event_bytes:
                raise _too_large(_event_too_large(index, size, limits.max_event_bytes))
        return items, single

    def _reject_body(self, body: bytes, reason: str) -> NoReturn:
        """A body that holds no events we can address: dead-letter it, answer 400."""
        raise _BodyRejected(
            _dead_letter(body[: self.limits.max_event_bytes], reason, ORIGIN), reason
        )


def _parse_native(item: object, recorded_at: datetime) -> Envelope:
    if not isinstance(item, Mapping):
        raise EventValidationError.single("", "An event should be a JSON object", "model_type")
    data = dict(item)
    if data.get("event_id") is None:
        data["event_id"] = content_event_id(data)
    data["recorded_at"] = recorded_at
    return parse_event(data)


def _too_large(detail: str) -> RequestRejected:
    return RequestRejected(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, detail)


def _event_too_large(index: int, size: int, limit: int) -> str:
    return f"event #{index} is {size:,} bytes; the limit is {limit:,} bytes per event"


def _dead_letter(value: bytes, reason: str, origin: str) -> OutgoingRecord:
    headers = (
        (ERROR_HEADER, reason[:_MAX_REASON].encode()),
        (ORIGIN_HEADER, origin.encode()),
    )
    return OutgoingRecord(None, value, headers)
