"""``/v1/segments``: segment definitions, current members and membership history."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Path, Response, status

from read_api.cursor import InvalidCursorError
from read_api.deps import ReadPrincipal, StoreDep, WantedPositions
from read_api.freshness import freshness
from read_api.models import (
    SegmentChangePublic,
    SegmentHistoryPublic,
    SegmentMemberPublic,
    SegmentMembersPublic,
    SegmentPublic,
    SegmentsPublic,
    SegmentSummaryPublic,
    SegmentVersionPublic,
    respond,
)
from read_api.routes.customers import AUTH_RESPONSES, Cursor, Limit, _422, _error

router = APIRouter(prefix="/v1/segments", tags=["segments"])

SegmentId = Annotated[str, Path(min_length=1, max_length=128, description="a segment id")]
NOT_FOUND: dict[int | str, dict[str, Any]] = {
    404: _error("No segment was ever defined with this id.")
}


def _not_found(segment_id: str) -> HTTPException:
    return HTTPException(status.HTTP_404_NOT_FOUND, f"segment {segment_id} not found")


@router.get("", response_model=SegmentsPublic, responses=AUTH_RESPONSES)
def list_segments(_principal: ReadPrincipal, store: StoreDep, wanted: WantedPositions) -> Response:
    """Every segment, active and retired: its latest version and current member count."""
    rows, positions = store.segments()
    return respond(
        SegmentsPublic(
            data=[SegmentSummaryPublic(**r) for r in rows],
            freshness=freshness(store.topic, positions, wanted),
        )
    )


@router.get(
    "/{segment_id}", response_model=SegmentPublic, responses={**AUTH_RESPONSES, **NOT_FOUND}
)
def get_segment(
    _principal: ReadPrincipal, store: StoreDep, wanted: WantedPositions, segment_id: SegmentId
) -> Response:
    """The segment's latest version and the history of its definition (every version)."""
    latest, versions, positions = store.segment(segment_id)
    if latest is None:
        raise _not_found(segment_id)
    return respond(
        SegmentPublic(
            **latest,
            history=[SegmentVersionPublic(**v) for v in versions],
            freshness=freshness(store.topic, positions, wanted),
        )
    )


@router.get(
    "/{segment_id}/members",
    response_model=SegmentMembersPublic,
    responses={**AUTH_RESPONSES, **NOT_FOUND},
)
def get_segment_members(
    _principal: ReadPrincipal,
    store: StoreDep,
    wanted: WantedPositions,
    segment_id: SegmentId,
    limit: Limit = 50,
    cursor: Cursor = None,
) -> Response:
    """Current members of the segment's latest version, by customer id."""
    try:
        found = store.segment_members(segment_id, limit=limit, after=cursor)
    except InvalidCursorError as exc:
        raise HTTPException(_422, f"invalid cursor: {exc}") from None
    if found is None:
        raise _not_found(segment_id)
    version, page = found
    return respond(
        SegmentMembersPublic(
            segment_id=segment_id,
            version=version,
            data=[SegmentMemberPublic(**r) for r in page.rows],
            next_cursor=page.next_cursor,
            freshness=freshness(store.topic, page.positions, wanted),
        )
    )


@router.get(
    "/{segment_id}/history",
    response_model=SegmentHistoryPublic,
    responses={**AUTH_RESPONSES, **NOT_FOUND},
)
def get_segment_history(
    _principal: ReadPrincipal,
    store: StoreDep,
    wanted: WantedPositions,
    segment_id: SegmentId,
    limit: Limit = 50,
    cursor: Cursor = None,
) -> Response:
    """Customers entering and leaving the segment, newest first (`occurred_at`, `event_id`)."""
    try:
        page = store.segment_history(segment_id, limit=limit, after=cursor)
    except InvalidCursorError as exc:
        raise HTTPException(_422, f"invalid cursor: {exc}") from None
    if page is None:
        raise _not_found(segment_id)
    return respond(
        SegmentHistoryPublic(
            segment_id=segment_id,
            data=[SegmentChangePublic(**r) for r in page.rows],
            next_cursor=page.next_cursor,
            freshness=freshness(store.topic, page.positions, wanted),
        )
    )
