"""The ``crm`` command line: thin commands that decode arguments, call, and report."""

from __future__ import annotations

import sys
import time
import uuid
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Annotated

import orjson
import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from crm.bootstrap import build_event_log, build_projection_store, build_protector
from crm.cli_api import api_app
from crm.cli_dev import dev_app
from crm.cli_import import deadletters_app, import_command
from crm.cli_ingest import ingest_app
from crm.cli_keys import keys_app
from crm.cli_loop import assess_command, campaigns_app, segments_app
from crm.cli_privacy import privacy_app
from crm.cli_process import process
from crm.demo import demo
from crm.settings import Settings
from events.codec import decode_event
from schemas import EventValidationError, export_json_schemas, parse_event

app = typer.Typer(
    help="LoopCRM: an event-sourced CRM. Events go to Kafka (or an embedded log), "
    "projections to PostgreSQL (or SQLite).",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
)
schemas_app = typer.Typer(help="The event contract: export JSON Schema, validate files.")
log_app = typer.Typer(help="The event log: inspect, append, read.")
app.add_typer(schemas_app, name="schemas")
app.add_typer(log_app, name="log")
app.add_typer(dev_app, name="dev")
app.add_typer(api_app, name="api")
app.command("import")(import_command)
app.add_typer(deadletters_app, name="deadletters")
app.add_typer(keys_app, name="keys")
app.add_typer(ingest_app, name="ingest")
app.command("process")(process)
app.command("assess")(assess_command)
app.add_typer(segments_app, name="segments")
app.add_typer(campaigns_app, name="campaigns")
app.add_typer(privacy_app, name="privacy")
app.command("demo")(demo)

console = Console(stderr=True)


def _progress() -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[rate]}"),
        TimeRemainingColumn(),
        console=console,
        transient=False,
    )


def _rated(progress: Progress, description: str, total: float | None) -> Callable[[int], None]:
    """A task on ``progress`` and the function that advances it, showing events/s."""
    task = progress.add_task(description, total=total, rate="")
    started, done = time.perf_counter(), 0

    def advance(n: int) -> None:
        nonlocal done
        done += n
        rate = f"{done / max(time.perf_counter() - started, 1e-9):,.0f} ev/s"
        progress.update(task, advance=n, rate=rate)

    return advance


@schemas_app.command("export")
def schemas_export(directory: Annotated[Path, typer.Argument(help="output folder")]) -> None:
    """Write one JSON Schema file per event type (plus envelope and index) to DIRECTORY."""
    written = export_json_schemas(directory)
    console.print(f"wrote {len(written)} files to {directory}")


@schemas_app.command("validate")
def schemas_validate(
    file: Annotated[Path, typer.Argument(help="JSON Lines file of events ('-' for stdin)")],
) -> None:
    """Check every line of FILE against the contract; exit 1 if any is invalid."""
    stream = sys.stdin.buffer if str(file) == "-" else file.open("rb")
    bad = total = 0
    with stream:
        for number, line in enumerate(stream, start=1):
            if not line.strip():
                continue
            total += 1
            try:
                decode_event(line)
            except EventValidationError as exc:
                bad += 1
                for error in exc.errors:
                    console.print(f"line {number}: {error.loc or '<event>'}: {error.msg}")
    console.print(f"{total - bad} valid, {bad} invalid")
    raise typer.Exit(1 if bad else 0)


@log_app.command("info")
def log_info() -> None:
    """Show where the log is and how many records each partition holds."""
    settings = Settings()
    event_log = build_event_log(settings)
    try:
        ends = event_log.end_offsets()
    finally:
        event_log.close()
    where = settings.kafka_bootstrap or str(settings.data_dir / "log.sqlite3")
    table = Table(title=f"{event_log.topic} @ {where}")
    table.add_column("partition", justify="right")
    table.add_column("end offset", justify="right")
    for partition, end in sorted(ends.items()):
        table.add_row(str(partition), str(end))
    table.add_row("total", str(sum(ends.values())), style="bold")
    Console().print(table)


