"""PNG charts of assessment runs and campaign results (matplotlib, no display needed)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from projections.planning import CampaignResults


def assessment_chart(summary: Mapping[str, Any], path: Path, title: str) -> Path:
    """The Pareto curve of revenue and the size of each RFM segment, side by side."""
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.8))
    pareto = summary.get("pareto", {})
    curve = pareto.get("curve") or []
    if curve:
        xs, ys = zip(*curve, strict=True)
        left.plot([100 * x for x in xs], [100 * y for y in ys], color="#2b6cb0", lw=2)
        left.plot([0, 100], [0, 100], color="#a0aec0", ls="--", lw=1, label="all equal")
        share = pareto.get("customers_for_80pct")
        if share is not None:
            left.axhline(80, color="#e53e3e", lw=1)
            left.axvline(100 * share, color="#e53e3e", lw=1)
            left.annotate(
                f"{100 * share:.0f}% of buyers bring 80% of revenue",
                (100 * share, 80),
                xytext=(8, -24),
                textcoords="offset points",
                color="#e53e3e",
            )
        left.legend(loc="lower right")
    left.set(xlabel="buyers, best first (%)", ylabel="revenue (%)", title="Revenue concentration")
    left.grid(alpha=0.3)
    segments = summary.get("rfm_segments", {})
    names = sorted(segments, key=lambda name: segments[name])
    right.barh(names, [segments[n] for n in names], color="#38a169")
    right.set(xlabel="customers", title="RFM segments")
    for i, name in enumerate(names):
        right.annotate(
            str(segments[name]),
            (segments[name], i),
            xytext=(3, -4),
            textcoords="offset points",
            fontsize=8,
        )
    fig.suptitle(title)
    fig.tight_layout()
    return _save(fig, path)


def campaign_chart(results: CampaignResults, path: Path) -> Path:
    """Funnel per group (share of the group reaching each step) and conversion uplift."""
    steps = ("sent", "delivered", "opened", "clicked", "converted")
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.8))
    width = 0.38
    for i, (group, colour) in enumerate((("treatment", "#2b6cb0"), ("control", "#a0aec0"))):
        funnel = results.groups[group]
        n = funnel.customers or 1
        values = [100 * getattr(funnel, step) / n for step in steps]
        xs = [j + (i - 0.5) * width for j in range(len(steps))]
        right_label = f"{group} ({funnel.customers})"
        left.bar(xs, values, width, label=right_label, color=colour)
    left.set_xticks(range(len(steps)), steps)
    left.set(ylabel="% of group", title="Funnel")
    left.legend()
    labels, diffs, lows, highs = _uplifts(results)
    y = list(range(len(labels)))
    centre = [100 * d for d in diffs]
    err = [
        [100 * (d - lo) for d, lo in zip(diffs, lows, strict=True)],
        [100 * (hi - d) for d, hi in zip(diffs, highs, strict=True)],
    ]
    right.errorbar(centre, y, xerr=err, fmt="o", color="#2b6cb0", capsize=4)
    right.axvline(0, color="#e53e3e", lw=1)
    right.set_yticks(y, labels)
    right.set(xlabel="conversion uplift, percentage points (95% CI)", title="Uplift")
    right.grid(alpha=0.3)
    fig.suptitle(f"Campaign {results.campaign['campaign_id']}: {results.campaign['name']}")
    fig.tight_layout()
    return _save(fig, path)


def _uplifts(results: CampaignResults) -> tuple[list[str], list[float], list[float], list[float]]:
    rows: Sequence[tuple[str, Any]] = [
        ("all", results.conversion_uplift),
        *((name, uplift) for name, (_, uplift) in results.by_rfm_segment.items()),
    ]
    kept = [(n, u) for n, u in rows if u.difference is not None and u.ci_low is not None]
    return (
        [n for n, _ in kept],
        [u.difference for _, u in kept],
        [u.ci_low for _, u in kept],
        [u.ci_high for _, u in kept],
    )


def _save(fig: Any, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
