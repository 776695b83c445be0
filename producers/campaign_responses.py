"""A deterministic campaign response simulator, for demos and end-to-end tests.

Given a launched campaign and its targets, it plays the touchpoints: the messaging
system reports each treatment customer's message as sent, then delivered or bounced,
opened, clicked, sometimes unsubscribed; the shop reports the orders both groups place
within the attribution window. Treatment customers who engaged buy more (the lift),
so the campaign's measured uplift has something to find.

Determinism: every customer draws from their own random stream, seeded by
``(seed, campaign_id, customer_id)``, with a fixed number of draws in a fixed order; so
the outcome of one customer does not depend on the other targets or their order, and
changing a knob (say the lift) changes only the decisions that depend on it. Event ids
are ``uuid5(NAMESPACE, campaign/customer/step)`` and ``recorded_at`` is derived from
``occurred_at``: re-running yields identical events (and a re-publish is deduplicated,
even with another seed: a campaign reaches a customer once).

Probabilities (``alive`` = ``p_alive``, 0.5 when unknown; ``resp`` = the channel's
past response rate, ``base_open_rate`` when unknown; all capped at 0.95)::

    activity   = 0.25 + 1.5 * alive                  # 0.25 (gone) .. 1.75 (surely alive)
    p_open     = (resp + base_open_rate) / 2 * activity   # past behaviour, shrunk to base
    p_click    = click_given_open * (0.5 + alive)     # given an open
    p_unsub    = unsubscribe_rate                     # given an open
    recency    = (2 + recency_score) / 5              # 0.6 (R=1) .. 1.4 (R=5); 1 if unknown
    p_order    = conversion_base_rate * activity * recency
                 * (1 + treatment_lift if treatment and opened else 1)

Bounced messages are neither opened nor clicked. Control customers get no message. The
order amount is lognormal with median ``order_median`` and log-sd ``order_sigma``.
"""

from __future__ import annotations

import hashlib
import math
import random
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from statistics import NormalDist
from typing import Final, Literal
from urllib.parse import quote
from uuid import UUID, uuid5

from schemas import (
    BounceType,
    CampaignLaunched,
    Channel,
    Envelope,
    EventPayload,
    Identifiers,
    LineItem,
    MessageBounced,
    MessageClicked,
    MessageDelivered,
    MessageOpened,
    MessageSent,
    MessageUnsubscribed,
    OrderPlaced,
    Source,
    UnsubscribeScope,
    new_event,
)

NAMESPACE: Final = UUID("6f1d3c1e-2b7a-5c44-9d0e-8a3f5b2c7e91")
"""The uuid5 namespace of simulated event ids."""

Group = Literal["treatment", "control"]
SENT: Final = MessageSent.event_type
DELIVERED: Final = MessageDelivered.event_type
BOUNCED: Final = MessageBounced.event_type
OPENED: Final = MessageOpened.event_type
CLICKED: Final = MessageClicked.event_type
UNSUBSCRIBED: Final = MessageUnsubscribed.event_type
ORDERED: Final = OrderPlaced.event_type
STEPS: Final = (SENT, DELIVERED, BOUNCED, OPENED, CLICKED, UNSUBSCRIBED, ORDERED)

_MAX_P: Final = 0.95
_SHOP: Final = Source(system="shop-simulator", channel=Channel.ECOMMERCE)
_SYSTEMS: Final = {
    Channel.EMAIL: "esp-simulator",
    Channel.SMS: "sms-simulator",
    Channel.PUSH: "push-simulator",
    Channel.DIRECT_MAIL: "mail-simulator",
}


@dataclass(frozen=True, slots=True)
class Campaign:
    """What the simulator needs to know about a launched campaign."""

    campaign_id: str
    channel: Channel
    launched_at: datetime
    attribution_window_days: int

    def __post_init__(self) -> None:
        if self.launched_at.utcoffset() is None:
            raise ValueError("launched_at must be timezone-aware")
        if self.attribution_window_days < 1:
            raise ValueError("the attribution window is at least 1 day")
        if self.channel is Channel.SYSTEM:
            raise ValueError("a campaign goes out through a touchpoint channel, not 'system'")

    @classmethod
    def from_launch(cls, launched: CampaignLaunched, launched_at: datetime) -> Campaign:
        """From a ``campaign.launched`` payload and its envelope's ``occurred_at``."""
        return cls(
            launched.campaign_id, launched.channel, launched_at, launched.attribution_window_days
        )

    @property
    def ends_at(self) -> datetime:
        return self.launched_at + timedelta(days=self.attribution_window_days)


