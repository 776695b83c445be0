"""Field sales force events."""

from __future__ import annotations

from typing import Annotated, ClassVar

from schemas.fields import PII, FreeText, Id, ShortText
from schemas.payloads.base import EventPayload


class SalesVisitLogged(EventPayload):
    """A sales representative visited a customer."""

    event_type: ClassVar[str] = "sales.visit_logged"

    visit_id: Id
    rep_id: Id
    purpose: ShortText | None = None
    outcome: ShortText | None = None
    notes: Annotated[FreeText | None, PII] = None


class SalesNoteAdded(EventPayload):
    """A sales representative wrote a note about a customer."""

    event_type: ClassVar[str] = "sales.note_added"

    note_id: Id
    rep_id: Id
    text: Annotated[FreeText, PII]
