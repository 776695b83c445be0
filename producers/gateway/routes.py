"""The gateway's routes: ``POST /v1/events``, ``/healthz`` and ``/readyz``. Thin: decode
the request, call the ``Ingestor`` in a worker thread, return its outcome."""

from __future__ import annotations

import logging
from typing import Any, Final

from fastapi import APIRouter, HTTPException, Request, Response, status
from fastapi.concurrency import run_in_threadpool

from events.log import LogUnavailableError
from producers.gateway import cloudevents
from producers.gateway.deps import IngestorDep, IngestPrincipal, ReadinessDep
from producers.gateway.ingest import BodyKind
from producers.gateway.limits import read_body
from producers.gateway.models import (
    CLOUDEVENT_EXAMPLE,
    NATIVE_EXAMPLE,
    ErrorResponse,
    HealthStatus,
    IngestResult,
)

log = logging.getLogger("producers.gateway")

router = APIRouter()

ACCEPTED_TYPES: Final = ", ".join(kind.value for kind in BodyKind)
RETRY_AFTER_S: Final = 5


def body_kind(request: Request) -> BodyKind:
    """The body's kind from ``Content-Type``; 415 for anything else (or non-UTF-8, gzip)."""
    media, _, params = request.headers.get("content-type", "").partition(";")
    try:
        kind = BodyKind(media.strip().lower())
    except ValueError:
        raise HTTPException(
            status.HTTP_415_UNSUPPORTED_MEDIA_TYPE,
            f"unsupported Content-Type {media.strip() or '(none)'!r}; send {ACCEPTED_TYPES}",
        ) from None
    for param in params.split(";"):
        name, _, value = param.partition("=")
        if name.strip().lower() == "charset" and value.strip().strip('"').lower() != "utf-8":
            raise HTTPException(status.HTTP_415_UNSUPPORTED_MEDIA_TYPE, "JSON must be UTF-8")
    encoding = request.headers.get("content-encoding", "identity").strip().lower()
    if encoding != "identity":
        raise HTTPException(
            status.HTTP_415_UNSUPPORTED_MEDIA_TYPE, f"unsupported Content-Encoding {encoding!r}"
        )
    return kind


def _error(description: str) -> dict[str, Any]:
    return {"model": ErrorResponse, "description": description}


INGEST_RESPONSES: Final[dict[int | str, dict[str, Any]]] = {
    200: {"model": IngestResult, "description": "Every event accepted: stored with acks=all."},
    207: {
        "model": IngestResult,
        "description": "Some accepted (stored), some rejected (dead-lettered); see results.",
    },
    400: _error("The body is not JSON, or not an event/array (dead-lettered whole)."),
    401: _error("No valid API key (`WWW-Authenticate: Bearer`)."),
    403: _error("The key lacks the `ingest` scope."),
    413: _error("Over a limit: events per request, bytes per event or per request."),
    415: _error("Unsupported Content-Type or Content-Encoding."),
    422: {
        "model": IngestResult,
        "description": "No event accepted: every one rejected, dead-lettered; see results.",
    },
    503: {
        "model": ErrorResponse,
        "description": "Kafka did not acknowledge in time: nothing was accepted; retry after "
        "`Retry-After` seconds (retries are deduplicated by event_id).",
        "headers": {"Retry-After": {"schema": {"type": "integer"}, "description": "seconds"}},
    },
}


def _body(schema: dict[str, Any], examples: dict[str, Any]) -> dict[str, Any]:
    return {"schema": schema, "examples": {k: {"value": v} for k, v in examples.items()}}


_ENVELOPE = {"$ref": "#/components/schemas/EventEnvelope"}
_CLOUDEVENT = {"$ref": "#/components/schemas/CloudEvent"}
INGEST_REQUEST_BODY: Final = {
    "required": True,
    "content": {
        BodyKind.NATIVE.value: _body(
            {"oneOf": [_ENVELOPE, {"type": "array", "items": _ENVELOPE}]},
            {"one event": NATIVE_EXAMPLE, "a batch": [NATIVE_EXAMPLE]},
        ),
        BodyKind.CLOUDEVENT.value: _body(_CLOUDEVENT, {"one CloudEvent": CLOUDEVENT_EXAMPLE}),
        BodyKind.CLOUDEVENT_BATCH.value: _body(
            {"type": "array", "items": _CLOUDEVENT}, {"a batch": [CLOUDEVENT_EXAMPLE]}
        ),
    },
}


@router.post(
    "/v1/events",
    summary="Publish events (native envelopes or CloudEvents), one or a batch",
    description=f"""Validates every event against the contract, stores the valid ones in
the event log and answers only after Kafka acknowledged them (`acks=all`).
Invalid events are rejected one by one (results by index, with field errors) and kept
in the dead-letter topic with the reason.

* `application/json`: one envelope or an array. Without `event_id`, the id is derived
  from the event's content, so a retried event is counted once. `recorded_at` is set
  by the gateway.
* `application/cloudevents+json`, `application/cloudevents-batch+json`: CloudEvents 1.0,
  structured mode. Mapping:

{cloudevents.mapping_table()}

  Other attributes and extensions are ignored. Errors name CloudEvents attributes
  (`data.lines.0.quantity`, `time`).""",
    responses=INGEST_RESPONSES,
    openapi_extra={"requestBody": INGEST_REQUEST_BODY},
    response_class=Response,
    tags=["ingest"],
)
async def publish_events(
    request: Request, principal: IngestPrincipal, ingestor: IngestorDep
) -> Response:
    kind = body_kind(request)
    body = await read_body(request, ingestor.limits.max_request_bytes)
    outcome = await run_in_threadpool(ingestor.ingest, body, kind)
    log.info(
        "key %s: %d accepted, %d rejected -> %d",
        principal.key_id,
        outcome.accepted,
        outcome.rejected,
        outcome.status,
    )
    return Response(outcome.body, status_code=outcome.status, media_type="application/json")


@router.get("/healthz", response_model=HealthStatus, tags=["health"])
async def healthz() -> HealthStatus:
    """The process is up (liveness)."""
    return HealthStatus(status="ok")


@router.get(
    "/readyz",
    response_model=HealthStatus,
    responses={503: _error("Kafka is not reachable: do not route traffic here.")},
    tags=["health"],
)
async def readyz(check: ReadinessDep) -> HealthStatus:
    """Kafka answers a metadata request (checked at most every 2 s)."""
    try:
        await run_in_threadpool(check)
    except LogUnavailableError as exc:
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, f"not ready: {exc}") from None
    return HealthStatus(status="ready")
