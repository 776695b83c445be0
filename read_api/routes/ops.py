"""Operations: ``/healthz`` (the process is up), ``/readyz`` (the database answers and,
when the API knows the log, the projections are at most ``max_lag`` records behind it)
and ``/metrics`` (Prometheus text, with the lag per partition)."""

from __future__ import annotations

import logging
from collections.abc import Mapping

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
    responses={
        503: {
            "model": HealthPublic,
            "description": "The database is not reachable, or the projections are too far "
            "behind the log.",
        }
    },
)
async def readyz(request: Request, store: StoreDep) -> Response:
    try:
        positions = await run_in_threadpool(store.positions)
    except SQLAlchemyError as exc:
        log.warning("not ready: %s", type(exc).__name__)
        return _unavailable("the projection database is not reachable")
    ends = request.app.state.log_ends
    if ends is not None:
        try:
            lag = _lag(await run_in_threadpool(ends), positions)
        except Exception as exc:  # the log is down: the projections cannot be judged
            log.warning("not ready: the log did not answer (%s)", type(exc).__name__)
            return _unavailable("the event log is not reachable")
        limit = request.app.state.max_lag
        if sum(lag.values()) > limit:
            behind = sum(lag.values())
            return _unavailable(f"the projections are {behind} records behind (max {limit})")
    return JSONResponse(HealthPublic(status="ok").model_dump())


def _unavailable(detail: str) -> JSONResponse:
    body = HealthPublic(status="unavailable", detail=detail)
    return JSONResponse(body.model_dump(), status_code=status.HTTP_503_SERVICE_UNAVAILABLE)


def _lag(ends: Mapping[int, int], positions: Mapping[int, int]) -> dict[int, int]:
    return {p: max(0, end - positions.get(p, 0)) for p, end in ends.items()}


@router.get("/metrics", response_class=PlainTextResponse)
async def metrics(request: Request, store: StoreDep) -> PlainTextResponse:
    recorder: RequestMetrics = request.app.state.metrics
    try:
        positions = await run_in_threadpool(store.positions)
    except SQLAlchemyError:
        positions = None
    lag = None
    ends = request.app.state.log_ends
    if ends is not None and positions is not None:
        try:
            lag = _lag(await run_in_threadpool(ends), positions)
        except Exception:  # reported as missing lag samples
            lag = None
    return PlainTextResponse(
        recorder.render(store.topic, positions, lag), media_type="text/plain; version=0.0.4"
    )
