"""Survey events."""

from __future__ import annotations

from typing import Annotated, ClassVar

from pydantic import BaseModel, ConfigDict, Field, StrictInt

from schemas.fields import PII, Id, Scalar
from schemas.payloads.base import EventPayload

MAX_ANSWERS = 200


class SurveyAnswer(BaseModel):
    """The answer to one question; free-text answers are personal data."""

    model_config = ConfigDict(extra="forbid", frozen=True, hide_input_in_errors=True)

    question_id: Id
    answer: Annotated[Scalar, PII]


class SurveyAnswered(EventPayload):
    """A customer answered a survey."""

    event_type: ClassVar[str] = "survey.answered"

    survey_id: Id
    response_id: Id
    nps: Annotated[StrictInt, Field(ge=0, le=10)] | None = None
    answers: Annotated[list[SurveyAnswer], Field(max_length=MAX_ANSWERS)] = Field(
        default_factory=list
    )
