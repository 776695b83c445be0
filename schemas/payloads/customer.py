"""Customer profile and consent events."""

from __future__ import annotations

from datetime import date
from enum import StrEnum
from typing import Annotated, ClassVar
from uuid import UUID

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StrictBool, model_validator

from schemas.errors import custom_error
from schemas.fields import (
    PII,
    CalendarDate,
    Count,
    CountryCode,
    Locale,
    PersonName,
    ScalarMap,
    ShortText,
    Text,
)
from schemas.payloads.base import EventPayload
from schemas.source import Channel

_EARLIEST_BIRTH_DATE = date(1900, 1, 1)


def _plausible_birth_date(value: date) -> date:
    if value < _EARLIEST_BIRTH_DATE:
        raise custom_error("birth_date_too_early", "Date should be on or after 1900-01-01")
    return value


BirthDate = Annotated[CalendarDate, AfterValidator(_plausible_birth_date)]


class Address(BaseModel):
    """A postal address; only the country is mandatory."""

    model_config = ConfigDict(extra="forbid", frozen=True, hide_input_in_errors=True)

    line1: Text | None = None
    line2: Text | None = None
    city: ShortText | None = None
    postal_code: ShortText | None = None
    region: ShortText | None = None
    country: CountryCode


class CustomerRegistered(EventPayload):
    """A customer registered (created an account or profile) at a touchpoint."""

    event_type: ClassVar[str] = "customer.registered"
    schema_version: ClassVar[int] = 2

    first_name: Annotated[PersonName, PII]
    last_name: Annotated[PersonName | None, PII] = None
    birth_date: Annotated[BirthDate | None, PII] = None
    gender: Annotated[ShortText | None, PII] = None
    locale: Locale | None = None
    address: Annotated[Address | None, PII] = None
    attributes: ScalarMap = Field(default_factory=dict)


_PROFILE_FIELDS = (
    "first_name",
    "last_name",
    "birth_date",
    "gender",
    "locale",
    "address",
    "attributes",
)


class CustomerProfileUpdated(EventPayload):
    """A customer's profile changed; only the given fields changed."""

    event_type: ClassVar[str] = "customer.profile_updated"

    first_name: Annotated[PersonName | None, PII] = None
    last_name: Annotated[PersonName | None, PII] = None
    birth_date: Annotated[BirthDate | None, PII] = None
    gender: Annotated[ShortText | None, PII] = None
    locale: Locale | None = None
    address: Annotated[Address | None, PII] = None
    attributes: ScalarMap | None = None

    @model_validator(mode="after")
    def _something_changed(self) -> CustomerProfileUpdated:
        if all(getattr(self, name) is None for name in _PROFILE_FIELDS):
            raise custom_error(
                "profile_update_empty",
                "at least one of {fields} is required",
                fields=", ".join(_PROFILE_FIELDS),
            )
        return self


class ConsentPurpose(StrEnum):
    """What a consent covers."""

    MARKETING = "marketing"
    SERVICE = "service"
    PROFILING = "profiling"
    THIRD_PARTY = "third_party"


class ConsentChanged(EventPayload):
    """A customer granted or withdrew consent for a purpose on a channel."""

    event_type: ClassVar[str] = "consent.changed"

    channel: Channel
    purpose: ConsentPurpose
    granted: StrictBool
    method: ShortText | None = None


class CustomerErasureRequested(EventPayload):
    """The customer asked to be forgotten (GDPR art. 17); the processor carries it out.

    Name the customer by ``identifiers`` as any touchpoint knows them (or by
    ``customer_id``). Carries no personal data itself.
    """

    event_type: ClassVar[str] = "customer.erasure_requested"

    reason: ShortText | None = None
    requested_by: ShortText | None = None
    """Who filed it (a staff member's id, "self-service", ...), for the audit trail."""


class CustomerErased(EventPayload):
    """The customer's data keys were destroyed and their personal data redacted.

    Derived from a ``customer.erasure_requested`` (``request_id``). From here on every
    projection keeps no personal data of this customer, also after a replay, and the
    customer is in no segment and no later campaign. Aggregates (orders, revenue,
    campaign totals) still count them, under the pseudonymous customer id.
    """

    event_type: ClassVar[str] = "customer.erased"

    request_id: UUID
    keys_destroyed: Count
    reason: ShortText | None = None
