"""The customer 360 of one customer: a pure value folded from that customer's events.

Which events belong to a customer is identity resolution's business; this module only
folds. The result depends only on the *set* of events folded, never on their order
(DESIGN §3): attributes are last-writer-wins by ``(occurred_at, event_id)``, times are
min/max, ids are set unions, counters and money sums add.

Contract:

* ``state.apply(event)`` mutates ``state`` in place (cheap: no copy per event) and
  assumes ``event.event_id`` was not folded into this state before. The store guarantees
  that (its timeline table is the dedupe record). LWW fields, min/max times and id sets
  would tolerate a repeat; counters and sums would count it twice.
* ``merge(a, b)`` is the state of the union of the two event sets, for two customers
  found to be one person. Their event sets are disjoint by construction; ``a`` and ``b``
  are left untouched. ``merge`` is commutative and associative.
* ``to_json()`` / ``CustomerState.from_json()`` round-trip exactly; ``summary()`` is the
  flat row the store writes to SQL columns.

Semantics chosen here:

* Consent for ``(channel, purpose)`` is the latest by stamp of: ``consent.changed`` for
  it, a ``message.unsubscribed`` of scope ``channel`` (or no scope) on that channel
  (counts as ``marketing`` withdrawn), and, for ``marketing``, any unsubscribe of scope
  ``all``. So a grant stamped after an unsubscribe re-enables that channel; one stamped
  before it does not. Scope ``campaign`` only records the campaign opt-out.
* ``first_seen``/``last_seen`` cover touchpoint interactions only (not ``system``
  events such as segment entries). Every customer event counts into ``event_count`` and
  ``activity`` (derived ``system`` events included; ``preferred_channel`` skips
  ``system``). Event types in ``customer_handlers.ACTIVITY_ONLY`` (web, calls, chats,
  social, sales, ``identity.merged``/``split``) and payload types unknown here change
  nothing else.
* Segment membership is LWW by ``(version, stamp)``: a late exit from an old version
  does not undo the entry into a newer one.
* Message events count per ``source.channel`` (campaign or transactional: the base of
  channel responsiveness) and, with a ``campaign_id``, per campaign. A response is an
  open or a click. Money sums are exact Decimals, kept per currency.
* Non-customer events (``payload.customer_event`` false) raise ``ValueError``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any, Protocol, TypeAlias, TypeVar

from projections.customer_handlers import HANDLERS
from projections.customer_records import (
    CampaignStats,
    CampaignTotals,
    ChannelActivity,
    CurrencyOrders,
    JsonDict,
    MessageStats,
    Scalar,
    SegmentMembership,
    Stamp,
    Stamped,
    add_money,
    earliest,
    iso_or_none,
    later,
    latest,
    latest_stamp,
    merge_latest,
    money_to_json,
    parse_date,
    parse_time_or_none,
    put_membership,
    stamp_from_json,
    stamp_to_json,
    stamped_from_json,
)
from schemas import Address, Channel, ConsentPurpose, CustomerAssessed, Envelope

__all__ = ["CustomerState", "fold", "merge"]

FORMAT = 1
"""Version of the ``to_json`` layout; ``from_json`` refuses others."""

ProfileValue: TypeAlias = str | date | Address
SYSTEM = Channel.SYSTEM.value
MARKETING = ConsentPurpose.MARKETING.value

_ENCODE: dict[str, Callable[[Any], Any]] = {
    "birth_date": date.isoformat,
    "address": lambda address: address.model_dump(mode="json"),
}
_DECODE: dict[str, Callable[[Any], ProfileValue]] = {
    "birth_date": parse_date,
    "address": Address.model_validate,
}


@dataclass(slots=True)
class CustomerState:
    """Mutable, but only through ``apply`` and ``merge``; ``copy()`` before sharing."""

    profile: dict[str, Stamped[ProfileValue]] = field(default_factory=dict)
    """first_name, last_name, birth_date, gender, locale, address (whole): LWW each."""
    attributes: dict[str, Stamped[Scalar]] = field(default_factory=dict)
    """Custom profile attributes, LWW per key."""
    consents: dict[tuple[str, str], Stamped[bool]] = field(default_factory=dict)
    """(channel, purpose) -> granted; see ``consent()`` for the effective answer."""
    unsubscribed_all: Stamp | None = None
    """Stamp of the latest unsubscribe of scope ``all`` (withdraws marketing everywhere)."""
    campaign_opt_outs: set[str] = field(default_factory=set)
    orders: dict[str, CurrencyOrders] = field(default_factory=dict)
    """By currency."""
    activity: dict[str, ChannelActivity] = field(default_factory=dict)
    """By ``source.channel``, every event."""
    messages: dict[str, MessageStats] = field(default_factory=dict)
    """Message outcomes by channel, campaign or not: the base of channel responsiveness."""
    campaigns: dict[str, CampaignStats] = field(default_factory=dict)
    tickets_opened: set[str] = field(default_factory=set)
    tickets_resolved: set[str] = field(default_factory=set)
    segments: dict[str, SegmentMembership] = field(default_factory=dict)
    assessment: Stamped[CustomerAssessed] | None = None
    nps: Stamped[int] | None = None
    first_seen: datetime | None = None
    last_seen: datetime | None = None
    event_count: int = 0
    erased: Stamp | None = None
    """Stamp of the first ``customer.erased``: no personal data is kept from then on."""

    @classmethod
    def empty(cls) -> CustomerState:
        return cls()

    # --- folding -----------------------------------------------------------------------

    def apply(self, event: Envelope) -> None:
        """Fold one event in place; ``event.event_id`` must be new to this state."""
        payload = event.payload
        if not payload.customer_event:
            raise ValueError(
                f"{event.type} event {event.event_id} is not about one customer "
                "and cannot be folded into a customer state"
            )
        at = event.occurred_at.astimezone(UTC)
        channel = event.source.channel.value
        self.event_count += 1
        if channel != "system":  # seen = a touchpoint interaction, not a derived fact
            if self.first_seen is None or at < self.first_seen:
                self.first_seen = at
            if self.last_seen is None or at > self.last_seen:
                self.last_seen = at
        seen = self.activity.get(channel)
        if seen is None:
            self.activity[channel] = ChannelActivity(1, at)
        else:
            seen.count += 1
            if at > seen.last_at:
                seen.last_at = at
        handler = HANDLERS.get(type(payload))
        if handler is not None:
            handler(self, payload, (at, event.event_id), channel)

    def erase(self, stamp: Stamp) -> None:
        """Forget the personal data (profile, custom attributes); order-insensitive:
        profile events folded later are ignored (``customer_handlers``)."""
        self.erased = stamp if self.erased is None else min(self.erased, stamp)
        self.profile.clear()
        self.attributes.clear()

    def merge_from(self, other: CustomerState) -> None:
        """Fold ``other``'s event set into this state; ``other`` is only read.

        Erasure wins: merging with an erased customer forgets both profiles."""
        merge_latest(self.profile, other.profile)
        merge_latest(self.attributes, other.attributes)
        merge_latest(self.consents, other.consents)
        self.unsubscribed_all = latest_stamp(self.unsubscribed_all, other.unsubscribed_all)
        self.campaign_opt_outs |= other.campaign_opt_outs
        _merge_records(self.orders, other.orders, lambda _: CurrencyOrders())
        _merge_records(self.activity, other.activity, lambda a: ChannelActivity(0, a.last_at))
        _merge_records(self.messages, other.messages, lambda _: MessageStats())
        _merge_records(self.campaigns, other.campaigns, lambda _: CampaignStats())
        self.tickets_opened |= other.tickets_opened
        self.tickets_resolved |= other.tickets_resolved
        for segment_id, membership in other.segments.items():
            put_membership(self.segments, segment_id, membership)
        self.assessment = later(self.assessment, other.assessment)
        self.nps = later(self.nps, other.nps)
        self.first_seen = earliest(self.first_seen, other.first_seen)
        self.last_seen = latest(self.last_seen, other.last_seen)
        self.event_count += other.event_count
        if other.erased is not None:
            self.erase(other.erased)
        elif self.erased is not None:
            self.erase(self.erased)

    def copy(self) -> CustomerState:
        """An independent copy (records are not shared)."""
        clone = CustomerState()
        clone.merge_from(self)
        return clone

    # --- derived views -----------------------------------------------------------------

    @property
    def display_name(self) -> str | None:
        parts = [self.profile[n].value for n in ("first_name", "last_name") if n in self.profile]
        return " ".join(str(part) for part in parts) or None

    @property
    def order_count(self) -> int:
        return sum(orders.order_count for orders in self.orders.values())

    @property
    def first_order_at(self) -> datetime | None:
        times = [o.first_order_at for o in self.orders.values() if o.first_order_at]
        return min(times, default=None)

    @property
    def last_order_at(self) -> datetime | None:
        times = [o.last_order_at for o in self.orders.values() if o.last_order_at]
        return max(times, default=None)

    @property
    def revenue_by_currency(self) -> dict[str, Decimal]:
        return {currency: orders.revenue for currency, orders in self.orders.items()}

    @property
    def open_tickets(self) -> frozenset[str]:
        """Opened and not resolved; a resolution seen before its opening still closes it."""
        return frozenset(self.tickets_opened - self.tickets_resolved)

    @property
    def preferred_channel(self) -> str | None:
        """Most events; ties: latest activity, then first channel name. Never ``system``."""
        ranked = [(a.count, a.last_at, c) for c, a in self.activity.items() if c != SYSTEM]
        if not ranked:
            return None
        top = max((count, last_at) for count, last_at, _ in ranked)
        return min(c for count, last_at, c in ranked if (count, last_at) == top)

    def consent(self, channel: str, purpose: str) -> bool | None:
        """Whether consent is currently given (``None``: never expressed); latest stamp wins."""
        given = self.consents.get((channel, purpose))
        withdrawn = self.unsubscribed_all if purpose == MARKETING else None
        if withdrawn is not None and (given is None or withdrawn > given.stamp):
            return False
        return None if given is None else given.value

    @property
    def campaign_totals(self) -> CampaignTotals:
        revenue: dict[str, Decimal] = {}
        for stats in self.campaigns.values():
            for currency, amount in stats.converted_revenue.items():
                add_money(revenue, currency, amount)
        values = self.campaigns.values()
        return CampaignTotals(
            sent=sum(c.sent for c in values),
            opened=sum(c.opened for c in values),
            clicked=sum(c.clicked for c in values),
            conversions=sum(c.conversions for c in values),
            converted_revenue=revenue,
        )

    def summary(self) -> dict[str, Any]:
        """Headline figures for SQL columns: native ``datetime`` (UTC) and ``int`` values;
        ``revenue_by_currency`` maps currency to a decimal string (a JSON column).
        ``emails_*`` count every email, campaign or not; ``conversions`` all campaigns'."""
        email = self.messages.get(Channel.EMAIL.value, MessageStats())
        return {
            "display_name": self.display_name,
            "order_count": self.order_count,
            "revenue_by_currency": money_to_json(self.revenue_by_currency),
            "first_order_at": self.first_order_at,
            "last_order_at": self.last_order_at,
            "open_ticket_count": len(self.open_tickets),
            "preferred_channel": self.preferred_channel,
            "first_seen": self.first_seen,
            "last_seen": self.last_seen,
            "event_count": self.event_count,
            "emails_opened": email.opened,
            "emails_clicked": email.clicked,
            "conversions": self.campaign_totals.conversions,
        }

    # --- serialization -----------------------------------------------------------------

    def to_json(self) -> JsonDict:
        """JSON-compatible: Decimals as strings, times ISO-8601 UTC, sets as sorted lists."""
        consents: dict[str, dict[str, JsonDict]] = {}
        for (channel, purpose), granted in sorted(self.consents.items()):
            consents.setdefault(channel, {})[purpose] = granted.to_json()
        assessment = self.assessment
        return {
            "format": FORMAT,
            "profile": {k: v.to_json(_ENCODE.get(k)) for k, v in sorted(self.profile.items())},
            "attributes": {k: v.to_json() for k, v in sorted(self.attributes.items())},
            "consents": consents,
            "unsubscribed_all": _stamp_or_none(self.unsubscribed_all),
            "campaign_opt_outs": sorted(self.campaign_opt_outs),
            "orders": _records_to_json(self.orders),
            "activity": _records_to_json(self.activity),
            "messages": _records_to_json(self.messages),
            "campaigns": _records_to_json(self.campaigns),
            "tickets_opened": sorted(self.tickets_opened),
            "tickets_resolved": sorted(self.tickets_resolved),
            "segments": _records_to_json(self.segments),
            "assessment": None
            if assessment is None
            else assessment.to_json(lambda a: a.model_dump(mode="json")),
            "nps": None if self.nps is None else self.nps.to_json(),
            "first_seen": iso_or_none(self.first_seen),
            "last_seen": iso_or_none(self.last_seen),
            "event_count": self.event_count,
            "erased": _stamp_or_none(self.erased),
        }

    @classmethod
    def from_json(cls, data: JsonDict) -> CustomerState:
        if data.get("format") != FORMAT:
            raise ValueError(f"customer state format {data.get('format')!r} is not {FORMAT}")
        profile = {
            k: stamped_from_json(v, _DECODE.get(k, str)(v["value"]))
            for k, v in data["profile"].items()
        }
        assessment, nps = data["assessment"], data["nps"]
        return cls(
            profile=profile,
            attributes={k: stamped_from_json(v, v["value"]) for k, v in data["attributes"].items()},
            consents={
                (channel, purpose): stamped_from_json(v, bool(v["value"]))
                for channel, purposes in data["consents"].items()
                for purpose, v in purposes.items()
            },
            unsubscribed_all=_stamp_or_none_from_json(data["unsubscribed_all"]),
            campaign_opt_outs=set(data["campaign_opt_outs"]),
            orders=_records(data["orders"], CurrencyOrders.from_json),
            activity=_records(data["activity"], ChannelActivity.from_json),
            messages=_records(data["messages"], MessageStats.from_json),
            campaigns=_records(data["campaigns"], CampaignStats.from_json),
            tickets_opened=set(data["tickets_opened"]),
            tickets_resolved=set(data["tickets_resolved"]),
            segments=_records(data["segments"], SegmentMembership.from_json),
            assessment=None
            if assessment is None
            else stamped_from_json(
                assessment, CustomerAssessed.model_validate(assessment["value"])
            ),
            nps=None if nps is None else stamped_from_json(nps, int(nps["value"])),
            first_seen=parse_time_or_none(data["first_seen"]),
            last_seen=parse_time_or_none(data["last_seen"]),
            event_count=data["event_count"],
            erased=_stamp_or_none_from_json(data.get("erased")),
        )


