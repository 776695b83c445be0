"""``/v1/customers``: search, the customer 360 and the timeline. Thin: validate, query, shape."""

from __future__ import annotations

from typing import Annotated, Any, Final

from fastapi import APIRouter, HTTPException, Path, Query, Response, status

from privacy.protect import Protector
from read_api.cursor import InvalidCursorError
from read_api.deps import ReadPrincipal, StoreDep, WantedPositions
from read_api.freshness import freshness
from read_api.models import (
    Customer360Public,
    CustomerCampaignPublic,
    CustomerCampaignsPublic,
    CustomerSegmentPublic,
    CustomerSegmentsPublic,
    CustomersPublic,
    CustomerSummaryPublic,
    ErrorPublic,
    IdentifierPublic,
    TimelineEventPublic,
    TimelinePublic,
    respond,
)
from read_api.store import CustomerSort
from schemas import IDENTIFIER_KINDS, Channel, normalize_email, normalize_phone

router = APIRouter(prefix="/v1/customers", tags=["customers"])

SORTS: Final = [s.value for s in CustomerSort] + [f"-{s.value}" for s in CustomerSort]
SORT_PATTERN: Final = "^-?(" + "|".join(s.value for s in CustomerSort) + ")$"
_422 = status.HTTP_422_UNPROCESSABLE_CONTENT


def _error(description: str) -> dict[str, Any]:
    return {"model": ErrorPublic, "description": description}


AUTH_RESPONSES: Final[dict[int | str, dict[str, Any]]] = {
    401: _error("No valid API key (`WWW-Authenticate: Bearer`)."),
    403: _error("The key lacks the `read` scope."),
    422: _error("A parameter is invalid (cursor, identifier, limit, min_position...)."),
}
Limit = Annotated[int, Query(ge=1, le=200, description="page size")]
Cursor = Annotated[
    str | None, Query(max_length=1_000, description="`next_cursor` of the previous page")
]
CustomerId = Annotated[str, Path(min_length=1, max_length=64, description="a customer id")]


def identifier_node(text: str, protector: Protector | None = None) -> str:
    """``kind:value`` -> the projection's node, value normalised as at ingestion and, with
    a ``protector``, a personal kind's value replaced by its keyed hash (as the nodes hold).

    Error messages never repeat the value (it is personal data)."""
    kind, sep, value = text.partition(":")
    if not sep or not value.strip():
        raise HTTPException(_422, "identifier must be KIND:VALUE, e.g. email:ana@example.com")
    if kind not in IDENTIFIER_KINDS:
        raise HTTPException(
            _422, f"unknown identifier kind; use one of {', '.join(IDENTIFIER_KINDS)}"
        )
    try:
        if protector is not None:
            value = protector.hasher.lookup(kind, value)
        elif kind == "email":
            value = normalize_email(value)
        elif kind == "phone":
            value = normalize_phone(value)
        else:
            value = value.strip()
    except ValueError:
        raise HTTPException(_422, f"the {kind} identifier is not valid") from None
    return f"{kind}:{value}"


@router.get("", response_model=CustomersPublic, responses=AUTH_RESPONSES)
def search_customers(
    _principal: ReadPrincipal,
    store: StoreDep,
    wanted: WantedPositions,
    identifier: Annotated[
        str | None,
        Query(
            max_length=300,
            description="KIND:VALUE; emails and phones are normalised as at ingestion",
            examples=["email:ana@example.com", "phone:+14155550123", "account_id:ACC-1"],
        ),
    ] = None,
    name: Annotated[
        str | None,
        Query(min_length=1, max_length=200, description="display name prefix, any case"),
    ] = None,
    sort: Annotated[
        str,
        Query(pattern=SORT_PATTERN, description=f"one of {', '.join(SORTS)} (`-` = descending)"),
    ] = "-last_seen",
    segment: Annotated[
        str | None,
        Query(min_length=1, max_length=128, description="only current members of this segment"),
    ] = None,
    rfm_segment: Annotated[
        str | None,
        Query(
            min_length=1,
            max_length=64,
            pattern=r"^[a-z0-9_]+$",
            description="only customers in this RFM segment (latest assessment)",
        ),
    ] = None,
    value_tier: Annotated[
        str | None,
        Query(
            pattern="^(A|B|C|none)$",
            description="only customers in this value tier (A, B, C or none; latest assessment)",
        ),
    ] = None,
    limit: Limit = 50,
    cursor: Cursor = None,
) -> Response:
    """Find customers by identifier, name prefix, segment membership, RFM segment or
    value tier; keyset pages, stable under inserts."""
    node = identifier_node(identifier, store.protector) if identifier is not None else None
    try:
        page = store.search(
            node=node,
            name_prefix=name,
            segment=segment,
            rfm_segment=rfm_segment,
            value_tier=value_tier,
            sort=CustomerSort(sort.lstrip("-")),
            descending=sort.startswith("-"),
            limit=limit,
            after=cursor,
        )
    except InvalidCursorError as exc:
        raise HTTPException(_422, f"invalid cursor: {exc}") from None
    return respond(
        CustomersPublic(
            data=[CustomerSummaryPublic(**row) for row in page.rows],
            next_cursor=page.next_cursor,
            freshness=freshness(store.topic, page.positions, wanted),
        )
    )


