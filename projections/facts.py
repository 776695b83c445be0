"""A customer's facts: the flat record segment rules are evaluated over.

``facts_of(state)`` gives one value (or ``None``) per field of ``schemas.rules.FIELDS``.
The store writes them as columns of the ``customers`` table, where the SQL form of a
rule reads them; the processor passes the same dict to the Python form of the rule.
So both evaluators see exactly the same values.

Definitions:

* amounts (``revenue``, ``average_order_value``) are in the customer's *main currency*:
  the one with the most orders (ties: higher revenue, then currency code); gross of
  returns, like ``revenue_by_currency``. ``order_count``/``return_count`` count all.
* ``*_response_rate``: responses (max of opens and clicks) per message sent on that
  channel, campaign or transactional, capped at 1; ``None`` until a message was sent.
* campaigns count the *treatment* group only (control customers were never contacted):
  a campaign was responded to when it got an open, a click or a conversion;
  ``ignored_campaigns_streak`` is the number of most recent targeted campaigns (by
  targeting time) in a row without a response.
* assessment fields come from the latest ``customer.assessed`` folded in.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from projections.customer import CustomerState
from projections.customer_records import CampaignStats
from schemas import Channel, ConsentPurpose
from schemas.rules import FIELDS

__all__ = ["facts_of"]

_TREATMENT = "treatment"
_MARKETING = ConsentPurpose.MARKETING.value
_MESSAGE_CHANNELS = (Channel.EMAIL.value, Channel.SMS.value, Channel.PUSH.value)


def facts_of(state: CustomerState) -> dict[str, Any]:
    """Every field of ``FIELDS`` for ``state`` (``None`` where unknown)."""
    facts: dict[str, Any] = dict.fromkeys(FIELDS)
    facts.update(_orders(state))
    facts.update(
        event_count=state.event_count,
        first_seen=state.first_seen,
        last_seen=state.last_seen,
        preferred_channel=state.preferred_channel,
        open_ticket_count=len(state.open_tickets),
        nps=None if state.nps is None else state.nps.value,
    )
    facts.update(_profile(state))
    facts.update(_messages(state))
    facts.update(_campaigns(state))
    facts.update(_assessment(state))
    return facts


def _orders(state: CustomerState) -> dict[str, Any]:
    out: dict[str, Any] = {
        "order_count": state.order_count,
        "return_count": sum(o.return_count for o in state.orders.values()),
        "first_order_at": state.first_order_at,
        "last_order_at": state.last_order_at,
    }
    if state.orders:
        currency, main = min(
            state.orders.items(), key=lambda kv: (-kv[1].order_count, -kv[1].revenue, kv[0])
        )
        aov = main.average_order_value
        out.update(
            currency=currency,
            revenue=float(main.revenue),
            average_order_value=None if aov is None else float(aov),
        )
    return out


def _profile(state: CustomerState) -> dict[str, Any]:
    address = state.profile.get("address")
    out: dict[str, Any] = {
        "country": None if address is None else getattr(address.value, "country", None),
    }
    for name in ("locale", "gender"):
        value = state.profile.get(name)
        out[name] = None if value is None else str(value.value)
    for channel in _MESSAGE_CHANNELS:
        out[f"{channel}_marketing_consent"] = state.consent(channel, _MARKETING)
    return out


def _messages(state: CustomerState) -> dict[str, Any]:
    email = state.messages.get(Channel.EMAIL.value)
    out: dict[str, Any] = {
        "emails_opened": 0 if email is None else email.opened,
        "emails_clicked": 0 if email is None else email.clicked,
    }
    last_any: datetime | None = None
    for channel in _MESSAGE_CHANNELS:
        stats = state.messages.get(channel)
        rate = None
        last = None
        if stats is not None:
            last = stats.last_response_at
            if stats.sent:
                rate = min(1.0, max(stats.opened, stats.clicked) / stats.sent)
        out[f"{channel}_response_rate"] = rate
        out[f"last_{channel}_response_at"] = last
    for stats in state.messages.values():
        if stats.last_response_at and (last_any is None or stats.last_response_at > last_any):
            last_any = stats.last_response_at
    out["last_response_at"] = last_any
    return out


def responded(stats: CampaignStats) -> bool:
    return bool(stats.opened or stats.clicked or stats.conversions)


def _campaigns(state: CustomerState) -> dict[str, Any]:
    treated = sorted(
        (
            (stats.group.stamp, stats)
            for stats in state.campaigns.values()
            if stats.group is not None and stats.group.value == _TREATMENT
        ),
        key=lambda item: item[0],
        reverse=True,
    )
    streak = 0
    for _, stats in treated:
        if responded(stats):
            break
        streak += 1
    return {
        "campaigns_targeted": len(treated),
        "campaigns_responded": sum(1 for _, stats in treated if responded(stats)),
        "ignored_campaigns_streak": streak,
        "conversions": sum(stats.conversions for stats in state.campaigns.values()),
    }


def _assessment(state: CustomerState) -> dict[str, Any]:
    if state.assessment is None:
        return {}
    a = state.assessment.value
    return {
        "assessed_at": state.assessment.at,
        "recency_score": a.recency_score,
        "frequency_score": a.frequency_score,
        "monetary_score": a.monetary_score,
        "rfm_segment": a.rfm_segment,
        "value_tier": a.value_tier,
        "clv": a.clv,
        "p_alive": a.p_alive,
        "churn_risk": a.churn_risk,
    }
