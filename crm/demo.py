"""``crm demo``: two turns of the closed loop on a generated population, in one command.

A seeded population with a year of touchpoint history is appended to the log and
projected; then, on a virtual clock (T1 = now, to the hour):

* cycle 1 at T1: assess every customer, define "high-value" and "at-risk", launch an
  email win-back campaign to "at-risk" (20% control, 14-day window) and let the
  touchpoints report the responses (``producers.campaign_responses``, driven by what
  the assessment knows of each customer);
* cycle 2 at T2 = T1 + 21 days: reassess (the responses moved customers), define
  "email-responders" and "ignored-last-campaign", launch a thank-you campaign to the
  responders, simulate its responses.

Then it prints the figures, writes charts and ``report.json`` to ``--out``, and with
``--serve`` runs the read API on the demo's projections.

The demo never touches the user's data: embedded, it lives in ``CRM_DATA_DIR/demo``
(wiped at start); on Kafka / PostgreSQL it uses a fresh topic ``crm.demo.<stamp>`` and
schema ``demo_<stamp>``.
"""

from __future__ import annotations

import shutil
import time
import uuid
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Final

import orjson
import sqlalchemy as sa
import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table

from auth import Scope, SqlApiKeyStore
from crm.bootstrap import build_event_log, build_projection_store
from crm.cli_loop import results_json
from crm.settings import Settings
from events.log import EventLog
from producers.campaign_responses import (
    Campaign,
    ResponseKnobs,
    SimulatedResponses,
    Target,
    simulate_responses,
)
from producers.synthetic import SyntheticTouchpoints
from projections import planning
from projections.planning import CampaignResults, Launch, SegmentEvaluation
from projections.runner import catch_up
from projections.sql import create_engine_for
from projections.store import SqlProjectionStore
from projections.tables import customer_campaigns, customers
from schemas import Channel, Envelope

if TYPE_CHECKING:  # the assessment (scipy) and the charts (matplotlib) load when used
    from fastapi import FastAPI

    from projections.assessment import AssessmentRun

CYCLE_GAP: Final = timedelta(days=21)
WINDOW_DAYS: Final = 14
CONTROL_SHARE: Final = 0.2
APPEND_BATCH: Final = 2_000
KNOBS: Final = ResponseKnobs(
    base_open_rate=0.45, conversion_base_rate=0.12, treatment_lift=1.5, unsubscribe_rate=0.04
)
"""Generous response rates, so that a small population shows every effect."""

CYCLE_1_SEGMENTS: Final = {
    "high-value": (
        "High-value customers",
        {
            "any": [
                {"field": "value_tier", "op": "in", "value": ["A"]},
                {"field": "rfm_segment", "op": "in", "value": ["champions", "loyal"]},
            ]
        },
    ),
    "at-risk": (
        "At-risk customers",
        {"field": "rfm_segment", "op": "in", "value": ["at_risk", "cannot_lose", "about_to_sleep"]},
    ),
}
CAMPAIGN_1: Final = ("win-back", "Win back at-risk customers", "at-risk", "15% off")
CAMPAIGN_2: Final = ("thank-you", "Thank you for responding", "email-responders", None)
OPENED, CLICKED, UNSUBSCRIBED, ORDERED = (
    "message.opened",
    "message.clicked",
    "message.unsubscribed",
    "order.placed",
)


# --- settings and clock ----------------------------------------------------------------


def demo_settings(settings: Settings, stamp: str | None = None) -> Settings:
    """The demo's own places: ``CRM_DATA_DIR/demo``, and on Kafka / PostgreSQL a fresh
    topic and schema, so the user's real data is never touched."""
    stamp = stamp or f"{datetime.now(UTC):%Y%m%d%H%M%S}_{uuid.uuid4().hex[:4]}"
    update: dict[str, Any] = {"data_dir": settings.data_dir / "demo"}
    if settings.kafka_bootstrap:
        update["topic"] = f"crm.demo.{stamp}"
        update["deadletter_topic"] = f"crm.demo.{stamp}.deadletters"
    if settings.database_url:
        update["projection_schema"] = f"demo_{stamp}"
    return settings.model_copy(update=update)


@dataclass
class VirtualClock:
    """The projection store's "now", moved by the demo from cycle to cycle."""

    now: datetime

    def __call__(self) -> datetime:
        return self.now


