"""Dependencies of the read API's routes, as ``Annotated`` aliases."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Header, HTTPException, Query, Request, status

from auth import Principal, Scope
from auth.http import scope_dependency
from events.log import EventLog
from read_api.freshness import MAX_WAIT_MS, InvalidPositionError, PositionWatch, parse_positions
from read_api.store import ReadStore


async def get_store(request: Request) -> ReadStore:
    store: ReadStore = request.app.state.store
    return store


StoreDep = Annotated[ReadStore, Depends(get_store)]
ReadPrincipal = Annotated[Principal, Depends(scope_dependency(Scope.READ))]
AnalystPrincipal = Annotated[Principal, Depends(scope_dependency(Scope.ANALYST))]
AdminPrincipal = Annotated[Principal, Depends(scope_dependency(Scope.ADMIN))]


async def get_event_log(request: Request) -> EventLog:
    """The log the API appends requests to (erasures); 503 when it was built without one."""
    event_log: EventLog | None = request.app.state.event_log
    if event_log is None:
        raise HTTPException(
            status.HTTP_503_SERVICE_UNAVAILABLE,
            "this API was started without an event log: it cannot take requests that write",
        )
    return event_log


EventLogDep = Annotated[EventLog, Depends(get_event_log)]


async def get_position_watch(request: Request) -> PositionWatch:
    watch: PositionWatch = request.app.state.position_watch
    return watch


async def wait_for_position(
    watch: Annotated[PositionWatch, Depends(get_position_watch)],
    min_position: Annotated[
        str | None,
        Query(
            description="PARTITION:OFFSET[,...]: answer once the projections include these "
            "log positions (e.g. the gateway's answer for your write)",
            examples=["0:1200,3:77"],
            max_length=2_000,
        ),
    ] = None,
    x_min_position: Annotated[
        str | None, Header(description="the same as min_position", max_length=2_000)
    ] = None,
    wait_ms: Annotated[
        int,
        Query(ge=0, le=MAX_WAIT_MS, description="how long to wait for min_position (ms)"),
    ] = 0,
) -> dict[int, int]:
    """The positions asked for (empty if none), after waiting up to ``wait_ms`` for them."""
    text = min_position or x_min_position
    if not text:
        return {}
    try:
        wanted = parse_positions(text)
    except InvalidPositionError as exc:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, str(exc)) from None
    await watch.wait(wanted, wait_ms)
    return wanted


WantedPositions = Annotated[dict[int, int], Depends(wait_for_position)]
