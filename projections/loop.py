"""Closed-loop decisions the processor takes as a customer's projection changes (pure).

* **Segment membership**: a customer's facts are checked against each active segment
  version's rule; where the answer differs from the membership folded into its 360,
  ``segment.entered`` / ``segment.exited`` follow. Moving to a new version of a segment
  exits the old version and enters the new one.
* **Attribution** (rule ``last exposure``): among the campaigns whose attribution window
  (from their targeting of the customer, treatment *or* control, so both groups are
  measured alike) covers an ``order.placed``, the one that targeted the customer last
  gets the conversion. At most one campaign per order.

Both return payloads; the store wraps, applies and publishes them, with event ids that
are functions of their cause so a re-run cannot count twice.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from projections.customer import CustomerState
from schemas import ConversionAttributed, OrderPlaced, SegmentEntered, SegmentExited

ATTRIBUTION_RULE = "last exposure"

Facts = Mapping[str, object]


@dataclass(frozen=True, slots=True)
class ActiveSegment:
    """The current (not retired) version of a segment and its rule as a predicate."""

    segment_id: str
    version: int
    matches: Callable[[Facts], bool]


@dataclass(frozen=True, slots=True)
class CampaignWindow:
    campaign_id: str
    attribution_window: timedelta


def segment_changes(
    customer_id: str,
    member_of: Mapping[str, tuple[int, bool]],
    wanted: Mapping[str, tuple[int, bool]],
) -> list[SegmentEntered | SegmentExited]:
    """Events that move membership from ``member_of`` to ``wanted``.

    Both map segment id -> (version, member). Segments absent from ``wanted`` are left
    alone (retired ones are exited by the job that retires them).
    """
    changes: list[SegmentEntered | SegmentExited] = []
    for segment_id, (version, member) in sorted(wanted.items()):
        current = member_of.get(segment_id)
        in_now = current is not None and current[1]
        if member and in_now and current is not None and current[0] == version:
            continue
        if in_now and current is not None and (not member or current[0] != version):
            changes.append(
                SegmentExited(segment_id=segment_id, version=current[0], customer_id=customer_id)
            )
        if member:
            changes.append(
                SegmentEntered(segment_id=segment_id, version=version, customer_id=customer_id)
            )
    return changes


def memberships(state: CustomerState) -> dict[str, tuple[int, bool]]:
    return {sid: (m.version, m.member) for sid, m in state.segments.items()}


def evaluate(
    segments: Sequence[ActiveSegment], facts: Facts, *, erased: bool = False
) -> dict[str, tuple[int, bool]]:
    """Membership wanted in each active segment; an erased customer is in none."""
    return {s.segment_id: (s.version, not erased and s.matches(facts)) for s in segments}


def attribute(
    customer_id: str,
    state: CustomerState,
    order: OrderPlaced,
    ordered_at: datetime,
    windows: Mapping[str, CampaignWindow],
) -> ConversionAttributed | None:
    """The conversion ``order`` counts as, if any (see the module docstring)."""
    best: tuple[datetime, str] | None = None
    for campaign_id, stats in state.campaigns.items():
        window = windows.get(campaign_id)
        if stats.group is None or window is None:
            continue
        exposed = stats.group.at
        if exposed <= ordered_at <= exposed + window.attribution_window and (
            best is None or (exposed, campaign_id) > best
        ):
            best = (exposed, campaign_id)
    if best is None:
        return None
    return ConversionAttributed(
        campaign_id=best[1],
        customer_id=customer_id,
        order_id=order.order_id,
        amount=order.total,
        currency=order.currency,
        rule=ATTRIBUTION_RULE,
    )