@dataclass
class DemoReport:
    settings: Settings
    """Where the demo's log and projections are (for ``--serve``)."""
    figures: dict[str, Any]
    """Everything written to ``report.json``."""
    timings: dict[str, float]
    files: list[Path]
    """Charts, then ``report.json``."""


# --- the run ---------------------------------------------------------------------------


def run_demo(
    settings: Settings,
    customers: int,
    events: int,
    seed: int,
    out: Path,
    console: Console,
) -> DemoReport:
    """Run both cycles, print the report on ``console``, write charts and report.json."""
    cfg = demo_settings(settings)
    shutil.rmtree(cfg.data_dir, ignore_errors=True)
    cfg.data_dir.mkdir(parents=True)
    out.mkdir(parents=True, exist_ok=True)
    t1 = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    clock = VirtualClock(t1)
    event_log = build_event_log(cfg)
    try:
        store = build_projection_store(cfg, event_log, clock=clock)
        try:
            demo = _Demo(cfg, event_log, store, clock, console, seed, out)
            demo.history(customers, events)
            demo.cycle_1()
            demo.cycle_2()
            report = demo.report(customers, events)
        finally:
            store.engine.dispose()
    finally:
        event_log.close()
    return report


@dataclass
class _Cycle:
    at: datetime
    assessment: AssessmentRun | None = None
    segments: list[SegmentEvaluation] = field(default_factory=list)
    launch: Launch | None = None
    targets: list[Target] = field(default_factory=list)
    simulated: SimulatedResponses | None = None
    responses: list[Envelope] = field(default_factory=list)
    results: CampaignResults | None = None