@log_app.command("append")
def log_append(
    file: Annotated[Path, typer.Argument(help="JSON Lines file of events ('-' for stdin)")],
    batch: Annotated[int, typer.Option(min=1, max=100_000)] = 1_000,
) -> None:
    """Validate and append events from FILE; stops at the first invalid line."""
    settings = Settings()
    event_log = build_event_log(settings)
    stream = sys.stdin.buffer if str(file) == "-" else file.open("rb")
    pending, appended = [], 0
    try:
        with stream:
            for number, line in enumerate(stream, start=1):
                if not line.strip():
                    continue
                try:
                    pending.append(decode_event(line))
                except EventValidationError as exc:
                    console.print(
                        f"[red]line {number} is invalid, nothing after it appended:\n{exc}"
                    )
                    raise typer.Exit(1) from exc
                if len(pending) >= batch:
                    appended += len(event_log.append(pending))
                    pending.clear()
            appended += len(event_log.append(pending))
    finally:
        event_log.close()
        console.print(f"appended {appended} events to {event_log.topic}")


@log_app.command("read")
def log_read(
    from_time: Annotated[
        datetime | None, typer.Option(help="first record appended at/after this time (UTC)")
    ] = None,
    from_offset: Annotated[
        list[str] | None, typer.Option(help="PARTITION:OFFSET to start from (repeatable)")
    ] = None,
    partition: Annotated[list[int] | None, typer.Option(help="only these partitions")] = None,
    limit: Annotated[int | None, typer.Option(min=1)] = None,
) -> None:
    """Print events as JSON Lines, with their partition and offset, up to the current end."""
    offsets = None
    if from_offset:
        try:
            offsets = {int(p): int(o) for p, o in (item.split(":", 1) for item in from_offset)}
        except ValueError as exc:
            raise typer.BadParameter("use PARTITION:OFFSET, e.g. 0:1200") from exc
    if from_time is not None and from_time.tzinfo is None:
        from_time = from_time.astimezone()
    event_log = build_event_log(Settings())
    out = sys.stdout.buffer
    try:
        for count, record in enumerate(
            event_log.read(from_offsets=offsets, from_time=from_time, partitions=partition),
            start=1,
        ):
            event = orjson.loads(record.value)
            out.write(
                orjson.dumps(
                    {"partition": record.partition, "offset": record.offset, "event": event}
                )
                + b"\n"
            )
            if limit is not None and count >= limit:
                break
    finally:
        event_log.close()


