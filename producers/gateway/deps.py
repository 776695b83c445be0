"""Dependencies of the gateway's routes, as ``Annotated`` aliases."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from auth import Principal, Scope
from auth.http import scope_dependency
from producers.gateway.health import ReadinessCheck
from producers.gateway.ingest import Ingestor


async def get_ingestor(request: Request) -> Ingestor:
    ingestor: Ingestor = request.app.state.ingestor
    return ingestor


async def get_readiness(request: Request) -> ReadinessCheck:
    check: ReadinessCheck = request.app.state.readiness
    return check


IngestorDep = Annotated[Ingestor, Depends(get_ingestor)]
ReadinessDep = Annotated[ReadinessCheck, Depends(get_readiness)]
IngestPrincipal = Annotated[Principal, Depends(scope_dependency(Scope.INGEST))]
