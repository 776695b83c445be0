"""Social media events."""

from __future__ import annotations

from typing import Annotated, ClassVar

from pydantic import Field, StrictFloat

from schemas.fields import PII, FreeText, Id, ShortText, Url
from schemas.payloads.base import EventPayload

Sentiment = Annotated[StrictFloat, Field(ge=-1, le=1, allow_inf_nan=False)]


class SocialMentioned(EventPayload):
    """A customer mentioned the brand on a social platform."""

    event_type: ClassVar[str] = "social.mentioned"

    platform: ShortText
    post_id: Id
    text: Annotated[FreeText | None, PII] = None
    sentiment: Sentiment | None = None
    url: Url | None = None
