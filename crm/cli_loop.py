"""``crm assess``, ``crm segments`` and ``crm campaigns``: the closed loop from the shell.

Each command appends its decision to the log and then brings the projections up to
date in-process (safe next to a running ``crm process``: batches lock checkpoints), so
what it prints already includes its own effect.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import orjson
import sqlalchemy as sa
import typer
from rich.console import Console
from rich.table import Table

from crm.bootstrap import build_event_log, build_projection_store
from crm.settings import Settings
from events.log import EventLog
from projections import planning
from projections.planning import CampaignResults, PlanningError
from projections.store import SqlProjectionStore, active_segments_query
from projections.tables import customer_segments
from schemas import Channel
from schemas.rules import RuleError

if TYPE_CHECKING:  # the assessment (scipy) and the charts (matplotlib) load when used
    from projections.assessment import AssessmentRun

console = Console(stderr=True)
segments_app = typer.Typer(help="Segments: define, retire, evaluate, list.", no_args_is_help=True)
campaigns_app = typer.Typer(help="Campaigns: launch, results.", no_args_is_help=True)


@contextmanager
def _loop() -> Iterator[tuple[Settings, EventLog, SqlProjectionStore]]:
    settings = Settings()
    event_log = build_event_log(settings)
    try:
        store = build_projection_store(settings, event_log)
        with console.status("bringing projections up to date"):
            planning.settle(event_log, store)
        yield settings, event_log, store
    finally:
        event_log.close()


def _settle(event_log: EventLog, store: SqlProjectionStore) -> None:
    with console.status("projecting the new events"):
        planning.settle(event_log, store)


def assess_command(
    run_id: Annotated[str | None, typer.Option(help="default: asm_<timestamp>")] = None,
    charts: Annotated[
        Path | None, typer.Option(help="folder for the Pareto / segment chart (PNG)")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print the run summary as JSON")] = False,
    every: Annotated[
        float | None,
        typer.Option(min=60, help="keep running: assess again every this many seconds"),
    ] = None,
) -> None:
    """Assess every customer (RFM, value tier, BG/NBD CLV, churn, responsiveness).

    The results are appended to the log (customer.assessed, assessment.completed) and
    projected before the command returns. With --every it runs on a schedule (each run
    gets its own id) until interrupted.
    """
    while True:
        _assess_once(run_id if every is None else None, charts, as_json)
        if every is None:
            return
        console.print(f"next assessment in {every:g} s (Ctrl-C to stop)")
        time.sleep(every)


def _assess_once(run_id: str | None, charts: Path | None, as_json: bool) -> None:
    from crm.charts import assessment_chart
    from projections.assessment import run_assessment

    with _loop() as (settings, event_log, store):
        with console.status("assessing customers"):
            run = run_assessment(
                event_log,
                store,
                now=datetime.now(UTC),
                run_id=run_id,
                reporting_currency=settings.reporting_currency,
                fx_rates=settings.fx_rates,
                horizon_weeks=settings.assessment_horizon_weeks,
            )
        _settle(event_log, store)
    if as_json:
        typer.echo(json.dumps({"run_id": run.run_id, **run.summary}, default=str))
    else:
        print_assessment(run)
    if charts is not None:
        path = assessment_chart(
            run.summary, charts / f"{run.run_id}.png", f"Assessment {run.run_id}"
        )
        console.print(f"chart: {path}")


def print_assessment(run: AssessmentRun) -> None:
    s = run.summary
    table = Table(
        title=f"Assessment {run.run_id}: {s['customers']} customers, {s['buyers']} buyers"
    )
    table.add_column("RFM segment")
    table.add_column("customers", justify="right")
    for name, count in sorted(s["rfm_segments"].items(), key=lambda kv: -kv[1]):
        table.add_row(name, str(count))
    Console().print(table)
    pareto = s["pareto"]
    if pareto["customers_for_80pct"] is not None:
        console.print(
            f"{100 * pareto['customers_for_80pct']:.1f}% of buyers bring 80% of revenue; "
            f"the top 20% bring {100 * pareto['top20_revenue_share']:.1f}%"
        )
    model = s["model"]
    if model.get("fitted"):
        b, g = model["bgnbd"], model["gamma_gamma"]
        console.print(
            f"BG/NBD r={b['r']:.3f} alpha={b['alpha']:.3f} a={b['a']:.3f} b={b['b']:.3f} "
            f"(LL {b['log_likelihood']:.1f})"
        )
        if g is None:
            console.print(f"no CLV: {model['clv_note']}")
        else:
            console.print(
                f"Gamma-Gamma p={g['p']:.2f} q={g['q']:.2f} v={g['v']:.2f}; CLV over "
                f"{s['horizon_weeks']:g} weeks: {s['clv_total']:,.0f} {s['reporting_currency']}"
            )
    else:
        console.print(f"no lifetime-value model: {model.get('reason')}")
    if s["skipped_currencies"]:
        console.print(f"left out (no FX rate): {s['skipped_currencies']}")


# --- segments --------------------------------------------------------------------------


def _rule_from(text: str) -> Any:
    raw = Path(text[1:]).read_text() if text.startswith("@") else text
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise typer.BadParameter(f"the rule is not valid JSON: {exc}") from None


@segments_app.command("define")
def segments_define(
    segment_id: Annotated[str, typer.Argument(help="stable id, e.g. email-responders")],
    rule: Annotated[str, typer.Option(help="the rule as JSON, or @file.json")],
    name: Annotated[str | None, typer.Option(help="display name (default: the id)")] = None,
    description: Annotated[str | None, typer.Option()] = None,
) -> None:
    """Define a segment (or its next version) and evaluate it over all customers."""
    parsed = _rule_from(rule)
    with _loop() as (_, event_log, store):
        now = datetime.now(UTC)
        try:
            event = planning.define_segment(
                event_log,
                store,
                segment_id=segment_id,
                name=name or segment_id,
                rule=parsed,
                now=now,
                description=description,
            )
        except RuleError as exc:
            raise typer.BadParameter(str(exc), param_hint="--rule") from None
        _settle(event_log, store)
        results = planning.evaluate_segments(event_log, store, now=now, segment_ids=[segment_id])
        _settle(event_log, store)
    version = getattr(event.payload, "version")  # noqa: B009
    _print_evaluations(results, f"segment {segment_id} version {version} defined")


@segments_app.command("retire")
def segments_retire(segment_id: Annotated[str, typer.Argument()]) -> None:
    """Retire a segment: its members exit it."""
    with _loop() as (_, event_log, store):
        now = datetime.now(UTC)
        try:
            planning.retire_segment(event_log, store, segment_id=segment_id, now=now)
        except PlanningError as exc:
            raise typer.BadParameter(str(exc)) from None
        _settle(event_log, store)
        results = planning.evaluate_segments(event_log, store, now=now, segment_ids=[segment_id])
        _settle(event_log, store)
    _print_evaluations(results, f"segment {segment_id} retired")


@segments_app.command("evaluate")
def segments_evaluate() -> None:
    """Re-evaluate every active segment now (time-based rules change without events)."""
    with _loop() as (_, event_log, store):
        results = planning.evaluate_segments(event_log, store, now=datetime.now(UTC))
        _settle(event_log, store)
    _print_evaluations(results, "segments evaluated")


@segments_app.command("list")
def segments_list() -> None:
    """Active segments with their current member counts."""
    with _loop() as (_, _log, store), store.engine.connect() as conn:
        active = conn.execute(active_segments_query()).all()
        counts: dict[str, int] = dict(
            conn.execute(
                sa.select(customer_segments.c.segment_id, sa.func.count())
                .where(customer_segments.c.member)
                .group_by(customer_segments.c.segment_id)
            ).all()
        )
    table = Table(title=f"{len(active)} active segment(s)")
    for column in ("segment", "version", "members", "rule"):
        table.add_column(column)
    for sid, version, rule in active:
        table.add_row(sid, str(version), str(counts.get(sid, 0)), json.dumps(rule))
    Console().print(table)


def _print_evaluations(results: list[planning.SegmentEvaluation], title: str) -> None:
    table = Table(title=title)
    for column in ("segment", "version", "members", "entered", "exited"):
        table.add_column(column, justify="right" if column != "segment" else "left")
    for r in results:
        table.add_row(r.segment_id, str(r.version), str(r.members), str(r.entered), str(r.exited))
    Console().print(table)


# --- campaigns -------------------------------------------------------------------------


@campaigns_app.command("launch")
def campaigns_launch(
    campaign_id: Annotated[str, typer.Argument()],
    segment: Annotated[str, typer.Option(help="target segment id (its active version)")],
    channel: Annotated[Channel, typer.Option(case_sensitive=False)],
    name: Annotated[str | None, typer.Option()] = None,
    offer: Annotated[str | None, typer.Option()] = None,
    control_share: Annotated[float, typer.Option(min=0.0, max=0.9)] = 0.1,
    window_days: Annotated[int, typer.Option(min=1, max=365, help="attribution window")] = 14,
) -> None:
    """Launch a campaign: snapshot the segment's audience, split treatment / control."""
    with _loop() as (settings, event_log, store):
        now = datetime.now(UTC)
        planning.evaluate_segments(event_log, store, now=now, segment_ids=[segment])
        try:
            launch = planning.launch_campaign(
                event_log,
                store,
                campaign_id=campaign_id,
                name=name or campaign_id,
                segment_id=segment,
                channel=channel,
                now=now,
                control_share=control_share,
                attribution_window_days=window_days,
                offer=offer,
                consent_policy=settings.marketing_consent,
            )
        except PlanningError as exc:
            raise typer.BadParameter(str(exc)) from None
        _settle(event_log, store)
    console.print(
        f"launched {campaign_id}: audience {launch.audience} "
        f"(treatment {launch.treatment}, control {launch.control}); "
        f"{launch.excluded_no_consent} left out without {channel.value} marketing consent "
        f"({settings.marketing_consent.replace('_', '-')})"
    )


