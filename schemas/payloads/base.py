"""The base class of every event payload."""

from __future__ import annotations

from typing import ClassVar

from pydantic import BaseModel, ConfigDict


class EventPayload(BaseModel):
    """What happened, as facts in the past tense; the envelope says when, where and to whom.

    Subclasses set ``event_type`` (dotted, past tense: ``order.placed``), bump
    ``schema_version`` on incompatible changes (registering an upcaster for the old
    version), and set ``customer_event = False`` when the event is not about one customer.
    """

    model_config = ConfigDict(
        extra="forbid", frozen=True, hide_input_in_errors=True, use_attribute_docstrings=True
    )

    event_type: ClassVar[str]
    schema_version: ClassVar[int] = 1
    customer_event: ClassVar[bool] = True
