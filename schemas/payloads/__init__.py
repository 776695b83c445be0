"""Event payloads by domain, and the registry of every payload class the contract knows."""

from __future__ import annotations

from typing import Final

from schemas.payloads.base import EventPayload
from schemas.payloads.customer import (
    Address,
    ConsentChanged,
    ConsentPurpose,
    CustomerProfileUpdated,
    CustomerRegistered,
)
from schemas.payloads.derived import (
    AssessmentCompleted,
    CampaignCustomerTargeted,
    CampaignLaunched,
    ConversionAttributed,
    CustomerAssessed,
    IdentityMerged,
    IdentitySplit,
    LinkingIdentifier,
    SegmentDefined,
    SegmentEntered,
    SegmentExited,
    SegmentRetired,
    TargetGroup,
)
from schemas.payloads.messaging import (
    BounceType,
    MessageBounced,
    MessageClicked,
    MessageDelivered,
    MessageOpened,
    MessageSent,
    MessageUnsubscribed,
    UnsubscribeScope,
)
from schemas.payloads.orders import LineItem, OrderPlaced, OrderReturned
from schemas.payloads.sales import SalesNoteAdded, SalesVisitLogged
from schemas.payloads.service import (
    CallDirection,
    CallLogged,
    ChatConversationHeld,
    TicketOpened,
    TicketPriority,
    TicketResolved,
)
from schemas.payloads.social import SocialMentioned
from schemas.payloads.survey import SurveyAnswer, SurveyAnswered
from schemas.payloads.web import WebPageViewed, WebSearched

PAYLOAD_TYPES: Final[tuple[type[EventPayload], ...]] = (
    CustomerRegistered,
    CustomerProfileUpdated,
    ConsentChanged,
    OrderPlaced,
    OrderReturned,
    WebPageViewed,
    WebSearched,
    MessageSent,
    MessageDelivered,
    MessageOpened,
    MessageClicked,
    MessageBounced,
    MessageUnsubscribed,
    CallLogged,
    TicketOpened,
    TicketResolved,
    ChatConversationHeld,
    SocialMentioned,
    SalesVisitLogged,
    SalesNoteAdded,
    SurveyAnswered,
    IdentityMerged,
    IdentitySplit,
    SegmentDefined,
    SegmentRetired,
    SegmentEntered,
    SegmentExited,
    CampaignLaunched,
    CampaignCustomerTargeted,
    ConversionAttributed,
    AssessmentCompleted,
    CustomerAssessed,
)
"""Every event payload, in catalog order (by domain, touchpoints before derived events)."""

__all__ = [
    "PAYLOAD_TYPES",
    "Address",
    "AssessmentCompleted",
    "BounceType",
    "CallDirection",
    "CallLogged",
    "CampaignCustomerTargeted",
    "CampaignLaunched",
    "ChatConversationHeld",
    "ConsentChanged",
    "ConsentPurpose",
    "ConversionAttributed",
    "CustomerAssessed",
    "CustomerProfileUpdated",
    "CustomerRegistered",
    "EventPayload",
    "IdentityMerged",
    "IdentitySplit",
    "LineItem",
    "LinkingIdentifier",
    "MessageBounced",
    "MessageClicked",
    "MessageDelivered",
    "MessageOpened",
    "MessageSent",
    "MessageUnsubscribed",
    "OrderPlaced",
    "OrderReturned",
    "SalesNoteAdded",
    "SalesVisitLogged",
    "SegmentDefined",
    "SegmentEntered",
    "SegmentExited",
    "SegmentRetired",
    "SocialMentioned",
    "SurveyAnswer",
    "SurveyAnswered",
    "TargetGroup",
    "TicketOpened",
    "TicketPriority",
    "TicketResolved",
    "UnsubscribeScope",
    "WebPageViewed",
    "WebSearched",
]