class _Demo:
    def __init__(
        self,
        cfg: Settings,
        event_log: EventLog,
        store: SqlProjectionStore,
        clock: VirtualClock,
        console: Console,
        seed: int,
        out: Path,
    ) -> None:
        self.cfg, self.log, self.store, self.clock = cfg, event_log, store, clock
        self.console, self.seed, self.out = console, seed, out
        self.timings: dict[str, float] = {}
        self.t1 = clock.now
        self.t2 = self.t1 + CYCLE_GAP
        self.c1, self.c2 = _Cycle(self.t1), _Cycle(self.t2)
        self.overview_history: dict[str, int] = {}
        self.appended = 0
        self.facts_1: dict[str, tuple[str | None, int | None]] = {}
        self.facts_2: dict[str, tuple[str | None, int | None]] = {}

    # -- steps --------------------------------------------------------------------

    @contextmanager
    def step(self, name: str, status: str | None = None) -> Iterator[None]:
        started = time.perf_counter()
        if status is None:
            yield
        else:
            with self.console.status(status):
                yield
        seconds = time.perf_counter() - started
        self.timings[name] = seconds
        self.console.print(f"[green]✓[/] {name} [dim]({seconds:.1f} s)")

    def _progress(self) -> Progress:
        return Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[rate]}"),
            TimeElapsedColumn(),
            console=self.console,
        )

    def settle(self) -> None:
        planning.settle(self.log, self.store)

    def history(self, customers_n: int, events_n: int) -> None:
        where = (
            f"Kafka {self.cfg.kafka_bootstrap}, topic {self.cfg.topic}"
            if self.cfg.kafka_bootstrap
            else f"embedded log {self.cfg.data_dir / 'log.sqlite3'}"
        )
        db = (
            f"PostgreSQL schema {self.cfg.projection_schema}"
            if self.cfg.database_url
            else f"SQLite {self.cfg.data_dir / 'projections.sqlite3'}"
        )
        self.console.rule(f"[bold]LoopCRM demo[/]: virtual now T1 = {self.t1:%Y-%m-%d %H:%M}Z")
        self.console.print(f"log: {where}\nprojections: {db}")
        generator = SyntheticTouchpoints(
            customers=customers_n, seed=self.seed, start=self.t1 - timedelta(days=365), days=364
        )
        with self.step("generate + append history"), self._progress() as progress:
            task = progress.add_task("append history", total=events_n, rate="")
            started = time.perf_counter()
            batch: list[Envelope] = []
            for event in generator.events(events_n):
                batch.append(event)
                if len(batch) == APPEND_BATCH:
                    self._append(batch, progress, task, started)
                    batch = []
            if batch:
                self._append(batch, progress, task, started)
        with self.step("project history"), self._progress() as progress:
            pending = sum(self.log.end_offsets().values()) - sum(
                self.store.checkpoints(self.log.topic).values()
            )
            task = progress.add_task("project", total=pending, rate="")
            started, done = time.perf_counter(), 0

            def advance(n: int) -> None:
                nonlocal done
                done += n
                rate = f"{done / max(time.perf_counter() - started, 1e-9):,.0f} ev/s"
                progress.update(task, advance=n, rate=rate)

            catch_up(self.log, self.store, on_batch=advance)
            self.settle()  # the identity merges the projection appended
        self.overview_history = self.store.overview()

    def _append(self, batch: list[Envelope], progress: Progress, task: Any, started: float) -> None:
        self.log.append(batch)
        self.appended += len(batch)
        rate = f"{self.appended / max(time.perf_counter() - started, 1e-9):,.0f} ev/s"
        progress.update(task, advance=len(batch), rate=rate)

    def assess(self, cycle: _Cycle, run_id: str) -> None:
        from projections.assessment import run_assessment

        with self.step(f"{run_id}: assess", f"assessing every customer as of {cycle.at:%Y-%m-%d}"):
            cycle.assessment = run_assessment(
                self.log,
                self.store,
                now=cycle.at,
                run_id=run_id,
                reporting_currency=self.cfg.reporting_currency,
                fx_rates=self.cfg.fx_rates,
                horizon_weeks=self.cfg.assessment_horizon_weeks,
            )
            self.settle()

    def define(self, cycle: _Cycle, run_id: str, segments: dict[str, tuple[str, Any]]) -> None:
        with self.step(f"{run_id}: segments", "defining and evaluating segments"):
            for segment_id, (name, rule) in segments.items():
                planning.define_segment(
                    self.log, self.store, segment_id=segment_id, name=name, rule=rule, now=cycle.at
                )
            self.settle()
            cycle.segments = planning.evaluate_segments(self.log, self.store, now=cycle.at)
            self.settle()

    def campaign(self, cycle: _Cycle, run_id: str, spec: tuple[str, str, str, str | None]) -> None:
        campaign_id, name, segment_id, offer = spec
        with self.step(f"{run_id}: launch {campaign_id}", f"launching {campaign_id}"):
            cycle.launch = planning.launch_campaign(
                self.log,
                self.store,
                campaign_id=campaign_id,
                name=name,
                segment_id=segment_id,
                channel=Channel.EMAIL,
                now=cycle.at,
                control_share=CONTROL_SHARE,
                attribution_window_days=WINDOW_DAYS,
                offer=offer,
            )
            self.settle()
            cycle.targets = campaign_targets(self.store, campaign_id)
        with self.step(
            f"{run_id}: responses to {campaign_id}",
            f"the touchpoints report responses to {campaign_id}",
        ):
            cycle.simulated = simulate_responses(
                Campaign(campaign_id, Channel.EMAIL, cycle.at, WINDOW_DAYS),
                cycle.targets,
                seed=self.seed,
                knobs=KNOBS,
            )
            cycle.responses = list(cycle.simulated)
            for start in range(0, len(cycle.responses), APPEND_BATCH):
                self.log.append(cycle.responses[start : start + APPEND_BATCH])
            self.clock.now = cycle.at + CYCLE_GAP
            self.settle()
            cycle.results = planning.campaign_results(self.store, campaign_id)

    def cycle_1(self) -> None:
        self.console.rule(f"cycle 1 at T1 = {self.t1:%Y-%m-%d}")
        self.assess(self.c1, "cycle-1")
        self.define(self.c1, "cycle-1", CYCLE_1_SEGMENTS)
        self.campaign(self.c1, "cycle-1", CAMPAIGN_1)

    def cycle_2(self) -> None:
        self.console.rule(f"cycle 2 at T2 = T1 + {CYCLE_GAP.days} d = {self.t2:%Y-%m-%d}")
        self.facts_1 = _facts(self.store)
        self.assess(self.c2, "cycle-2")
        self.facts_2 = _facts(self.store)
        self.define(
            self.c2,
            "cycle-2",
            {
                "email-responders": (
                    "Responded to an email since T1",
                    {"field": "last_email_response_at", "op": "ge", "value": self.t1.isoformat()},
                ),
                "ignored-last-campaign": (
                    "Ignored the last campaign",
                    {"field": "ignored_campaigns_streak", "op": "ge", "value": 1},
                ),
            },
        )
        self.campaign(self.c2, "cycle-2", CAMPAIGN_2)

    # -- report -------------------------------------------------------------------

    def report(self, customers_n: int, events_n: int) -> DemoReport:
        from crm.charts import assessment_chart, campaign_chart

        with self.step("charts"):
            files = []
            for n, cycle in (("1", self.c1), ("2", self.c2)):
                assert cycle.assessment is not None
                files.append(
                    assessment_chart(
                        cycle.assessment.summary,
                        self.out / f"assessment-cycle-{n}.png",
                        f"Assessment, cycle {n} ({cycle.at:%Y-%m-%d})",
                    )
                )
            for cycle in (self.c1, self.c2):
                assert cycle.results is not None
                cid = cycle.results.campaign["campaign_id"]
                files.append(campaign_chart(cycle.results, self.out / f"campaign-{cid}.png"))
        figures = self.figures(customers_n, events_n)
        path = self.out / "report.json"
        files.append(path)
        figures["files"] = [str(f) for f in files]
        figures["timings_s"] = {k: round(v, 3) for k, v in self.timings.items()}
        path.write_bytes(_dumps(figures))
        _print_report(self.console, figures, self.c1, self.c2)
        return DemoReport(self.cfg, figures, dict(self.timings), files)

    def figures(self, customers_n: int, events_n: int) -> dict[str, Any]:
        c1, c2 = self.c1, self.c2
        assert c1.assessment and c2.assessment and c1.launch and c2.launch
        assert c1.simulated and c2.simulated
        responders = _ids(c1.responses, {OPENED, CLICKED})
        converters = _ids(c1.responses, {ORDERED})
        unsubscribed = _ids(c1.responses, {UNSUBSCRIBED})
        group = {t.customer_id: t.group for t in c1.targets}
        treated = {c for c, g in group.items() if g == "treatment"}
        moved = Counter(
            (before[0], self.facts_2[cid][0])
            for cid, before in self.facts_1.items()
            if cid in self.facts_2 and before[0] != self.facts_2[cid][0]
        )

        def mean_recency(facts: dict[str, tuple[str | None, int | None]]) -> float | None:
            scores = [facts[c][1] for c in converters if facts.get(c, (None, None))[1] is not None]
            return sum(s for s in scores if s is not None) / len(scores) if scores else None

        segments_1 = {e.segment_id: e.members for e in c1.segments}
        segments_2 = {e.segment_id: e.members for e in c2.segments}
        return {
            "virtual_clock": {
                "t1": self.t1,
                "t2": self.t2,
                "end": self.t2 + CYCLE_GAP,
                "history": [self.t1 - timedelta(days=365), self.t1 - timedelta(days=1)],
            },
            "backend": {
                "log": "kafka" if self.cfg.kafka_bootstrap else "embedded",
                "kafka_bootstrap": self.cfg.kafka_bootstrap,
                "topic": self.cfg.topic,
                "projections": "postgresql" if self.cfg.database_url else "sqlite",
                "projection_schema": self.cfg.projection_schema if self.cfg.database_url else None,
                "data_dir": str(self.cfg.data_dir),
            },
            "population": {
                "customers_generated": customers_n,
                "events_generated": self.appended,
                "events_requested": events_n,
                "seed": self.seed,
            },
            "projection": {
                "after_history": self.overview_history,
                "final": self.store.overview(),
                "log_records": sum(self.log.end_offsets().values()),
            },
            "cycles": {
                str(n): {
                    "at": c.at,
                    "assessment": {"run_id": c.assessment.run_id, **c.assessment.summary},
                    "segments": {e.segment_id: e.members for e in c.segments},
                }
                for n, c in ((1, c1), (2, c2))
                if c.assessment is not None
            },
            "campaigns": {
                c.results.campaign["campaign_id"]: {
                    "launched_at": c.at,
                    "launch": {
                        "audience": c.launch.audience,
                        "treatment": c.launch.treatment,
                        "control": c.launch.control,
                        "excluded_no_consent": c.launch.excluded_no_consent,
                    },
                    "simulated": _simulated(c.simulated),
                    "results": results_json(c.results),
                }
                for c in (c1, c2)
                if c.results is not None and c.launch is not None and c.simulated is not None
            },
            "changes": {
                "rfm_segment_moved": sum(moved.values()),
                "rfm_transitions": [
                    {"from": a, "to": b, "customers": n} for (a, b), n in moved.most_common(10)
                ],
                "campaign_1_targets": len(group),
                "campaign_1_treatment": len(treated),
                "responders": len(responders),
                "unsubscribed": len(unsubscribed),
                "converters": len(converters),
                "converters_treatment": len(converters & treated),
                "converters_control": len(converters - treated),
                "converters_mean_recency": {
                    "cycle_1": mean_recency(self.facts_1),
                    "cycle_2": mean_recency(self.facts_2),
                },
                "expected": {
                    "email-responders": len(responders),
                    "ignored-last-campaign": len(treated - responders - converters),
                    "thank-you audience": len(responders - unsubscribed),
                },
                "segments": {
                    sid: {"cycle_1": segments_1.get(sid), "cycle_2": segments_2.get(sid)}
                    for sid in {**segments_1, **segments_2}
                },
                "clv_total": {
                    "cycle_1": c1.assessment.summary.get("clv_total"),
                    "cycle_2": c2.assessment.summary.get("clv_total"),
                },
            },
        }


