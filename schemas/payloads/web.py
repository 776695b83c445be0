"""Web self-service events."""

from __future__ import annotations

from typing import Annotated, ClassVar

from schemas.fields import PII, Count, Id, ShortText, Text, Url
from schemas.payloads.base import EventPayload


class WebPageViewed(EventPayload):
    """A visitor viewed a web page."""

    event_type: ClassVar[str] = "web.page_viewed"

    url: Url
    page_type: ShortText | None = None
    referrer: Url | None = None
    session_id: Id | None = None
    duration_ms: Count | None = None


class WebSearched(EventPayload):
    """A visitor searched the web site."""

    event_type: ClassVar[str] = "web.searched"

    query: Annotated[Text, PII]
    results_count: Count
    session_id: Id | None = None