@campaigns_app.command("results")
def campaigns_results(
    campaign_id: Annotated[str, typer.Argument()],
    charts: Annotated[Path | None, typer.Option(help="folder for the funnel/uplift chart")] = None,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Funnel, rates, revenue and uplift (treatment vs control) of a campaign."""
    with _loop() as (_, _log, store):
        try:
            results = planning.campaign_results(store, campaign_id)
        except PlanningError as exc:
            raise typer.BadParameter(str(exc)) from None
    if as_json:
        typer.echo(json.dumps(results_json(results), default=str))
    else:
        print_campaign(results)
    if charts is not None:
        from crm.charts import campaign_chart

        console.print(f"chart: {campaign_chart(results, charts / f'{campaign_id}.png')}")


def results_json(results: CampaignResults) -> dict[str, Any]:
    def funnel(f: planning.GroupFunnel) -> dict[str, Any]:
        out = asdict(f)
        out.pop("revenue_per_customer")
        return {**out, **f.rates()}

    return {
        "campaign": results.campaign,
        "currency": results.currency,
        "groups": {g: funnel(f) for g, f in results.groups.items()},
        "conversion_uplift": asdict(results.conversion_uplift),
        "revenue_uplift": asdict(results.revenue_uplift),
        "by_rfm_segment": {
            name: {"groups": {g: funnel(f) for g, f in funnels.items()}, "uplift": asdict(u)}
            for name, (funnels, u) in results.by_rfm_segment.items()
        },
    }


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}%"


def print_campaign(results: CampaignResults) -> None:
    c = results.campaign
    table = Table(
        title=f"{c['campaign_id']} ({c['channel']}) → segment {c['segment_id']} "
        f"v{c['segment_version']}, window {c['attribution_window_days']} d"
    )
    table.add_column("step")
    for group in ("treatment", "control"):
        table.add_column(group, justify="right")
    steps = ("customers", "sent", "delivered", "opened", "clicked", "unsubscribed", "converted")
    for step in steps:
        table.add_row(
            step, *(str(getattr(results.groups[g], step)) for g in ("treatment", "control"))
        )
    table.add_row(
        "conversion rate",
        *(_pct(results.groups[g].rates()["conversion_rate"]) for g in ("treatment", "control")),
    )
    table.add_row(
        f"revenue ({results.currency or '-'})",
        *(
            str(results.groups[g].revenue.get(results.currency or "", 0))
            for g in ("treatment", "control")
        ),
    )
    Console().print(table)
    u = results.conversion_uplift
    console.print(
        f"conversion uplift {_pct(u.difference)} (95% CI {_pct(u.ci_low)} to {_pct(u.ci_high)}, "
        f"p={'-' if u.p_value is None else f'{u.p_value:.3g}'})"
    )
