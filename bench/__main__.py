"""Run the benchmarks: ``python -m bench [--quick] [--only ingest,projection] [--out DIR]``.

Services: ``CRM_BENCH_KAFKA_BOOTSTRAP`` + ``CRM_BENCH_DATABASE_URL`` if both are set, else
``CRM_KAFKA_BOOTSTRAP`` + ``CRM_DATABASE_URL`` (e.g. ``eval "$(crm dev env)"``), else a
Kafka and PostgreSQL started for the run under ``OUT/services`` (as the test suite does).

Sections run in order, each imported when its turn comes and after a forced PostgreSQL
``CHECKPOINT`` (see ``settle``); one that does not exist yet is skipped and one that
raises is reported as failed, and the run goes on. Writes ``OUT/results.json``
(machine, versions, settings, sizes, figures with ratios to their baselines,
timestamps) and ``OUT/results.png``; exits 1 if a section failed.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import os
import platform
import shutil
import sys
import time
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import orjson
import sqlalchemy as sa
import typer
from rich.console import Console
from rich.table import Table

from bench.core import BenchContext, Figure, Sizes, machine, new_run_id
from bench.leftovers import holding_run, sweep
from bench.pipeline import engine_for

SECTIONS = ("ingest", "projection", "replay", "freshness", "read_api", "memory", "peer")
LIBRARIES = (
    "loopcrm",
    "kafka-python",
    "psycopg2",
    "psycopg2-binary",
    "SQLAlchemy",
    "pydantic",
    "pydantic-core",
    "orjson",
    "fastapi",
    "uvicorn",
    "httpx",
    "faust-streaming",
    "matplotlib",
    "rich",
)

console = Console(highlight=False, width=None if sys.stdout.isatty() else 160)


@dataclass(frozen=True)
class Services:
    kafka_bootstrap: str
    database_url: str
    origin: str
    kafka_version: str
    postgres_version: str


@dataclass
class SectionResult:
    name: str
    status: str = "pending"  # ok | failed | skipped
    reason: str = ""
    seconds: float = 0.0
    started_at: str | None = None
    finished_at: str | None = None
    figures: list[Figure] = field(default_factory=list)
    error: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "status": self.status,
            "reason": self.reason,
            "seconds": round(self.seconds, 3),
            "started_at": self.started_at,
            "finished_at": self.finished_at,
            "figures": [f.to_json() for f in self.figures],
            "error": self.error,
        }


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


# -- services -----------------------------------------------------------------------------


@contextmanager
def bench_services(out: Path) -> Iterator[Services]:
    from crm.devservices.testing import _probe_kafka_version, postgres_version

    for prefix in ("CRM_BENCH_", "CRM_"):
        bootstrap = os.environ.get(f"{prefix}KAFKA_BOOTSTRAP")
        url = os.environ.get(f"{prefix}DATABASE_URL")
        if bootstrap and url:
            yield Services(
                bootstrap,
                url,
                f"env ({prefix}KAFKA_BOOTSTRAP, {prefix}DATABASE_URL)",
                _probe_kafka_version(bootstrap),
                postgres_version(url),
            )
            return
    from crm.devservices.testing import services_for_tests

    home = out / "services"
    console.log(f"starting Kafka and PostgreSQL for the run under {home}")
    try:
        with services_for_tests(home) as started:
            yield Services(
                started.kafka_bootstrap,
                started.database_url,
                started.origin,
                started.kafka_version,
                started.postgres_version,
            )
    finally:
        shutil.rmtree(home, ignore_errors=True)


def clear_leftovers(services: Services) -> None:
    """Remove what killed runs left on these services (see ``bench.leftovers``)."""
    try:
        swept = sweep(services.kafka_bootstrap, services.database_url)
    except Exception as exc:  # the run goes on beside them, and says so
        console.log(f"[yellow]could not look for leftovers of earlier runs: {type(exc).__name__}")
        return
    console.log(swept.summary())


def versions(services: Services) -> dict[str, Any]:
    libraries = {}
    for name in LIBRARIES:
        try:
            libraries[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return {
        "kafka": services.kafka_version,
        "postgresql": services.postgres_version,
        "python": platform.python_version(),
        "libraries": libraries,
    }


def _safe_url(url: str) -> str:
    import sqlalchemy as sa

    try:
        return sa.engine.make_url(url).render_as_string(hide_password=True)
    except Exception:
        return "(unparseable)"


# -- running --------------------------------------------------------------------------------


def settle(database_url: str, log: Callable[[str], None]) -> None:
    """Force a PostgreSQL checkpoint, so no section pays for the WAL the one before wrote.

    A 1M-event replay leaves gigabytes of WAL behind; without this, the checkpoints it
    triggers ran for the next 15 minutes, under the freshness and read-API sections.
    Needs a superuser or ``pg_checkpoint``; without, the run goes on unsettled."""
    engine = engine_for(database_url)
    try:
        with engine.connect() as conn:
            conn.execute(sa.text("CHECKPOINT"))
    except sa.exc.DBAPIError as exc:
        log(f"no CHECKPOINT before the section ({type(exc.orig).__name__}): not settled")
    finally:
        engine.dispose()


def run_section(name: str, ctx: BenchContext) -> SectionResult:
    result = SectionResult(name, started_at=_now())
    started = time.perf_counter()
    try:
        try:
            module = importlib.import_module(f"bench.{name}")
        except ModuleNotFoundError as exc:
            if exc.name != f"bench.{name}":
                raise
            result.status, result.reason = "skipped", f"bench/{name}.py does not exist yet"
            return result
        run = getattr(module, "run", None)
        if not callable(run):
            result.status, result.reason = "failed", f"bench.{name} has no run(ctx)"
            return result
        figures = list(run(ctx))
        wrong = [f for f in figures if not isinstance(f, Figure)]
        if wrong:
            raise TypeError(f"run(ctx) returned {len(wrong)} non-Figure item(s): {wrong[0]!r}")
        result.figures, result.status = figures, "ok"
    except Exception as exc:
        result.status, result.reason = "failed", f"{type(exc).__name__}: {exc}"[:500]
        result.error = traceback.format_exc()
    finally:
        result.seconds = time.perf_counter() - started
        result.finished_at = _now()
    return result


def write_results(path: Path, document: dict[str, Any]) -> None:
    tmp = path.with_suffix(".json.tmp")
    tmp.write_bytes(orjson.dumps(document, option=orjson.OPT_INDENT_2))
    tmp.replace(path)


# -- reporting ------------------------------------------------------------------------------


def _number(value: float | None) -> str:
    if value is None:
        return "-"
    if abs(value) >= 100:
        return f"{value:,.0f}"
    if abs(value) >= 1:
        return f"{value:,.2f}"
    return f"{value:.3g}"


def figures_table(results: list[SectionResult]) -> Table:
    table = Table(title="LoopCRM benchmarks", show_lines=False)
    for column, justify in (
        ("section", "left"),
        ("figure", "left"),
        ("value", "right"),
        ("unit", "left"),
        ("baseline", "right"),
        ("ratio", "right"),
        ("target", "left"),
    ):
        table.add_column(column, justify=justify)  # type: ignore[arg-type]
    for result in results:
        for f in result.figures:
            baseline = _number(f.baseline)
            if f.baseline_name:
                baseline += f" [dim]({f.baseline_name})[/]"
            ratio = "-" if f.ratio is None else f"{f.ratio:.2f}x"
            table.add_row(
                f.section, f.name, _number(f.value), f.unit, baseline, ratio, f.target or ""
            )
    return table


def status_table(results: list[SectionResult]) -> Table:
    table = Table(title="sections")
    for column in ("section", "status", "seconds", "reason"):
        table.add_column(column)
    colours = {"ok": "green", "failed": "red", "skipped": "yellow"}
    for r in results:
        colour = colours.get(r.status, "white")
        table.add_row(r.name, f"[{colour}]{r.status}[/]", f"{r.seconds:.1f}", r.reason)
    return table


def draw_chart(results: list[SectionResult], path: Path) -> bool:
    """One panel per section (and unit): ours beside its baseline, log scale when the
    values span more than a factor of 30."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels: dict[tuple[str, str], list[Figure]] = {}
    for result in results:
        for f in result.figures:
            panels.setdefault((f.section, f.unit), []).append(f)
    if not panels:
        return False
    heights = [1.2 + 0.6 * len(figs) for figs in panels.values()]
    fig, axes = plt.subplots(
        len(panels),
        1,
        figsize=(11, sum(heights) + 0.6),
        gridspec_kw={"height_ratios": heights},
        squeeze=False,
    )
    for ax, ((section, unit), figs) in zip(axes[:, 0], panels.items(), strict=True):
        ys = list(range(len(figs)))
        ours = [f.value for f in figs]
        base = [f.baseline or 0.0 for f in figs]
        ax.barh([y + 0.2 for y in ys], ours, height=0.38, label="LoopCRM", color="#2b6cb0")
        ax.barh([y - 0.2 for y in ys], base, height=0.38, label="baseline", color="#a0aec0")
        ax.set_yticks(ys)
        ax.set_yticklabels([f.name for f in figs], fontsize=8)
        ax.invert_yaxis()
        positive = [v for v in ours + base if v > 0]
        if positive and max(positive) / min(positive) > 30:
            ax.set_xscale("log")
        for y, f in zip(ys, figs, strict=True):
            label = _number(f.value) + ("" if f.ratio is None else f"  ({f.ratio:.2f}x)")
            ax.annotate(
                label,
                (max(f.value, 1e-9), y + 0.2),
                xytext=(3, 0),
                textcoords="offset points",
                va="center",
                fontsize=7,
            )
        names = sorted({f.baseline_name for f in figs if f.baseline_name})
        ax.set_title(f"{section} ({unit}); baseline: {', '.join(names) or '-'}", fontsize=9)
        ax.tick_params(axis="x", labelsize=8)
        if ax.get_xscale() == "log":
            low, high = ax.get_xlim()
            ax.set_xlim(low, high * 4)
        else:
            ax.margins(x=0.18)
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


