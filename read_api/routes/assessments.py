"""``/v1/assessments``: customer assessment runs and their summaries (the `analyst` scope)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Path, Response, status

from read_api.cursor import InvalidCursorError
from read_api.deps import AnalystPrincipal, StoreDep, WantedPositions
from read_api.freshness import freshness
from read_api.models import AssessmentPublic, AssessmentRunPublic, AssessmentRunsPublic, respond
from read_api.routes.customers import AUTH_RESPONSES, Cursor, Limit, _422, _error

router = APIRouter(prefix="/v1/assessments", tags=["assessments"])

RunId = Annotated[str, Path(min_length=1, max_length=128, description="an assessment run id")]
RESPONSES: dict[int | str, dict[str, Any]] = {
    **AUTH_RESPONSES,
    403: _error("The key lacks the `analyst` scope."),
}


@router.get("", response_model=AssessmentRunsPublic, responses=RESPONSES)
def list_assessments(
    _principal: AnalystPrincipal,
    store: StoreDep,
    wanted: WantedPositions,
    limit: Limit = 50,
    cursor: Cursor = None,
) -> Response:
    """Assessment runs, newest first (`completed_at`, then `run_id`); no summaries."""
    try:
        page = store.assessments(limit=limit, after=cursor)
    except InvalidCursorError as exc:
        raise HTTPException(_422, f"invalid cursor: {exc}") from None
    return respond(
        AssessmentRunsPublic(
            data=[AssessmentRunPublic(**r) for r in page.rows],
            next_cursor=page.next_cursor,
            freshness=freshness(store.topic, page.positions, wanted),
        )
    )


@router.get(
    "/latest",
    response_model=AssessmentPublic,
    responses={**RESPONSES, 404: _error("No assessment has run yet.")},
)
def get_latest_assessment(
    _principal: AnalystPrincipal, store: StoreDep, wanted: WantedPositions
) -> Response:
    """The newest assessment run with its summary."""
    run, positions = store.assessment(None)
    if run is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, "no assessment has run yet")
    return respond(AssessmentPublic(**run, freshness=freshness(store.topic, positions, wanted)))


@router.get(
    "/{run_id}",
    response_model=AssessmentPublic,
    responses={**RESPONSES, 404: _error("No assessment run has this id.")},
)
def get_assessment(
    _principal: AnalystPrincipal, store: StoreDep, wanted: WantedPositions, run_id: RunId
) -> Response:
    """One assessment run with its summary."""
    run, positions = store.assessment(run_id)
    if run is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"assessment run {run_id} not found")
    return respond(AssessmentPublic(**run, freshness=freshness(store.topic, positions, wanted)))
