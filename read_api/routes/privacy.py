"""``/v1/customers/{id}/erasure`` and ``/export``: a data subject's rights (GDPR art. 17,
15), for keys with the ``admin`` scope. Thin: resolve the id, call ``privacy.subject``.

An erasure is a request appended to the log (``customer.erasure_requested``); the
processor destroys the keys and redacts the projections, after which the customer 360
shows ``erased_at``.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any, Final

from fastapi import APIRouter, Body, HTTPException, Path, Response, status

from privacy.subject import request_erasure
from read_api.deps import AdminPrincipal, EventLogDep, StoreDep
from read_api.models import (
    ErasureRequestedPublic,
    ErasureRequestIn,
    ErrorPublic,
    SubjectExportPublic,
    respond,
)

router = APIRouter(prefix="/v1/customers", tags=["privacy"])

CustomerId = Annotated[str, Path(min_length=1, max_length=64, description="a customer id")]
NOT_FOUND: Final = "customer not found"


def _error(description: str) -> dict[str, Any]:
    return {"model": ErrorPublic, "description": description}


ADMIN_RESPONSES: Final[dict[int | str, dict[str, Any]]] = {
    401: _error("No valid API key (`WWW-Authenticate: Bearer`)."),
    403: _error("The key lacks the `admin` scope."),
    404: _error("No customer has, or had, this id."),
    422: _error("A parameter or the body is invalid."),
}


@router.post(
    "/{customer_id}/erasure",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=ErasureRequestedPublic,
    responses={
        **ADMIN_RESPONSES,
        400: _error("The body could not be read (not UTF-8 text)."),
        503: _error("The API was started without an event log to append the request to."),
    },
)
def request_customer_erasure(
    _principal: AdminPrincipal,
    store: StoreDep,
    event_log: EventLogDep,
    customer_id: CustomerId,
    body: Annotated[ErasureRequestIn | None, Body()] = None,
) -> Response:
    """Ask for the customer (a live or merged id) to be erased: their data keys are
    destroyed and every projection redacted by the processor. Cannot be undone."""
    live = store.resolve(customer_id)
    if live is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, NOT_FOUND)
    asked = body or ErasureRequestIn()
    event = request_erasure(
        event_log,
        live,
        now=datetime.now(UTC),
        reason=asked.reason,
        requested_by=asked.requested_by,
    )
    return respond(
        ErasureRequestedPublic(
            customer_id=live, request_id=str(event.event_id), status="requested"
        ),
        status.HTTP_202_ACCEPTED,
    )


@router.get("/{customer_id}/export", response_model=SubjectExportPublic, responses=ADMIN_RESPONSES)
def export_customer(
    _principal: AdminPrincipal, store: StoreDep, customer_id: CustomerId
) -> dict[str, Any]:
    """Everything held about the customer (subject access request), as one document."""
    found = store.export(customer_id, now=datetime.now(UTC))
    if found is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, NOT_FOUND)
    return found