def fold(events: Iterable[Envelope], into: CustomerState | None = None) -> CustomerState:
    """Apply ``events`` (distinct event ids) to ``into`` (mutated) or to a new empty state."""
    state = CustomerState() if into is None else into
    for event in events:
        state.apply(event)
    return state


def merge(a: CustomerState, b: CustomerState) -> CustomerState:
    """A new state for the union of the (disjoint) event sets of ``a`` and ``b``."""
    merged = a.copy()
    merged.merge_from(b)
    return merged


# --- helpers ---------------------------------------------------------------------------


class _Encodable(Protocol):
    def to_json(self) -> JsonDict: ...


class _Record(_Encodable, Protocol):
    def merge_from(self, other: Any, /) -> None: ...


R = TypeVar("R", bound=_Record)
T = TypeVar("T")


def _merge_records(into: dict[str, R], other: dict[str, R], make: Callable[[R], R]) -> None:
    for key, record in other.items():
        mine = into.get(key)
        if mine is None:
            mine = into[key] = make(record)
        mine.merge_from(record)


def _records_to_json(records: Mapping[str, _Encodable]) -> JsonDict:
    return {key: record.to_json() for key, record in sorted(records.items())}


def _records(data: JsonDict, decode: Callable[[JsonDict], T]) -> dict[str, T]:
    return {key: decode(value) for key, value in data.items()}


def _stamp_or_none(stamp: Stamp | None) -> JsonDict | None:
    return None if stamp is None else stamp_to_json(stamp)


def _stamp_or_none_from_json(data: JsonDict | None) -> Stamp | None:
    return None if data is None else stamp_from_json(data)