@dataclass(frozen=True, slots=True)
class Target:
    """A targeted customer and what the last assessment knew about them."""

    customer_id: str
    group: Group
    p_alive: float | None = None
    responsiveness: float | None = None
    """This channel's past response rate (0..1)."""
    recency_score: int | None = None
    currency: str | None = None
    """The currency the customer shops in; EUR when not given."""

    def __post_init__(self) -> None:
        if self.group not in ("treatment", "control"):
            raise ValueError(f"group should be 'treatment' or 'control', not {self.group!r}")
        for name in ("p_alive", "responsiveness"):
            value = getattr(self, name)
            if value is not None and not 0 <= value <= 1:
                raise ValueError(f"{name} should be in [0, 1], not {value!r}")
        if self.recency_score is not None and not 1 <= self.recency_score <= 5:
            raise ValueError(f"recency_score should be 1..5, not {self.recency_score!r}")


@dataclass(frozen=True, slots=True)
class ResponseKnobs:
    """Base rates of the simulation (see the module docstring for how they combine)."""

    base_open_rate: float = 0.25
    click_given_open: float = 0.2
    conversion_base_rate: float = 0.03
    treatment_lift: float = 0.5
    bounce_rate: float = 0.02
    unsubscribe_rate: float = 0.01
    order_median: float = 60.0
    order_sigma: float = 0.6
    landing_url: str = "https://shop.example.com/campaigns/"
    """Clicks land on this URL followed by the (quoted) campaign id."""

    def __post_init__(self) -> None:
        rates = ("base_open_rate", "click_given_open", "conversion_base_rate")
        for name in (*rates, "bounce_rate", "unsubscribe_rate"):
            if not 0 <= getattr(self, name) <= 1:
                raise ValueError(f"{name} should be in [0, 1]")
        if self.treatment_lift < -1:
            raise ValueError("treatment_lift below -1 would make a negative probability")
        if self.order_median <= 0 or self.order_sigma < 0:
            raise ValueError("order_median must be positive and order_sigma non-negative")


@dataclass(frozen=True, slots=True)
class ResponseSummary:
    """What the simulation generated: targets and event counts per group and step."""

    targets: Mapping[str, int]
    """``group -> number of targets``."""
    steps: Mapping[tuple[str, str], int]
    """``(group, event type) -> count``; each step happens at most once per customer."""
    revenue: Mapping[str, Decimal]
    """Order totals per group (currencies are not converted)."""

    def count(self, group: Group, step: str) -> int:
        return self.steps.get((group, step), 0)

    def rate(self, group: Group, step: str) -> float | None:
        """Share of the group's targets with this step; ``None`` for an empty group."""
        n = self.targets.get(group, 0)
        return self.count(group, step) / n if n else None


@dataclass(frozen=True, slots=True)
class _Step:
    """One event to emit: when, which, for whom."""

    at: datetime
    step: str
    target: Target
    extra: tuple[tuple[str, object], ...] = ()