# --- reading and helpers ---------------------------------------------------------------


def campaign_targets(store: SqlProjectionStore, campaign_id: str) -> list[Target]:
    """The campaign's targets with what the assessment knows of them (as the messaging
    system would see them)."""
    c, cc = customers, customer_campaigns
    with store.engine.connect() as conn:
        rows = conn.execute(
            sa.select(
                cc.c.customer_id,
                cc.c.target_group,
                c.c.p_alive,
                c.c.email_response_rate,
                c.c.recency_score,
                c.c.currency,
            )
            .join(c, c.c.customer_id == cc.c.customer_id)
            .where(cc.c.campaign_id == campaign_id, cc.c.target_group.is_not(None))
            .order_by(cc.c.customer_id)
        ).all()
    return [Target(r[0], r[1], r[2], r[3], r[4], r[5]) for r in rows]


def _facts(store: SqlProjectionStore) -> dict[str, tuple[str | None, int | None]]:
    with store.engine.connect() as conn:
        return {
            cid: (rfm, None if recency is None else int(recency))
            for cid, rfm, recency in conn.execute(
                sa.select(
                    customers.c.customer_id, customers.c.rfm_segment, customers.c.recency_score
                ).where(customers.c.event_count > 0)
            )
        }


def _ids(events: Sequence[Envelope], types: set[str]) -> set[str]:
    return {
        str(e.identifiers.customer_id)
        for e in events
        if e.type in types and e.identifiers is not None
    }


