"""The FastAPI application of the ingest gateway, built from its adapters.

``create_app`` takes already-built adapters (the composition root is ``crm ingest
serve``; tests pass an embedded log and an SQLite key store). Request bodies and keys
are never logged: the gateway logs counts, statuses and key ids only.
"""

from __future__ import annotations

import logging
import re
from typing import Any

from fastapi import FastAPI, Request
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse

from auth import ApiKeyStore
from events.log import EventLog, LogUnavailableError
from producers.gateway.health import CachedCheck, ReadinessCheck, always_ready
from producers.gateway.ingest import Ingestor, RequestRejected
from producers.gateway.limits import GatewayLimits
from producers.gateway.models import CLOUDEVENT_SCHEMA
from producers.gateway.routes import RETRY_AFTER_S, router
from schemas import envelope_json_schema

log = logging.getLogger("producers.gateway")

TITLE = "LoopCRM ingest gateway"
VERSION = "1.0.0"


def create_app(
    event_log: EventLog,
    deadletters_log: EventLog,
    key_store: ApiKeyStore,
    limits: GatewayLimits | None = None,
    *,
    readiness: ReadinessCheck = always_ready,
    readiness_ttl_s: float = 2.0,
) -> FastAPI:
    """The gateway app. ``readiness`` raises ``LogUnavailableError`` when Kafka is not
    reachable (see ``producers.gateway.health.KafkaProbe``); it runs at most once per
    ``readiness_ttl_s``."""
    app = FastAPI(
        title=TITLE,
        version=VERSION,
        description="Touchpoints publish events over HTTP. Every event is validated against "
        "LoopCRM's contract; 2xx means Kafka acknowledged it (acks=all).",
    )
    app.state.ingestor = Ingestor(event_log, deadletters_log, limits or GatewayLimits())
    app.state.key_store = key_store
    app.state.readiness = CachedCheck(readiness, ttl_s=readiness_ttl_s)
    app.include_router(router)
    app.add_exception_handler(RequestRejected, _request_rejected)
    app.add_exception_handler(LogUnavailableError, _log_unavailable)
    app.openapi = lambda: _openapi(app)  # type: ignore[method-assign]
    return app


async def _request_rejected(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestRejected)
    return JSONResponse({"detail": exc.detail}, status_code=exc.status)


async def _log_unavailable(_request: Request, exc: Exception) -> JSONResponse:
    log.warning("event log unavailable, answered 503: %s", exc)
    return JSONResponse(
        {
            "detail": "the event log did not acknowledge in time: nothing was stored; "
            f"retry in {RETRY_AFTER_S} s (retried events keep their event_id)"
        },
        status_code=503,
        headers={"Retry-After": str(RETRY_AFTER_S)},
    )


def _openapi(app: FastAPI) -> dict[str, Any]:
    """FastAPI's schema plus the contract's envelope and the CloudEvent, as components."""
    if app.openapi_schema:
        return app.openapi_schema
    schema = get_openapi(
        title=app.title, version=app.version, description=app.description, routes=app.routes
    )
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    envelope = envelope_json_schema()
    definitions = envelope.pop("$defs", {})
    envelope.pop("$schema", None)
    envelope.pop("$id", None)
    added = {**definitions, "EventEnvelope": envelope, "CloudEvent": CLOUDEVENT_SCHEMA}
    clashes = set(added) & set(components)
    if clashes:
        raise RuntimeError(f"OpenAPI component names clash: {sorted(clashes)}")
    components.update(_rewrite_refs(added))
    app.openapi_schema = schema
    return schema


def _rewrite_refs(value: Any) -> Any:
    if isinstance(value, dict):
        return {
            key: re.sub(r"^#/\$defs/", "#/components/schemas/", item)
            if key == "$ref" and isinstance(item, str)
            else _rewrite_refs(item)
            for key, item in value.items()
        }
    if isinstance(value, list):
        return [_rewrite_refs(item) for item in value]
    return value
