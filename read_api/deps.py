"""Dependencies of the read API's routes, as ``Annotated`` aliases."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Header, HTTPException, Query, Request, status
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer

from auth import ApiKeyStore, AuthError, Principal, Scope
from read_api.freshness import MAX_WAIT_MS, InvalidPositionError, parse_positions, wait_for
from read_api.store import ReadStore

bearer_scheme = HTTPBearer(
    auto_error=False,
    scheme_name="BearerKey",
    description="`Authorization: Bearer crm_<key id>_<secret>` (an API key, see `crm keys`)",
)
api_key_scheme = APIKeyHeader(
    name="X-API-Key",
    auto_error=False,
    scheme_name="ApiKeyHeader",
    description="`X-API-Key: crm_<key id>_<secret>` (the same key, for clients without Bearer)",
)
CHALLENGE = {"WWW-Authenticate": "Bearer"}


def get_store(request: Request) -> ReadStore:
    store: ReadStore = request.app.state.store
    return store


def require_read_scope(
    request: Request,
    bearer: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer_scheme)],
    api_key: Annotated[str | None, Depends(api_key_scheme)],
) -> Principal:
    """The caller's principal; 401 without a valid key, 403 without the ``read`` scope
    (``admin`` implies it). A plain ``def``: a cache miss reads the database."""
    presented = bearer.credentials if bearer is not None else api_key
    if not presented:
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED,
            "missing API key: send Authorization: Bearer <key> or X-API-Key: <key>",
            headers=CHALLENGE,
        )
    keys: ApiKeyStore = request.app.state.key_store
    try:
        return keys.verify(presented, Scope.READ)
    except AuthError as exc:
        raise HTTPException(
            exc.status, exc.message, headers=CHALLENGE if exc.status == 401 else None
        ) from None


StoreDep = Annotated[ReadStore, Depends(get_store)]
ReadPrincipal = Annotated[Principal, Depends(require_read_scope)]


async def wait_for_position(
    store: StoreDep,
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
    await wait_for(store.positions, wanted, wait_ms)
    return wanted


WantedPositions = Annotated[dict[int, int], Depends(wait_for_position)]