def _simulated(sim: SimulatedResponses) -> dict[str, Any]:
    s = sim.summary
    groups = sorted(s.targets)
    return {
        g: {
            "targets": s.targets[g],
            **{step: n for (group, step), n in sorted(s.steps.items()) if group == g},
            "revenue": s.revenue.get(g, Decimal(0)),
        }
        for g in groups
    }


def _default(value: Any) -> Any:
    if isinstance(value, Decimal):
        return float(value)
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON: {type(value).__name__}")


def _dumps(figures: dict[str, Any]) -> bytes:
    options = orjson.OPT_INDENT_2 | orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_NON_STR_KEYS
    return orjson.dumps(figures, default=_default, option=options)


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}%"


def _num(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.2f}"
    return f"{value:,}"


def _print_report(console: Console, f: dict[str, Any], c1: _Cycle, c2: _Cycle) -> None:
    console.rule("[bold]report")
    pop, proj = f["population"], f["projection"]
    table = Table(title="population and projections")
    table.add_column("figure")
    table.add_column("after history", justify="right")
    table.add_column("at the end", justify="right")
    table.add_row("events generated (1 year of history)", _num(pop["events_generated"]), "")
    for label, value in proj["after_history"].items():
        table.add_row(label, _num(value), _num(proj["final"].get(label)))
    table.add_row("records in the log", "", _num(proj["log_records"]))
    console.print(table)

    s1, s2 = f["cycles"]["1"]["assessment"], f["cycles"]["2"]["assessment"]
    table = Table(title="assessments: RFM segments, cycle 1 vs cycle 2")
    for column in ("RFM segment", "cycle 1", "cycle 2", "change"):
        table.add_column(column, justify="left" if column == "RFM segment" else "right")
    r1, r2 = s1["rfm_segments"], s2["rfm_segments"]
    for name in sorted(set(r1) | set(r2), key=lambda n: -max(r1.get(n, 0), r2.get(n, 0))):
        a, b = r1.get(name, 0), r2.get(name, 0)
        table.add_row(name, _num(a), _num(b), f"{b - a:+,}" if b != a else "")
    table.add_section()
    table.add_row("customers", _num(s1["customers"]), _num(s2["customers"]), "")
    change = s2["buyers"] - s1["buyers"]
    table.add_row(
        "buyers", _num(s1["buyers"]), _num(s2["buyers"]), f"{change:+,}" if change else ""
    )
    currency = s1.get("reporting_currency", "")
    table.add_row(
        f"CLV total ({currency})", _num(s1.get("clv_total")), _num(s2.get("clv_total")), ""
    )
    table.add_row(
        "top 20% revenue share",
        _pct(s1["pareto"].get("top20_revenue_share")),
        _pct(s2["pareto"].get("top20_revenue_share")),
        "",
    )
    console.print(table)

    table = Table(title="segments: members")
    for column in ("segment", "cycle 1", "cycle 2"):
        table.add_column(column, justify="left" if column == "segment" else "right")
    for sid, sizes in f["changes"]["segments"].items():
        table.add_row(sid, _num(sizes["cycle_1"]), _num(sizes["cycle_2"]))
    console.print(table)

    _print_campaigns(console, [c for c in (c1, c2) if c.results is not None])

    ch = f["changes"]
    recency = ch["converters_mean_recency"]
    table = Table(title="what changed between the cycles")
    table.add_column("figure")
    table.add_column("value", justify="right")
    rows = [
        ("customers who moved RFM segment", _num(ch["rfm_segment_moved"])),
        (
            "campaign 1 targets (treatment)",
            f"{ch['campaign_1_targets']} ({ch['campaign_1_treatment']})",
        ),
        ("responders (opened or clicked)", _num(ch["responders"])),
        ("unsubscribed", _num(ch["unsubscribed"])),
        (
            "converters (treatment / control)",
            f"{ch['converters']} ({ch['converters_treatment']} / {ch['converters_control']})",
        ),
        (
            "converters' mean recency score",
            f"{_num(recency['cycle_1'])} → {_num(recency['cycle_2'])}",
        ),
        *(
            (f"  {label}", f"{t['from']} → {t['to']}: {t['customers']}")
            for label, t in zip(
                ["top RFM moves", *[""] * 4], ch["rfm_transitions"][:5], strict=False
            )
        ),
    ]
    for label, value in rows:
        table.add_row(label, value)
    console.print(table)

    table = Table(title="timings")
    table.add_column("step")
    table.add_column("seconds", justify="right")
    for name, seconds in f["timings_s"].items():
        table.add_row(name, f"{seconds:.2f}")
    table.add_row("total", f"{sum(f['timings_s'].values()):.2f}", style="bold")
    console.print(table)
    console.print("files:\n" + "\n".join(f"  {p}" for p in f["files"]))


