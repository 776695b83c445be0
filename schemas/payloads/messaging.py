"""Outbound message events (email, SMS, push, direct mail: the envelope's channel says which)."""

from __future__ import annotations

from enum import StrEnum
from typing import ClassVar

from schemas.fields import Id, Text, Url
from schemas.payloads.base import EventPayload


class _MessageEvent(EventPayload):
    """Fields shared by all message events; transactional messages have no campaign."""

    message_id: Id
    campaign_id: Id | None = None


class MessageSent(_MessageEvent):
    """A message was sent to a customer."""

    event_type: ClassVar[str] = "message.sent"


class MessageDelivered(_MessageEvent):
    """A message reached the customer's inbox or device."""

    event_type: ClassVar[str] = "message.delivered"


class MessageOpened(_MessageEvent):
    """A customer opened a message."""

    event_type: ClassVar[str] = "message.opened"


class MessageClicked(_MessageEvent):
    """A customer clicked a link in a message."""

    event_type: ClassVar[str] = "message.clicked"

    url: Url


class BounceType(StrEnum):
    HARD = "hard"
    SOFT = "soft"


class MessageBounced(_MessageEvent):
    """A message could not be delivered."""

    event_type: ClassVar[str] = "message.bounced"

    bounce_type: BounceType
    reason: Text | None = None


class UnsubscribeScope(StrEnum):
    CAMPAIGN = "campaign"
    CHANNEL = "channel"
    ALL = "all"


class MessageUnsubscribed(_MessageEvent):
    """A customer unsubscribed through a message."""

    event_type: ClassVar[str] = "message.unsubscribed"

    scope: UnsubscribeScope | None = None