@app.command("smoke")
def smoke(
    events: Annotated[int, typer.Option(min=1, help="events to generate")] = 20_000,
    customers: Annotated[int, typer.Option(min=1)] = 1_000,
    seed: Annotated[int, typer.Option()] = 42,
    batch: Annotated[int, typer.Option(min=1, max=100_000)] = 1_000,
    project: Annotated[bool, typer.Option(help="also build the single customer view")] = True,
) -> None:
    """Publish synthetic touchpoint events, read them back, and check nothing is lost.

    Rates count only the log's work: appending (until acknowledged) and reading back
    with decoding and validation; generating the events is not timed.

    Runs on the embedded log by default, on Kafka when CRM_KAFKA_BOOTSTRAP is set.
    """
    from producers.synthetic import SyntheticTouchpoints

    settings = Settings()
    event_log = build_event_log(settings)
    start_offsets = event_log.end_offsets()
    generator = SyntheticTouchpoints(customers=customers, seed=seed)
    sent_ids: set[uuid.UUID] = set()
    try:
        with _progress() as progress:
            task = progress.add_task("append", total=events, rate="")
            append_s, pending = 0.0, []
            for event in generator.events(events):
                pending.append(event)
                if len(pending) == batch or len(sent_ids) + len(pending) == events:
                    started = time.perf_counter()
                    event_log.append(pending)
                    append_s += time.perf_counter() - started
                    sent_ids.update(e.event_id for e in pending)
                    progress.update(
                        task, advance=len(pending), rate=f"{len(sent_ids) / append_s:,.0f}/s"
                    )
                    pending = []

            task = progress.add_task("read back", total=events, rate="")
            started, seen = time.perf_counter(), set()
            for record in event_log.read(from_offsets=start_offsets):
                seen.add(parse_event(orjson.loads(record.value)).event_id)
                progress.update(task, advance=1)
            read_s = time.perf_counter() - started
    finally:
        event_log.close()
    table = Table(
        title=f"smoke: {events:,} events on "
        f"{'Kafka ' + settings.kafka_bootstrap if settings.kafka_bootstrap else 'embedded log'}"
    )
    for column in ("step", "events", "seconds", "events/s"):
        table.add_column(column, justify="right")
    table.add_row(
        "append (acked)",
        f"{len(sent_ids):,}",
        f"{append_s:.2f}",
        f"{len(sent_ids) / append_s:,.0f}",
    )
    table.add_row("read + decode", f"{len(seen):,}", f"{read_s:.2f}", f"{len(seen) / read_s:,.0f}")
    Console().print(table)
    missing = sent_ids - seen
    if missing:
        console.print(f"[red]{len(missing)} acknowledged events were not read back")
        raise typer.Exit(1)
    console.print("[green]every acknowledged event was read back")
    if project:
        _project_and_report(settings)


def _project_and_report(settings: Settings) -> None:
    """Run the projections up to the end of the log and show the single customer view."""
    from projections.runner import catch_up

    event_log = build_event_log(settings)
    store = build_projection_store(settings, event_log)
    try:
        with _progress() as progress:
            pending = sum(event_log.end_offsets().values()) - sum(
                store.checkpoints(event_log.topic).values()
            )
            catch_up(event_log, store, on_batch=_rated(progress, "project", pending))
            catch_up(event_log, store)  # the identity merges it just appended to the log
        view = store.overview()
    finally:
        event_log.close()
    table = Table(title="single customer view")
    table.add_column("figure")
    table.add_column("value", justify="right")
    for label, value in view.items():
        table.add_row(label, f"{value:,}")
    Console().print(table)


@app.command("replay")
def replay(
    until: Annotated[
        datetime | None,
        typer.Option(help="build the state as known at this time into a separate schema/file"),
    ] = None,
    batch_size: Annotated[int, typer.Option(min=1, max=100_000)] = 20_000,
    keep_old: Annotated[bool, typer.Option(help="keep the replaced schema (PostgreSQL)")] = False,
) -> None:
    """Rebuild every projection from the beginning of the log.

    Without --until: into a fresh schema (or file) that replaces the live one atomically
    once it has caught up (blue/green). With --until: the state as it was at that time,
    into its own schema (or file) for analysis; the live projections are untouched.
    """
    from projections.replay import ReplaySource, rebuild

    settings = Settings()
    if until is not None and until.tzinfo is None:
        until = until.astimezone()
    event_log = build_event_log(settings)
    source = ReplaySource(
        settings.database_url,
        settings.projection_schema,
        settings.data_dir / "projections.sqlite3",
        settings.shared_identifier_threshold,
        build_protector(settings),
    )
    try:
        with _progress() as progress:
            advance = _rated(progress, "replay", None)
            task = progress.task_ids[-1]
            result = rebuild(
                event_log,
                source,
                as_of=until,
                batch_size=batch_size,
                keep_old=keep_old,
                retain=settings.replay_retain_customers,
                on_total=lambda total: progress.update(task, total=total),
                progress=advance,
            )
    finally:
        event_log.close()
    verb = "switched to" if result.switched else "built"
    console.print(
        f"[green]{verb} {result.target}: {result.records:,} records in {result.seconds:.1f}s "
        f"({result.records / max(result.seconds, 1e-9):,.0f} ev/s)"
    )