def _print_campaigns(console: Console, cycles: list[_Cycle]) -> None:
    table = Table(title="campaigns: funnel per group")
    table.add_column("step")
    results = [c.results for c in cycles if c.results is not None]
    for r in results:
        for group in ("treatment", "control"):
            table.add_column(f"{r.campaign['campaign_id']}\n{group}", justify="right")
    steps = ("customers", "sent", "delivered", "opened", "clicked", "unsubscribed", "converted")
    for step in steps:
        table.add_row(
            step,
            *(str(getattr(r.groups[g], step)) for r in results for g in ("treatment", "control")),
        )
    table.add_row(
        "conversion rate",
        *(
            _pct(r.groups[g].rates()["conversion_rate"])
            for r in results
            for g in ("treatment", "control")
        ),
    )
    table.add_row(
        "revenue",
        *(
            f"{r.groups[g].revenue.get(r.currency or '', 0):,.2f} {r.currency or ''}"
            for r in results
            for g in ("treatment", "control")
        ),
    )
    console.print(table)
    for r in results:
        u = r.conversion_uplift
        p = "-" if u.p_value is None else f"{u.p_value:.3g}"
        console.print(
            f"{r.campaign['campaign_id']} → {r.campaign['segment_id']}: conversion uplift "
            f"{_pct(u.difference)} (95% CI {_pct(u.ci_low)} to {_pct(u.ci_high)}, p={p})"
        )


# --- serving ---------------------------------------------------------------------------


