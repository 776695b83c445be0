"""The FastAPI application of the read API, built from its adapters.

``create_app`` takes an engine on the projection tables and a key store (the
composition root is ``crm api serve``; tests pass SQLite), and optionally the
``Protector`` that opens sealed personal data and hashes identifiers typed in a search,
and the event log that erasure requests are appended to. Nothing personal is logged:
log lines carry the route template (never the path or the query), status and timing.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.engine import Engine
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from auth import ApiKeyStore
from events.log import EventLog
from privacy.protect import Protector
from read_api.freshness import PositionWatch
from read_api.metrics import RequestMetrics
from read_api.notices import PostgresCheckpointNotices
from read_api.routes import api_router
from read_api.store import ReadStore

log = logging.getLogger("read_api")

TITLE = "LoopCRM read API"
VERSION = "1.0.0"


def create_app(
    engine: Engine,
    key_store: ApiKeyStore,
    *,
    topic: str = "crm.events",
    schema: str = "crm",
    log_ends: Callable[[], Mapping[int, int]] | None = None,
    max_lag: int = 10_000,
    protector: Protector | None = None,
    event_log: EventLog | None = None,
) -> FastAPI:
    """The read API over the projections of ``topic`` in ``schema`` (PostgreSQL).

    ``log_ends`` gives the log's end offsets per partition (e.g. ``EventLog.end_offsets``):
    with it, ``/readyz`` fails when the projections are more than ``max_lag`` records
    behind, and ``/metrics`` reports the lag per partition.

    ``protector`` must be the one the doors seal with: without it identifiers are
    searched as typed (projections of plain events) and timelines show events sealed.
    ``event_log`` (sealing on append) takes erasure requests; without it they get 503.
    """
    app = FastAPI(
        title=TITLE,
        version=VERSION,
        description="The single customer view, served from the projections. Every answer "
        "says how far the projections had read the log (`freshness`); `min_position` "
        "waits for your own writes. API keys need the `read` scope (`analyst` for "
        "assessments and campaign results, `admin` for erasure and export).",
    )
    store = app.state.store = ReadStore(engine, topic, schema=schema, protector=protector)
    notices = (
        PostgresCheckpointNotices(engine, store.schema)
        if engine.dialect.name == "postgresql"
        else None
    )
    app.state.position_watch = PositionWatch(store.positions, notices=notices)
    if notices is not None:
        app.router.on_shutdown.append(notices.close)
    app.state.event_log = event_log
    app.state.key_store = key_store
    app.state.metrics = RequestMetrics()
    app.state.log_ends = None if log_ends is None else CachedEnds(log_ends)
    app.state.max_lag = max_lag
    app.include_router(api_router)
    app.add_middleware(ObserveMiddleware, metrics=app.state.metrics)
    app.exception_handler(RequestValidationError)(_invalid_request)
    return app


async def _invalid_request(request: Request, exc: Exception) -> JSONResponse:
    """Every 4xx has the same shape (``ErrorPublic``): one message naming each bad
    parameter and what is wrong, never echoing the value (it may be personal data)."""
    assert isinstance(exc, RequestValidationError)
    problems = []
    for error in exc.errors():
        where = ".".join(str(part) for part in error.get("loc", ()) if part != "body")
        problems.append(f"{where}: {error.get('msg', 'invalid')}")
    return JSONResponse({"detail": "; ".join(problems) or "invalid request"}, status_code=422)


class CachedEnds:
    """End offsets fetched at most once a second (probes and scrapes come often)."""

    def __init__(self, fetch: Callable[[], Mapping[int, int]], ttl: float = 1.0) -> None:
        self._fetch, self._ttl = fetch, ttl
        self._at, self._value = 0.0, dict[int, int]()

    def __call__(self) -> dict[int, int]:
        now = time.monotonic()
        if now - self._at > self._ttl:
            self._value, self._at = dict(self._fetch()), now
        return self._value


class ObserveMiddleware:
    """Metrics and one log line per request, by route template (a pure ASGI middleware:
    Starlette's ``BaseHTTPMiddleware`` costs a task and a stream per request)."""

    def __init__(self, app: ASGIApp, metrics: RequestMetrics) -> None:
        self.app, self.metrics = app, metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def sending(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            elapsed = time.perf_counter() - started
            template = getattr(scope.get("route"), "path", "(unmatched)")
            self.metrics.observe(scope["method"], template, status, elapsed)
            log.info("%s %s -> %d in %.1f ms", scope["method"], template, status, elapsed * 1e3)
