"""One small function per event type, folding that event into a ``CustomerState``.

``CustomerState.apply`` has already counted the event (event count, first/last seen,
activity per channel) and calls the handler registered for the payload class, if any,
with the event's stamp ``(occurred_at in UTC, event_id)`` and its ``source.channel``.
Customer event types in ``ACTIVITY_ONLY`` deliberately have no handler.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Final, TypeAlias, TypeVar

from projections.customer_records import (
    CampaignStats,
    CurrencyOrders,
    MessageStats,
    SegmentMembership,
    Stamp,
    Stamped,
    add_money,
    later,
    latest_stamp,
    put_latest,
    put_membership,
)
from schemas import (
    CampaignCustomerTargeted,
    ConsentChanged,
    ConsentPurpose,
    ConversionAttributed,
    CustomerAssessed,
    CustomerErased,
    CustomerProfileUpdated,
    CustomerRegistered,
    EventPayload,
    MessageBounced,
    MessageClicked,
    MessageDelivered,
    MessageOpened,
    MessageSent,
    MessageUnsubscribed,
    OrderPlaced,
    OrderReturned,
    SegmentEntered,
    SegmentExited,
    SurveyAnswered,
    TicketOpened,
    TicketResolved,
    UnsubscribeScope,
)
from schemas.fields import REDACTED

if TYPE_CHECKING:
    from projections.customer import CustomerState

P = TypeVar("P", bound=EventPayload)
Handler: TypeAlias = Callable[["CustomerState", Any, Stamp, str], None]

HANDLERS: Final[dict[type[EventPayload], Handler]] = {}
"""Payload class -> handler(state, payload, stamp, channel)."""

ACTIVITY_ONLY: Final[frozenset[str]] = frozenset(
    {
        "web.page_viewed",
        "web.searched",
        "call.logged",
        "chat.conversation_held",
        "social.mentioned",
        "sales.visit_logged",
        "sales.note_added",
        "identity.merged",  # identity resolution's history, not behaviour
        "identity.split",
        "customer.erasure_requested",  # carried out by the processor (customer.erased)
    }
)
"""Customer event types with no handler on purpose: they only count into the event count,
first/last seen and activity (as does any payload type unknown here)."""

_PROFILE_FIELDS: Final = ("first_name", "last_name", "birth_date", "gender", "locale", "address")
_MARKETING: Final = ConsentPurpose.MARKETING.value


def handles(
    payload_type: type[P],
) -> Callable[[Callable[[CustomerState, P, Stamp, str], None]], Handler]:
    def register(handler: Callable[[CustomerState, P, Stamp, str], None]) -> Handler:
        HANDLERS[payload_type] = handler
        return handler

    return register


# --- profile and consent ---------------------------------------------------------------


def _update_profile(
    s: CustomerState, p: CustomerRegistered | CustomerProfileUpdated, stamp: Stamp
) -> None:
    """Per attribute LWW; ``None`` means "not given", so it never clears a value.

    Nothing is kept of an erased customer, nor placeholders of sealed values whose key
    is gone."""
    if s.erased is not None:
        return
    for name in _PROFILE_FIELDS:
        value = getattr(p, name)
        if value is not None and value != REDACTED:
            put_latest(s.profile, name, Stamped(value, stamp))
    for key, scalar in (p.attributes or {}).items():
        put_latest(s.attributes, key, Stamped(scalar, stamp))


@handles(CustomerRegistered)
def _registered(s: CustomerState, p: CustomerRegistered, stamp: Stamp, channel: str) -> None:
    _update_profile(s, p, stamp)


@handles(CustomerProfileUpdated)
def _profile_updated(
    s: CustomerState, p: CustomerProfileUpdated, stamp: Stamp, channel: str
) -> None:
    _update_profile(s, p, stamp)


@handles(CustomerErased)
def _erased(s: CustomerState, p: CustomerErased, stamp: Stamp, channel: str) -> None:
    s.erase(stamp)


@handles(ConsentChanged)
def _consent_changed(s: CustomerState, p: ConsentChanged, stamp: Stamp, channel: str) -> None:
    put_latest(s.consents, (p.channel.value, p.purpose.value), Stamped(p.granted, stamp))


@handles(MessageUnsubscribed)
def _unsubscribed(s: CustomerState, p: MessageUnsubscribed, stamp: Stamp, channel: str) -> None:
    """Scope all: marketing withdrawn everywhere; channel (or none): on this message's
    channel; campaign: only an opt-out of that campaign."""
    for stats in _message_stats(s, p.campaign_id, channel):
        stats.unsubscribed += 1
    if p.scope is UnsubscribeScope.CAMPAIGN:
        if p.campaign_id is not None:
            s.campaign_opt_outs.add(p.campaign_id)
    elif p.scope is UnsubscribeScope.ALL:
        s.unsubscribed_all = latest_stamp(s.unsubscribed_all, stamp)
    else:
        put_latest(s.consents, (channel, _MARKETING), Stamped(False, stamp))


# --- orders ----------------------------------------------------------------------------


def _orders_in(s: CustomerState, currency: str) -> CurrencyOrders:
    orders = s.orders.get(currency)
    if orders is None:
        orders = s.orders[currency] = CurrencyOrders()
    return orders


@handles(OrderPlaced)
def _order_placed(s: CustomerState, p: OrderPlaced, stamp: Stamp, channel: str) -> None:
    _orders_in(s, p.currency).add_order(p.total, stamp[0])


@handles(OrderReturned)
def _order_returned(s: CustomerState, p: OrderReturned, stamp: Stamp, channel: str) -> None:
    _orders_in(s, p.currency).add_return(p.refund_amount)


# --- messages and campaigns ------------------------------------------------------------


def _campaign(s: CustomerState, campaign_id: str) -> CampaignStats:
    stats = s.campaigns.get(campaign_id)
    if stats is None:
        stats = s.campaigns[campaign_id] = CampaignStats()
    return stats


def _message_stats(s: CustomerState, campaign_id: str | None, channel: str) -> list[MessageStats]:
    """The records a message event counts into: its channel's, and its campaign's."""
    by_channel = s.messages.get(channel)
    if by_channel is None:
        by_channel = s.messages[channel] = MessageStats()
    if campaign_id is None:
        return [by_channel]
    return [by_channel, _campaign(s, campaign_id)]


@handles(MessageSent)
def _sent(s: CustomerState, p: MessageSent, stamp: Stamp, channel: str) -> None:
    for stats in _message_stats(s, p.campaign_id, channel):
        stats.sent += 1


@handles(MessageDelivered)
def _delivered(s: CustomerState, p: MessageDelivered, stamp: Stamp, channel: str) -> None:
    for stats in _message_stats(s, p.campaign_id, channel):
        stats.delivered += 1


@handles(MessageOpened)
def _opened(s: CustomerState, p: MessageOpened, stamp: Stamp, channel: str) -> None:
    for stats in _message_stats(s, p.campaign_id, channel):
        stats.opened += 1
        stats.responded(stamp[0])


@handles(MessageClicked)
def _clicked(s: CustomerState, p: MessageClicked, stamp: Stamp, channel: str) -> None:
    for stats in _message_stats(s, p.campaign_id, channel):
        stats.clicked += 1
        stats.responded(stamp[0])


@handles(MessageBounced)
def _bounced(s: CustomerState, p: MessageBounced, stamp: Stamp, channel: str) -> None:
    for stats in _message_stats(s, p.campaign_id, channel):
        stats.bounced += 1


@handles(CampaignCustomerTargeted)
def _targeted(s: CustomerState, p: CampaignCustomerTargeted, stamp: Stamp, channel: str) -> None:
    stats = _campaign(s, p.campaign_id)
    if stats.group is None or stamp > stats.group.stamp:
        stats.group, stats.rfm_segment = Stamped(p.group.value, stamp), p.rfm_segment


@handles(ConversionAttributed)
def _converted(s: CustomerState, p: ConversionAttributed, stamp: Stamp, channel: str) -> None:
    stats = _campaign(s, p.campaign_id)
    stats.conversions += 1
    add_money(stats.converted_revenue, p.currency, p.amount)


# --- service, surveys, segments, assessments -------------------------------------------


@handles(TicketOpened)
def _ticket_opened(s: CustomerState, p: TicketOpened, stamp: Stamp, channel: str) -> None:
    s.tickets_opened.add(p.ticket_id)


@handles(TicketResolved)
def _ticket_resolved(s: CustomerState, p: TicketResolved, stamp: Stamp, channel: str) -> None:
    s.tickets_resolved.add(p.ticket_id)


@handles(SurveyAnswered)
def _survey_answered(s: CustomerState, p: SurveyAnswered, stamp: Stamp, channel: str) -> None:
    if p.nps is not None:
        s.nps = later(s.nps, Stamped(p.nps, stamp))


@handles(SegmentEntered)
def _segment_entered(s: CustomerState, p: SegmentEntered, stamp: Stamp, channel: str) -> None:
    put_membership(s.segments, p.segment_id, SegmentMembership(True, p.version, stamp))


@handles(SegmentExited)
def _segment_exited(s: CustomerState, p: SegmentExited, stamp: Stamp, channel: str) -> None:
    put_membership(s.segments, p.segment_id, SegmentMembership(False, p.version, stamp))


@handles(CustomerAssessed)
def _assessed(s: CustomerState, p: CustomerAssessed, stamp: Stamp, channel: str) -> None:
    s.assessment = later(s.assessment, Stamped(p, stamp))
