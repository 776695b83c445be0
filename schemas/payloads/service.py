"""Customer service events: call centre, tickets and chat."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Annotated, ClassVar

from pydantic import ValidationInfo, field_validator

from schemas.errors import custom_error
from schemas.fields import PII, Count, FreeText, Id, Score, ShortText, Text, Timestamp
from schemas.payloads.base import EventPayload


class CallDirection(StrEnum):
    INBOUND = "inbound"
    OUTBOUND = "outbound"


class CallLogged(EventPayload):
    """A call with a customer took place and was logged by the call centre."""

    event_type: ClassVar[str] = "call.logged"

    call_id: Id
    direction: CallDirection
    duration_seconds: Count
    reason: ShortText | None = None
    outcome: ShortText | None = None
    agent_id: Id | None = None
    notes: Annotated[FreeText | None, PII] = None


class TicketPriority(StrEnum):
    LOW = "low"
    NORMAL = "normal"
    HIGH = "high"
    URGENT = "urgent"


class TicketOpened(EventPayload):
    """A service ticket was opened for a customer."""

    event_type: ClassVar[str] = "ticket.opened"

    ticket_id: Id
    subject: Annotated[Text, PII]
    category: ShortText | None = None
    priority: TicketPriority = TicketPriority.NORMAL


class TicketResolved(EventPayload):
    """A service ticket was resolved."""

    event_type: ClassVar[str] = "ticket.resolved"

    ticket_id: Id
    resolution: Annotated[FreeText | None, PII] = None
    satisfaction: Score | None = None


class ChatConversationHeld(EventPayload):
    """A chat conversation with a customer took place."""

    event_type: ClassVar[str] = "chat.conversation_held"

    conversation_id: Id
    started_at: Timestamp
    ended_at: Timestamp
    message_count: Count
    topic: ShortText | None = None
    transcript: Annotated[FreeText | None, PII] = None
    agent_id: Id | None = None

    @field_validator("ended_at")
    @classmethod
    def _not_before_start(cls, ended_at: datetime, info: ValidationInfo) -> datetime:
        started_at = info.data.get("started_at")
        if started_at is not None and ended_at < started_at:
            raise custom_error("chat_ended_before_start", "ended_at must not be before started_at")
        return ended_at