@dataclass(frozen=True, slots=True)
class SimulatedResponses:
    """The decided outcome of a campaign: its summary now, its events on iteration."""

    campaign: Campaign
    summary: ResponseSummary
    _plan: tuple[_Step, ...]

    def __len__(self) -> int:
        return len(self._plan)

    def __iter__(self) -> Iterator[Envelope]:
        return self.events()

    def events(self) -> Iterator[Envelope]:
        """Envelopes in ``occurred_at`` order (ties by event id), built lazily."""
        for planned in self._plan:
            yield self._envelope(planned)

    def _envelope(self, planned: _Step) -> Envelope:
        c, target = self.campaign, planned.target
        fields = dict(planned.extra)
        payload: EventPayload
        if planned.step == ORDERED:
            payload = OrderPlaced.model_validate(fields)
            source = _SHOP
            correlation = causation = None
        else:
            message = {"message_id": _message_id(c, target), "campaign_id": c.campaign_id}
            payload = _MESSAGE_TYPES[planned.step].model_validate({**message, **fields})
            source = Source(
                system=_SYSTEMS.get(c.channel, f"{c.channel}-simulator"), channel=c.channel
            )
            correlation = uuid5(NAMESPACE, c.campaign_id)
            cause = _CAUSES.get(planned.step)
            causation = _event_id(c, target, cause) if cause else None
        return new_event(
            payload,
            source=source,
            occurred_at=planned.at,
            identifiers=Identifiers(customer_id=target.customer_id),
            event_id=_event_id(c, target, planned.step),
            correlation_id=correlation,
            causation_id=causation,
            recorded_at=planned.at + timedelta(seconds=1),
        )


_MESSAGE_TYPES: Final[dict[str, type[EventPayload]]] = {
    SENT: MessageSent,
    DELIVERED: MessageDelivered,
    BOUNCED: MessageBounced,
    OPENED: MessageOpened,
    CLICKED: MessageClicked,
    UNSUBSCRIBED: MessageUnsubscribed,
}
_CAUSES: Final = {
    DELIVERED: SENT,
    BOUNCED: SENT,
    OPENED: DELIVERED,
    CLICKED: OPENED,
    UNSUBSCRIBED: OPENED,
}
"""The step each message event follows from (its ``causation_id``)."""


def simulate_responses(
    campaign: Campaign,
    targets: Sequence[Target],
    *,
    seed: int = 0,
    knobs: ResponseKnobs | None = None,
) -> SimulatedResponses:
    """Decide every target's response; iterate the result for the envelopes.

    Raises ``ValueError`` when a customer id is targeted twice.
    """
    knobs = knobs or ResponseKnobs()
    if len({t.customer_id for t in targets}) != len(targets):
        raise ValueError("a customer is targeted twice")
    groups: Counter[str] = Counter()
    counts: Counter[tuple[str, str]] = Counter()
    revenue: dict[str, Decimal] = {}
    plan: list[_Step] = []
    for target in targets:
        steps = _respond(campaign, target, knobs, _draws(seed, campaign, target))
        groups[target.group] += 1
        for planned in steps:
            counts[(target.group, planned.step)] += 1
            if planned.step == ORDERED:
                total = Decimal(str(dict(planned.extra)["total"]))
                revenue[target.group] = revenue.get(target.group, Decimal(0)) + total
        plan.extend(steps)
    plan.sort(key=lambda s: (s.at, str(_event_id(campaign, s.target, s.step))))
    summary = ResponseSummary(dict(groups), dict(counts), revenue)
    return SimulatedResponses(campaign, summary, tuple(plan))


# --- one customer ---------------------------------------------------------------------

_DRAWS: Final = 13
_NORMAL: Final = NormalDist()


def _draws(seed: int, campaign: Campaign, target: Target) -> list[float]:
    """The customer's fixed sequence of uniforms in [0, 1)."""
    key = f"{seed}\x1f{campaign.campaign_id}\x1f{target.customer_id}".encode()
    rng = random.Random(int.from_bytes(hashlib.sha256(key).digest()[:16], "big"))
    return [rng.random() for _ in range(_DRAWS)]


