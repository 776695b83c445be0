"""Dependencies of the gateway's routes, as ``Annotated`` aliases."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, HTTPException, Request, status
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer

from auth import ApiKeyStore, AuthError, Principal, Scope
from producers.gateway.health import ReadinessCheck
from producers.gateway.ingest import Ingestor

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


def get_ingestor(request: Request) -> Ingestor:
    ingestor: Ingestor = request.app.state.ingestor
    return ingestor


def get_readiness(request: Request) -> ReadinessCheck:
    check: ReadinessCheck = request.app.state.readiness
    return check


def require_ingest_scope(
    request: Request,
    bearer: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer_scheme)],
    api_key: Annotated[str | None, Depends(api_key_scheme)],
) -> Principal:
    """The caller's principal; 401 without a valid key, 403 without the ``ingest`` scope.

    A plain ``def``: FastAPI runs it in a worker thread, as a cache miss reads the database.
    """
    presented = bearer.credentials if bearer is not None else api_key
    if not presented:
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED,
            "missing API key: send Authorization: Bearer <key> or X-API-Key: <key>",
            headers=CHALLENGE,
        )
    store: ApiKeyStore = request.app.state.key_store
    try:
        return store.verify(presented, Scope.INGEST)
    except AuthError as exc:
        raise HTTPException(
            exc.status, exc.message, headers=CHALLENGE if exc.status == 401 else None
        ) from None


IngestorDep = Annotated[Ingestor, Depends(get_ingestor)]
ReadinessDep = Annotated[ReadinessCheck, Depends(get_readiness)]
IngestPrincipal = Annotated[Principal, Depends(require_ingest_scope)]