@router.get(
    "/{customer_id}",
    response_model=Customer360Public,
    responses={**AUTH_RESPONSES, 404: _error("No customer has, or had, this id.")},
)
def get_customer(
    _principal: ReadPrincipal, store: StoreDep, wanted: WantedPositions, customer_id: CustomerId
) -> Response:
    """The single customer view. A merged id answers with its survivor (`resolved_from`).
    An erased customer (`erased_at`) has no name and no personal identifiers."""
    found = store.customer(customer_id)
    if found is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"customer {customer_id} not found")
    return respond(
        Customer360Public(
            **found.row,
            resolved_from=found.resolved_from,
            identifiers=[
                IdentifierPublic(kind=k, value=v, shared=s) for k, v, s in found.identifiers
            ],
            freshness=freshness(store.topic, found.positions, wanted),
        )
    )


@router.get(
    "/{customer_id}/timeline",
    response_model=TimelinePublic,
    responses={**AUTH_RESPONSES, 404: _error("No customer has, or had, this id.")},
)
def get_timeline(
    _principal: ReadPrincipal,
    store: StoreDep,
    wanted: WantedPositions,
    customer_id: CustomerId,
    channel: Annotated[Channel | None, Query(description="only this touchpoint channel")] = None,
    type: Annotated[
        str | None,
        Query(max_length=100, pattern=r"^[a-z0-9_.]+$", description="only this event type"),
    ] = None,
    limit: Limit = 50,
    cursor: Cursor = None,
) -> Response:
    """The customer's events, newest first (`occurred_at` desc, then `event_id`), their
    personal data opened; an erased customer's events hold hashes and `[redacted]`."""
    try:
        live, page = store.timeline(
            customer_id,
            channel=None if channel is None else channel.value,
            event_type=type,
            limit=limit,
            after=cursor,
        )
    except InvalidCursorError as exc:
        raise HTTPException(_422, f"invalid cursor: {exc}") from None
    if live is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"customer {customer_id} not found")
    return respond(
        TimelinePublic(
            customer_id=live,
            resolved_from=None if live == customer_id else customer_id,
            data=[TimelineEventPublic(**row) for row in page.rows],
            next_cursor=page.next_cursor,
            freshness=freshness(store.topic, page.positions, wanted),
        )
    )


@router.get(
    "/{customer_id}/segments",
    response_model=CustomerSegmentsPublic,
    responses={**AUTH_RESPONSES, 404: _error("No customer has, or had, this id.")},
)
def get_customer_segments(
    _principal: ReadPrincipal, store: StoreDep, wanted: WantedPositions, customer_id: CustomerId
) -> Response:
    """The customer's segment memberships, current (`member`) and left, by segment id."""
    live, rows, positions = store.customer_segments(customer_id)
    if live is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"customer {customer_id} not found")
    return respond(
        CustomerSegmentsPublic(
            customer_id=live,
            resolved_from=None if live == customer_id else customer_id,
            data=[CustomerSegmentPublic(**r) for r in rows],
            freshness=freshness(store.topic, positions, wanted),
        )
    )


@router.get(
    "/{customer_id}/campaigns",
    response_model=CustomerCampaignsPublic,
    responses={**AUTH_RESPONSES, 404: _error("No customer has, or had, this id.")},
)
def get_customer_campaigns(
    _principal: ReadPrincipal, store: StoreDep, wanted: WantedPositions, customer_id: CustomerId
) -> Response:
    """The campaigns that targeted or reached the customer and its responses, newest first."""
    live, rows, positions = store.customer_campaigns(customer_id)
    if live is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"customer {customer_id} not found")
    return respond(
        CustomerCampaignsPublic(
            customer_id=live,
            resolved_from=None if live == customer_id else customer_id,
            data=[CustomerCampaignPublic(**r) for r in rows],
            freshness=freshness(store.topic, positions, wanted),
        )
    )