def _respond(campaign: Campaign, t: Target, k: ResponseKnobs, u: list[float]) -> list[_Step]:
    (u_bounce, u_hard, u_open, u_click, u_unsub, u_order, u_amount) = u[:7]
    (dt_sent, dt_deliver, dt_open, dt_click, dt_unsub, dt_order) = u[7:]
    alive = 0.5 if t.p_alive is None else t.p_alive
    resp = k.base_open_rate if t.responsiveness is None else t.responsiveness
    activity = 0.25 + 1.5 * alive
    start, end = campaign.launched_at, campaign.ends_at
    steps: list[_Step] = []
    opened = False
    if t.group == "treatment":
        sent_at = _at(start, 1 + dt_sent * 3_599, end)  # within the launch hour
        steps.append(_Step(sent_at, SENT, t))
        reached_at = _at(sent_at, 2 + dt_deliver * 120, end)
        if u_bounce < k.bounce_rate:
            kind = BounceType.HARD if u_hard < 0.3 else BounceType.SOFT
            steps.append(_Step(reached_at, BOUNCED, t, (("bounce_type", kind),)))
        else:
            steps.append(_Step(reached_at, DELIVERED, t))
            p_open = min(_MAX_P, (resp + k.base_open_rate) / 2 * activity)
            if u_open < p_open:
                opened = True
                opened_at = _truncated_exp(reached_at, 8 * 3_600, end, dt_open)
                steps.append(_Step(opened_at, OPENED, t))
                if u_click < min(_MAX_P, k.click_given_open * (0.5 + alive)):
                    url = k.landing_url + quote(campaign.campaign_id, safe="")
                    clicked_at = _truncated_exp(opened_at, 120, end, dt_click)
                    steps.append(_Step(clicked_at, CLICKED, t, (("url", url),)))
                if u_unsub < k.unsubscribe_rate:
                    unsub_at = _truncated_exp(opened_at, 300, end, dt_unsub)
                    scope = (("scope", UnsubscribeScope.CHANNEL),)
                    steps.append(_Step(unsub_at, UNSUBSCRIBED, t, scope))
    recency = 1.0 if t.recency_score is None else (2 + t.recency_score) / 5
    lift = 1 + k.treatment_lift if opened else 1.0
    p_order = min(_MAX_P, k.conversion_base_rate * activity * recency * lift)
    if u_order < p_order:
        if opened:  # an engaged customer buys soon after reading
            ordered_at = _truncated_exp(steps[-1].at, 24 * 3_600, end, dt_order)
        else:
            ordered_at = _at(start, 1 + dt_order * (end - start).total_seconds(), end)
        steps.append(_Step(ordered_at, ORDERED, t, _order(campaign, t, k, u_amount)))
    return steps


def _order(
    campaign: Campaign, t: Target, k: ResponseKnobs, u_amount: float
) -> tuple[tuple[str, object], ...]:
    z = _NORMAL.inv_cdf(min(max(u_amount, 1e-12), 1 - 1e-12))
    amount = Decimal(k.order_median * math.exp(k.order_sigma * z)).quantize(
        Decimal("0.01"), ROUND_HALF_UP
    )
    amount = max(amount, Decimal("0.01"))
    order_id = f"sim-{uuid5(NAMESPACE, f'{campaign.campaign_id}/{t.customer_id}/order').hex}"
    line = LineItem(sku="SIM-OFFER", name="Campaign offer", quantity=1, unit_price=amount)
    return (
        ("order_id", order_id),
        ("lines", [line]),
        ("currency", t.currency or "EUR"),
        ("total", amount),
    )


def _at(origin: datetime, seconds: float, end: datetime) -> datetime:
    """``origin + seconds`` in whole seconds, kept strictly before ``end``."""
    return min(origin + timedelta(seconds=int(seconds)), end - timedelta(seconds=1))


def _truncated_exp(origin: datetime, mean_seconds: float, end: datetime, u: float) -> datetime:
    """``origin`` plus an exponential delay (mean ``mean_seconds``) truncated at ``end``:
    inverse CDF ``-mean * ln(1 - u * (1 - exp(-R / mean)))`` for ``R`` seconds left."""
    remaining = max((end - origin).total_seconds(), 0.0)
    delay = -mean_seconds * math.log1p(-u * -math.expm1(-remaining / mean_seconds))
    return _at(origin, 1 + delay, end)


def _message_id(campaign: Campaign, target: Target) -> str:
    return f"msg-{uuid5(NAMESPACE, f'{campaign.campaign_id}/{target.customer_id}').hex}"


def _event_id(campaign: Campaign, target: Target, step: str) -> UUID:
    return uuid5(NAMESPACE, f"{campaign.campaign_id}/{target.customer_id}/{step}")
