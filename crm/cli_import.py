"""``crm import`` (legacy files as events) and ``crm deadletters`` (inspect and replay)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Annotated, NoReturn

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)
from rich.table import Table

from crm.bootstrap import build_event_log, build_raw_event_log
from crm.settings import Settings
from events.log import EventLog, LogError, Position
from producers.deadletters import (
    DeadLetter,
    ReplayOutcome,
    first_line,
    format_position,
    get_dead_letter,
    parse_position,
    pretty_value,
    read_dead_letters,
    replay,
)
from producers.import_mapping import MappingError, load_mapping
from producers.importer import ImportAborted, ImportStats, import_file

console = Console(stderr=True)
out = Console()

deadletters_app = typer.Typer(
    help="Dead letters: input LoopCRM could not use, with why and where from. "
    "List, show, and replay what today's contract accepts.",
    no_args_is_help=True,
)


# --- crm import ------------------------------------------------------------------------


def import_command(
    file: Annotated[
        Path, typer.Argument(exists=True, dir_okay=False, help="legacy CSV or JSON Lines file")
    ],
    mapping: Annotated[
        Path,
        typer.Option("--mapping", "-m", exists=True, dir_okay=False, help="mapping YAML"),
    ],
    rejects: Annotated[
        Path | None,
        typer.Option(help="rejected rows, as JSON Lines [default: ./FILE.rejects.jsonl]"),
    ] = None,
    batch: Annotated[int, typer.Option(min=1, max=100_000, help="events per append")] = 2_000,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="check every row, publish none")
    ] = False,
    resume_from_line: Annotated[
        int, typer.Option(min=1, help="skip rows before this line of FILE (header = line 1)")
    ] = 1,
) -> None:
    """Import a legacy FILE as events, row by row, as the MAPPING says.

    Event ids derive from the mapping's source, the event type and the row's natural
    key, so re-running an import (or resuming one) publishes no duplicates: consumers
    dedupe on event_id. Bad rows go to the rejects file with their line and reason and
    never stop the import. Exit 1 if every row was rejected.
    """
    try:
        spec = load_mapping(mapping)
    except MappingError as exc:
        _mapping_failed(mapping, exc)
    rejects_path = rejects or Path(f"{file.name}.rejects.jsonl")
    settings = Settings()
    event_log = None if dry_run else _open_log(settings)
    try:
        with _bytes_progress() as progress:
            task = progress.add_task(file.name, total=file.stat().st_size, rows="")

            def advance(stats: ImportStats) -> None:
                progress.update(
                    task,
                    completed=stats.bytes_read,
                    rows=f"{stats.rows_read:,} rows, {stats.rejected:,} rejected",
                )

            stats = import_file(
                file,
                spec,
                event_log,
                rejects_path=rejects_path,
                batch_size=batch,
                dry_run=dry_run,
                resume_from_line=resume_from_line,
                on_progress=advance,
            )
    except MappingError as exc:
        _mapping_failed(file, exc)
    except UnicodeDecodeError as exc:
        console.print(f"[red]{file} is not {spec.csv.encoding}: {exc}; set csv.encoding")
        raise typer.Exit(2) from exc
    except ImportAborted as exc:
        _summary(exc.stats, rejects_path, target=None)
        console.print(f"[red]{escape(str(exc))}")
        console.print(f"resume with: --resume-from-line {exc.resume_line}")
        raise typer.Exit(1) from exc
    finally:
        if event_log is not None:
            event_log.close()
    where = None if event_log is None else event_log.topic
    _summary(stats, rejects_path, target=where)
    if stats.rejected and not stats.published:
        console.print("[red]every row was rejected: nothing published")
        raise typer.Exit(1)


def _mapping_failed(where: Path, exc: MappingError) -> NoReturn:
    console.print(f"[red]{where}: the mapping cannot work:")
    for problem in exc.problems:
        console.print(f"  - {escape(problem)}")
    raise typer.Exit(2)


def _bytes_progress() -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TextColumn("{task.fields[rows]}"),
        TimeRemainingColumn(),
        TimeElapsedColumn(),
        console=console,
    )


def _summary(stats: ImportStats, rejects_path: Path, *, target: str | None) -> None:
    title = "import (dry run: nothing published)" if stats.dry_run else f"import into {target}"
    table = Table(title=title)
    table.add_column("figure")
    table.add_column("value", justify="right")
    table.add_row("rows read", f"{stats.rows_read:,}")
    table.add_row("valid, not published" if stats.dry_run else "published", f"{stats.published:,}")
    table.add_row("rejected", f"{stats.rejected:,}")
    if stats.skipped:
        table.add_row("skipped (resume)", f"{stats.skipped:,}")
    table.add_row("elapsed", f"{stats.seconds:.2f} s")
    table.add_row("rate", f"{stats.rows_per_second:,.0f} rows/s")
    out.print(table)
    for line, reason in stats.samples:
        console.print(f"  line {line}: {escape(reason)}")
    if stats.rejected:
        console.print(f"{stats.rejected:,} rejected rows (line, reason, row) in {rejects_path}")


# --- crm deadletters ----------------------------------------------------------------------


def _logs(settings: Settings) -> EventLog:
    return _open_log(settings, settings.deadletter_topic, build=build_raw_event_log)


def _open_log(
    settings: Settings,
    topic: str | None = None,
    *,
    build: Callable[..., EventLog] = build_event_log,
) -> EventLog:
    try:
        return build(settings, topic=topic)
    except LogError as exc:
        console.print(f"[red]{escape(str(exc))}")
        raise typer.Exit(1) from exc


def _parse_time(value: str | None) -> datetime | None:
    if value is None:
        return None
    try:
        when = datetime.fromisoformat(value)
    except ValueError as exc:
        raise typer.BadParameter(f"{value!r}: use ISO 8601, e.g. 2026-03-14T09:00:00Z") from exc
    return when if when.tzinfo else when.astimezone()


def _positions(values: list[str]) -> list[Position]:
    try:
        return [parse_position(value) for value in values]
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from exc


def _status(letter: DeadLetter) -> str:
    return "pending" if letter.replayed is None else "replayed"


@deadletters_app.command("list")
def deadletters_list(
    limit: Annotated[int, typer.Option(min=1, help="show the newest N")] = 50,
    since: Annotated[str | None, typer.Option(help="appended at/after (ISO 8601)")] = None,
    pending: Annotated[bool, typer.Option("--pending", help="hide replayed letters")] = False,
) -> None:
    """List dead letters, oldest first: position, time, origin, error, size, status."""
    settings = Settings()
    dlq = _logs(settings)
    try:
        letters = read_dead_letters(dlq, since=_parse_time(since))
    except LogError as exc:
        console.print(f"[red]{escape(str(exc))}")
        raise typer.Exit(1) from exc
    finally:
        dlq.close()
    if pending:
        letters = [letter for letter in letters if letter.replayed is None]
    shown = letters[-limit:]
    if not shown:
        console.print(f"no dead letters in {settings.deadletter_topic}")
        return
    table = Table(title=f"{settings.deadletter_topic}: {len(shown)} of {len(letters)} dead letters")
    for column in ("P:O", "time (UTC)", "origin", "error", "bytes", "status"):
        table.add_column(column, justify="right" if column == "bytes" else "left")
    for letter in shown:
        table.add_row(
            format_position(letter.position),
            letter.timestamp.strftime("%Y-%m-%d %H:%M:%S"),
            escape(letter.origin),
            escape(first_line(letter.error)[:120]),
            f"{letter.size:,}",
            _status(letter),
            style="dim" if letter.replayed else None,
        )
    out.print(table)


@deadletters_app.command("show")
def deadletters_show(
    position: Annotated[str, typer.Argument(help="PARTITION:OFFSET, as in `list`")],
) -> None:
    """Show one dead letter: its headers (the error in full) and the original bytes."""
    (where,) = _positions([position])
    dlq = _logs(Settings())
    try:
        letter = get_dead_letter(dlq, where)
    finally:
        dlq.close()
    if letter is None:
        console.print(f"[red]no dead letter at {position}")
        raise typer.Exit(1)
    table = Table(title=f"dead letter {format_position(letter.position)}", show_header=False)
    table.add_column("header", style="bold")
    table.add_column("value")
    table.add_row("time (UTC)", letter.timestamp.isoformat())
    table.add_row("status", _status(letter))
    if letter.replayed is not None:
        marker = letter.replayed
        table.add_row(
            "replayed",
            f"{marker.timestamp.isoformat()} into {marker.topic} at "
            f"{', '.join(marker.appended_at)} (marker {format_position(marker.position)})",
        )
    for name, value in letter.headers:
        table.add_row(escape(name), escape(value.decode("utf-8", "replace")))
    table.add_row("bytes", f"{letter.size:,}")
    out.print(table)
    out.print(escape(pretty_value(letter)), highlight=False)


@deadletters_app.command("replay")
def deadletters_replay(
    positions: Annotated[
        list[str] | None, typer.Argument(help="PARTITION:OFFSET of letters to replay")
    ] = None,
    all_: Annotated[bool, typer.Option("--all", help="every letter not yet replayed")] = False,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="only say what would happen")] = False,
) -> None:
    """Re-validate dead letters and append the valid ones to the event topic.

    Today's schemas and upcasters decide; events keep their original ids, so consumers
    dedupe and replay is safe to repeat. Each replayed letter gets a marker record in
    the dead-letter topic; letters still invalid are reported with their errors.
    """
    if bool(positions) == all_:
        raise typer.BadParameter("name positions (P:O ...) or give --all, not both")
    wanted = None if all_ else _positions(positions or [])
    settings = Settings()
    dlq = _logs(settings)
    events_log = _open_log(settings)
    try:
        outcomes = replay(dlq, events_log, wanted, dry_run=dry_run)
    except LogError as exc:
        console.print(f"[red]replay failed, nothing marked as replayed: {escape(str(exc))}")
        raise typer.Exit(1) from exc
    finally:
        dlq.close()
        events_log.close()
    _replay_report(outcomes, events_log.topic)
    if any(o.status in ("still invalid", "not found") for o in outcomes):
        raise typer.Exit(1)


def _replay_report(outcomes: list[ReplayOutcome], topic: str) -> None:
    table = Table(title=f"replay into {topic}")
    for column in ("P:O", "status", "events", "detail"):
        table.add_column(column)
    for o in outcomes:
        if o.errors:
            detail = "\n".join(o.errors)
        elif o.appended_at:
            detail = "at " + ", ".join(map(format_position, o.appended_at))
        elif o.marker is not None:
            detail = f"marker {format_position(o.marker.position)}"
        else:
            detail = ""
        style = {"still invalid": "red", "not found": "red", "replayed": "green"}.get(o.status)
        table.add_row(
            format_position(o.position),
            o.status,
            str(len(o.event_ids)),
            escape(detail),
            style=style,
        )
    out.print(table)
    order = ("replayed", "would replay", "already replayed", "still invalid", "not found")
    counts = {status: sum(o.status == status for o in outcomes) for status in order}
    summary = ", ".join(f"{n} {status}" for status, n in counts.items() if n)
    console.print(summary or "nothing to replay")
