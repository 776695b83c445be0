"""API-key authentication for FastAPI services (the ingest gateway, the read API).

``scope_dependency(Scope.READ)`` is a dependency returning the caller's ``Principal``:
401 (with ``WWW-Authenticate: Bearer``) without a valid key, 403 without the scope.
The app keeps its ``ApiKeyStore`` in ``app.state.key_store``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated

from fastapi import Depends, HTTPException, Request, status
from fastapi.concurrency import run_in_threadpool
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer

from auth.keys import AuthError, Principal, Scope
from auth.store import ApiKeyStore

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


def scope_dependency(scope: Scope) -> Callable[..., Awaitable[Principal]]:
    """A FastAPI dependency that admits keys holding ``scope`` (``admin`` implies all)."""

    async def require_scope(
        request: Request,
        bearer: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer_scheme)],
        api_key: Annotated[str | None, Depends(api_key_scheme)],
    ) -> Principal:
        # A key verified lately answers from memory; a miss reads the DB in a worker thread.
        presented = bearer.credentials if bearer is not None else api_key
        if not presented:
            raise HTTPException(
                status.HTTP_401_UNAUTHORIZED,
                "missing API key: send Authorization: Bearer <key> or X-API-Key: <key>",
                headers=CHALLENGE,
            )
        store: ApiKeyStore = request.app.state.key_store
        try:
            principal = store.verify_cached(presented, scope)
            if principal is None:
                principal = await run_in_threadpool(store.verify, presented, scope)
            return principal
        except AuthError as exc:
            raise HTTPException(
                exc.status, exc.message, headers=CHALLENGE if exc.status == 401 else None
            ) from None

    return require_scope