def demo_key_store(cfg: Settings) -> SqlApiKeyStore:
    """Keys of the demo only: ``<demo data>/auth.sqlite3`` or schema ``<demo schema>_auth``
    (never the real key store, so demo keys open nothing else)."""
    engine = create_engine_for(cfg.database_url, cfg.data_dir / "auth.sqlite3")
    schema = f"{cfg.projection_schema}_auth" if cfg.database_url else None
    return SqlApiKeyStore(engine, schema=schema)


def create_demo_keys(cfg: Settings) -> dict[str, str]:
    """One ``read`` key and one ``analyst`` key (which may also read); plaintexts."""
    store = demo_key_store(cfg)
    read = store.create("demo-read", [Scope.READ])
    analyst = store.create("demo-analyst", [Scope.ANALYST, Scope.READ])
    return {"read": read.plaintext, "analyst": analyst.plaintext}


def build_demo_api(cfg: Settings) -> FastAPI:
    """The read API over the demo's projections, with the demo's key store."""
    from read_api import create_app, create_read_engine

    engine = create_read_engine(cfg.database_url, cfg.data_dir / "projections.sqlite3")
    return create_app(engine, demo_key_store(cfg), topic=cfg.topic, schema=cfg.projection_schema)


def serve_demo(cfg: Settings, port: int, console: Console, example_customer: str | None) -> None:
    """Print demo keys and an example curl, then serve the read API until Ctrl-C."""
    import uvicorn

    keys = create_demo_keys(cfg)
    base = f"http://127.0.0.1:{port}"
    console.rule("[bold]read API")
    console.print(f"read key:    {keys['read']}\nanalyst key: {keys['analyst']}")
    console.print("try:")
    console.print(
        f"  curl -H 'Authorization: Bearer {keys['read']}' "
        f"'{base}/v1/customers?sort=-order_count&limit=5'",
        soft_wrap=True,
    )
    if example_customer:
        console.print(
            f"  curl -H 'Authorization: Bearer {keys['read']}' "
            f"'{base}/v1/customers/{example_customer}'",
            soft_wrap=True,
        )
    console.print(f"  open {base}/docs   (Ctrl-C stops)")
    app = build_demo_api(cfg)
    uvicorn.run(
        app, host="127.0.0.1", port=port, log_level="info", access_log=False, proxy_headers=False
    )


# --- the command -----------------------------------------------------------------------


def demo(
    customers: Annotated[int, typer.Option(min=10, help="customers in the population")] = 2_000,
    events: Annotated[int, typer.Option(min=100, help="touchpoint events of history")] = 40_000,
    seed: Annotated[int, typer.Option(help="seed of the population and responses")] = 7,
    out: Annotated[Path, typer.Option(help="folder for the charts and report.json")] = Path(
        "demo-output"
    ),
    serve: Annotated[
        bool, typer.Option("--serve", help="then serve the read API on the demo's data")
    ] = False,
    port: Annotated[int, typer.Option(min=1, max=65_535, help="port of --serve")] = 8000,
) -> None:
    """The closed loop end to end: a year of history, two cycles of assessment,
    segments and campaigns with simulated responses; figures, charts, report.json.

    Embedded by default (data in CRM_DATA_DIR/demo, wiped first); with CRM_KAFKA_BOOTSTRAP
    and CRM_DATABASE_URL, on a fresh topic crm.demo.<stamp> and schema demo_<stamp>.
    """
    console = Console()
    started = time.perf_counter()
    report = run_demo(Settings(), customers, events, seed, out, console)
    console.print(f"[bold green]demo done in {time.perf_counter() - started:.1f} s")
    if serve:
        responders = report.figures["campaigns"].get(CAMPAIGN_2[0], {})
        example = _first_target(report.settings) if responders else None
        serve_demo(report.settings, port, console, example)


def _first_target(cfg: Settings) -> str | None:
    engine = create_engine_for(cfg.database_url, cfg.data_dir / "projections.sqlite3")
    table = customer_campaigns
    schema = cfg.projection_schema if cfg.database_url else None
    try:
        with engine.execution_options(schema_translate_map={None: schema}).connect() as conn:
            return conn.execute(
                sa.select(table.c.customer_id)
                .where(table.c.campaign_id == CAMPAIGN_2[0])
                .order_by(table.c.customer_id)
                .limit(1)
            ).scalar_one_or_none()
    finally:
        engine.dispose()
