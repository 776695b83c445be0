"""Operations: ``/healthz`` (the process is up), ``/readyz`` (the database answers and
the projection tables exist) and ``/metrics`` (Prometheus text)."""

from __future__ import annotations

import logging

from fastapi import APIRouter, Request, Response, status
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, PlainTextResponse
from sqlalchemy.exc import SQLAlchemyError

from read_api.deps import StoreDep
from read_api.metrics import RequestMetrics
from read_api.models import HealthPublic

log = logging.getLogger("read_api")
router = APIRouter(tags=["operations"])


@router.get("/healthz", response_model=HealthPublic)
async def healthz() -> HealthPublic:
    return HealthPublic(status="ok")


@router.get(
    "/readyz",
    response_model=HealthPublic,
    responses={503: {"model": HealthPublic, "description": "The database is not reachable."}},
)
async def readyz(store: StoreDep) -> Response:
    try:
        await run_in_threadpool(store.ping)
    except SQLAlchemyError as exc:
        log.warning("not ready: %s", type(exc).__name__)
        body = HealthPublic(status="unavailable", detail="the projection database is not reachable")
        return JSONResponse(body.model_dump(), status_code=status.HTTP_503_SERVICE_UNAVAILABLE)
    return JSONResponse(HealthPublic(status="ok").model_dump())


@router.get("/metrics", response_class=PlainTextResponse)
async def metrics(request: Request, store: StoreDep) -> PlainTextResponse:
    recorder: RequestMetrics = request.app.state.metrics
    try:
        positions = await run_in_threadpool(store.positions)
    except SQLAlchemyError:
        positions = None
    return PlainTextResponse(
        recorder.render(store.topic, positions), media_type="text/plain; version=0.0.4"
    )
