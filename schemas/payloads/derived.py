"""Derived events: facts LoopCRM itself concludes and appends to the log.

Identity merges, segment membership, campaign planning and outcomes, and assessment
results are events too, so the closed loop can be replayed (source channel ``system``).
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, ClassVar
from uuid import UUID

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    JsonValue,
    StrictInt,
    ValidationInfo,
    field_validator,
)

from schemas.errors import custom_error
from schemas.fields import (
    MAX_MAP_ENTRIES,
    PII,
    Count,
    Currency,
    FiniteFloat,
    Fraction,
    Id,
    JsonObject,
    Key,
    Money,
    Score,
    ShortText,
    Text,
    Timestamp,
    Version,
)
from schemas.identifiers import IdentifierKind, normalize_identifier
from schemas.payloads.base import EventPayload
from schemas.rules import RuleError, parse_rule
from schemas.source import Channel

MAX_LINKING_IDENTIFIERS = 100


class LinkingIdentifier(BaseModel):
    """An identifier shared by two customer records, normalised like ``Identifiers``."""

    model_config = ConfigDict(extra="forbid", frozen=True, hide_input_in_errors=True)

    kind: IdentifierKind
    value: Annotated[str, Field(strict=True, min_length=1, max_length=320), PII]

    @field_validator("value")
    @classmethod
    def _normalise(cls, value: str, info: ValidationInfo) -> str:
        kind = info.data.get("kind")
        if kind is None:
            return value
        try:
            return normalize_identifier(kind, value)
        except ValueError as exc:
            raise custom_error("identifier_invalid", "{reason}", reason=str(exc)) from None


class IdentityMerged(EventPayload):
    """Two customer records are one person; ``merged_id`` folds into ``survivor_id``."""

    event_type: ClassVar[str] = "identity.merged"

    survivor_id: Id
    merged_id: Id
    linking_identifiers: Annotated[
        list[LinkingIdentifier], Field(max_length=MAX_LINKING_IDENTIFIERS)
    ]
    reason: ShortText

    @field_validator("merged_id")
    @classmethod
    def _not_self(cls, merged_id: str, info: ValidationInfo) -> str:
        if merged_id == info.data.get("survivor_id"):
            raise custom_error("merge_into_self", "merged_id must differ from survivor_id")
        return merged_id


class IdentitySplit(EventPayload):
    """A customer record joined several people through an identifier now known to be
    shared (a family phone, a till email); it was split into ``into``."""

    event_type: ClassVar[str] = "identity.split"

    customer_id: Id
    into: Annotated[list[Id], Field(min_length=1, max_length=MAX_LINKING_IDENTIFIERS)]
    shared_kinds: Annotated[list[IdentifierKind], Field(max_length=MAX_LINKING_IDENTIFIERS)]
    reason: ShortText


class SegmentDefined(EventPayload):
    """A segment (or a new version of it) was defined by a rule."""

    event_type: ClassVar[str] = "segment.defined"
    customer_event: ClassVar[bool] = False

    segment_id: Id
    version: Version
    name: ShortText
    description: Text | None = None
    rule: JsonObject

    @field_validator("rule")
    @classmethod
    def _valid_rule(cls, rule: dict[str, JsonValue]) -> dict[str, JsonValue]:
        """Check the rule with ``schemas.rules.parse_rule``; keep it as written."""
        try:
            parse_rule(rule)
        except RuleError as exc:
            raise custom_error(
                "segment_rule", "invalid segment rule: {problems}", problems=exc.summary(limit=20)
            ) from None
        return rule


class SegmentRetired(EventPayload):
    """A segment version was retired; its members leave it."""

    event_type: ClassVar[str] = "segment.retired"
    customer_event: ClassVar[bool] = False

    segment_id: Id
    version: Version


class SegmentEntered(EventPayload):
    """A customer became a member of a segment version."""

    event_type: ClassVar[str] = "segment.entered"

    segment_id: Id
    version: Version
    customer_id: Id


class SegmentExited(EventPayload):
    """A customer stopped being a member of a segment version."""

    event_type: ClassVar[str] = "segment.exited"

    segment_id: Id
    version: Version
    customer_id: Id


class CampaignLaunched(EventPayload):
    """A campaign aimed at a segment version was launched, with a control group."""

    event_type: ClassVar[str] = "campaign.launched"
    customer_event: ClassVar[bool] = False

    campaign_id: Id
    name: ShortText
    segment_id: Id
    segment_version: Version
    channel: Channel
    offer: Text | None = None
    control_share: Annotated[float, Field(strict=True, ge=0, le=0.9, allow_inf_nan=False)]
    attribution_window_days: Annotated[StrictInt, Field(ge=1, le=365)]
    audience_size: Count | None = None
    """Customers targeted (treatment and control) when the audience was snapshotted."""
    excluded_no_consent: Count | None = None
    """Segment members left out because they withdrew marketing consent for the channel."""


class TargetGroup(StrEnum):
    TREATMENT = "treatment"
    CONTROL = "control"


class CampaignCustomerTargeted(EventPayload):
    """A customer was assigned to a campaign's treatment or control group."""

    event_type: ClassVar[str] = "campaign.customer_targeted"

    campaign_id: Id
    customer_id: Id
    group: TargetGroup
    rfm_segment: ShortText | None = None
    """The customer's RFM segment at targeting, for results per RFM class."""


class ConversionAttributed(EventPayload):
    """An order was attributed to a campaign by an attribution rule."""

    event_type: ClassVar[str] = "conversion.attributed"

    campaign_id: Id
    customer_id: Id
    order_id: Id
    amount: Money
    currency: Currency
    touch_event_id: UUID | None = None
    rule: ShortText


class AssessmentCompleted(EventPayload):
    """An assessment run scored the customer base as of a point in time."""

    event_type: ClassVar[str] = "assessment.completed"
    customer_event: ClassVar[bool] = False

    run_id: Id
    as_of: Timestamp
    customers: Count
    summary: JsonObject


class CustomerAssessed(EventPayload):
    """An assessment run scored one customer: RFM, value, churn risk, responsiveness."""

    event_type: ClassVar[str] = "customer.assessed"

    run_id: Id
    customer_id: Id
    recency_score: Score
    frequency_score: Score
    monetary_score: Score
    rfm_segment: ShortText
    value_tier: ShortText
    clv: FiniteFloat | None = None
    p_alive: Fraction | None = None
    churn_risk: Fraction | None = None
    channel_responsiveness: (
        Annotated[dict[Key, FiniteFloat], Field(max_length=MAX_MAP_ENTRIES)] | None
    ) = None