# -- the command ----------------------------------------------------------------------------


def main(
    quick: Annotated[bool, typer.Option(help="small sizes, for CI")] = False,
    only: Annotated[
        str | None, typer.Option(help=f"comma-separated sections of: {', '.join(SECTIONS)}")
    ] = None,
    out: Annotated[Path, typer.Option(help="folder for results.json and results.png")] = Path(
        "bench-results"
    ),
    events: Annotated[int | None, typer.Option(min=1, help="projection events")] = None,
    customers: Annotated[int | None, typer.Option(min=1)] = None,
    replay_events: Annotated[int | None, typer.Option(min=1)] = None,
    ingest_events: Annotated[int | None, typer.Option(min=1)] = None,
    freshness_seconds: Annotated[float | None, typer.Option(min=0.1)] = None,
    load_seconds: Annotated[float | None, typer.Option(min=0.1)] = None,
    peer_events: Annotated[int | None, typer.Option(min=1)] = None,
) -> None:
    """Run LoopCRM's benchmarks against real Kafka and PostgreSQL."""
    selected = list(SECTIONS)
    if only:
        selected = [s.strip() for s in only.split(",") if s.strip()]
        unknown = [s for s in selected if s not in SECTIONS]
        if unknown:
            raise typer.BadParameter(f"unknown section(s) {unknown}; choose from {SECTIONS}")
    overrides: dict[str, Any] = {
        "events": events,
        "customers": customers,
        "replay_events": replay_events,
        "ingest_events": ingest_events,
        "freshness_seconds": freshness_seconds,
        "load_seconds": load_seconds,
        "peer_events": peer_events,
    }
    sizes = replace(
        Sizes.quick() if quick else Sizes.full(),
        **{k: v for k, v in overrides.items() if v is not None},
    )
    out.mkdir(parents=True, exist_ok=True)
    workdir = out / "work"
    workdir.mkdir(exist_ok=True)
    results_path, chart_path = out / "results.json", out / "results.png"
    started_at = _now()
    results = [SectionResult(name) for name in selected]

    run_id = new_run_id()
    with bench_services(out) as services, holding_run(services.database_url, run_id):
        current = {"section": ""}

        def log(message: str) -> None:
            console.log(f"[cyan]{current['section']}[/] {message}")

        ctx = BenchContext(
            kafka_bootstrap=services.kafka_bootstrap,
            database_url=services.database_url,
            sizes=sizes,
            workdir=workdir,
            quick=quick,
            out=out,
            run_id=run_id,
            log=log,
        )
        console.log(
            f"services: {services.origin}; Kafka {services.kafka_version} at "
            f"{services.kafka_bootstrap}; PostgreSQL {services.postgres_version}"
        )
        console.log(f"run {ctx.run_id}, {'quick' if quick else 'full'} sizes: {asdict(sizes)}")
        clear_leftovers(services)
        document: dict[str, Any] = {
            "run_id": ctx.run_id,
            "started_at": started_at,
            "finished_at": None,
            "machine": machine(),
            "versions": versions(services),
            "settings": {
                "quick": quick,
                "sections": selected,
                "out": str(out),
                "services": services.origin,
                "kafka_bootstrap": services.kafka_bootstrap,
                "database_url": _safe_url(services.database_url),
                "argv": sys.argv[1:],
            },
            "sizes": asdict(sizes),
        }

        def save() -> None:
            document["sections"] = [r.to_json() for r in results]
            document["figures"] = [f.to_json() for r in results for f in r.figures]
            write_results(results_path, document)

        for index, name in enumerate(selected):
            current["section"] = name
            settle(services.database_url, log)
            with console.status(f"[bold]{name}[/] ({index + 1}/{len(selected)}) running…"):
                results[index] = run_section(name, ctx)
            result = results[index]
            if result.status == "ok":
                console.log(
                    f"[green]{name}: {len(result.figures)} figure(s) in {result.seconds:.1f} s"
                )
            elif result.status == "skipped":
                console.log(f"[yellow]{name}: skipped: {result.reason}")
            else:
                console.log(f"[red]{name}: failed after {result.seconds:.1f} s: {result.reason}")
                if result.error:
                    console.print(result.error, style="dim", markup=False)
            save()
        document["finished_at"] = _now()
        try:
            charted = draw_chart(results, chart_path)
        except Exception as exc:  # a chart must not cost the figures
            charted = False
            console.log(f"[red]chart failed: {type(exc).__name__}: {exc}")
        document["chart"] = chart_path.name if charted else None
        save()
    failed = any(r.status == "failed" for r in results)
    if failed:  # the processes' logs help; the data keys in it are this run's throwaways
        console.log(f"[yellow]kept {workdir} (process logs) for the failed section(s)")
    else:
        shutil.rmtree(workdir, ignore_errors=True)

    console.print(figures_table(results))
    console.print(status_table(results))
    console.print(f"results: {results_path}" + (f", chart: {chart_path}" if charted else ""))
    if failed:
        raise typer.Exit(1)


if __name__ == "__main__":
    typer.run(main)
