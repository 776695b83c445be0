"""Where an event comes from: the touchpoint system and its channel."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated

from pydantic import BaseModel, ConfigDict, StrictStr, StringConstraints


class Channel(StrEnum):
    """A touchpoint channel. ``system`` marks derived events emitted by LoopCRM itself."""

    WEB = "web"
    ECOMMERCE = "ecommerce"
    STORE = "store"
    EMAIL = "email"
    SMS = "sms"
    PUSH = "push"
    DIRECT_MAIL = "direct_mail"
    CALL_CENTRE = "call_centre"
    CHAT = "chat"
    SOCIAL = "social"
    SALES_FORCE = "sales_force"
    SURVEY = "survey"
    SYSTEM = "system"


class Source(BaseModel):
    """The touchpoint system that observed the interaction (e.g. ``shopify-eu``)."""

    model_config = ConfigDict(extra="forbid", frozen=True, hide_input_in_errors=True)

    system: Annotated[
        StrictStr, StringConstraints(strip_whitespace=True, min_length=1, max_length=100)
    ]
    channel: Channel
