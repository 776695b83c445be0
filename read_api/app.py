"""The FastAPI application of the read API, built from its adapters.

``create_app`` takes an engine on the projection tables and a key store (the
composition root is ``crm api serve``; tests pass SQLite). Nothing personal is logged:
log lines carry the route template (never the path or the query), status and timing.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable

from fastapi import FastAPI, Request, Response
from sqlalchemy.engine import Engine

from auth import ApiKeyStore
from read_api.metrics import RequestMetrics
from read_api.routes import api_router
from read_api.store import ReadStore

log = logging.getLogger("read_api")

TITLE = "LoopCRM read API"
VERSION = "1.0.0"


def create_app(
    engine: Engine, key_store: ApiKeyStore, *, topic: str = "crm.events", schema: str = "crm"
) -> FastAPI:
    """The read API over the projections of ``topic`` in ``schema`` (PostgreSQL)."""
    app = FastAPI(
        title=TITLE,
        version=VERSION,
        description="The single customer view, served from the projections. Every answer "
        "says how far the projections had read the log (`freshness`); `min_position` "
        "waits for your own writes. API keys need the `read` scope.",
    )
    app.state.store = ReadStore(engine, topic, schema=schema)
    app.state.key_store = key_store
    app.state.metrics = RequestMetrics()
    app.include_router(api_router)
    app.middleware("http")(_observe)
    return app


async def _observe(
    request: Request, call_next: Callable[[Request], Awaitable[Response]]
) -> Response:
    started = time.perf_counter()
    response = await call_next(request)
    elapsed = time.perf_counter() - started
    route = request.scope.get("route")
    template = getattr(route, "path", "(unmatched)")
    request.app.state.metrics.observe(request.method, template, response.status_code, elapsed)
    log.info(
        "%s %s -> %d in %.1f ms", request.method, template, response.status_code, elapsed * 1e3
    )
    return response
