"""E-commerce and store order events."""

from __future__ import annotations

from typing import Annotated, ClassVar

from pydantic import BaseModel, ConfigDict, Field

from schemas.fields import MAX_LIST_ITEMS, Currency, Id, Money, PositiveInt, ShortText, Text
from schemas.payloads.base import EventPayload


class LineItem(BaseModel):
    """One product line of an order or a return."""

    model_config = ConfigDict(extra="forbid", frozen=True, hide_input_in_errors=True)

    sku: Id
    name: Text | None = None
    category: ShortText | None = None
    quantity: PositiveInt
    unit_price: Money


LineItems = Annotated[list[LineItem], Field(min_length=1, max_length=MAX_LIST_ITEMS)]


class OrderPlaced(EventPayload):
    """A customer placed an order (online or in a store)."""

    event_type: ClassVar[str] = "order.placed"

    order_id: Id
    lines: LineItems
    currency: Currency
    total: Money
    discount: Money | None = None
    shipping: Money | None = None
    tax: Money | None = None
    store_id: Id | None = None


class OrderReturned(EventPayload):
    """A customer returned items of an order and was refunded."""

    event_type: ClassVar[str] = "order.returned"

    order_id: Id
    return_id: Id
    lines: LineItems
    currency: Currency
    refund_amount: Money
    reason: Text | None = None
