"""``crm dev``: real Kafka and PostgreSQL on 127.0.0.1 for development, without Docker.

Human output (spinners, tables, errors) goes to stderr; ``crm dev env`` writes only the
``export`` lines to stdout so that ``eval "$(crm dev env)"`` works.
"""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console, Group
from rich.table import Table
from rich.text import Text

from crm.devservices.errors import DevServiceError
from crm.devservices.kafka import KAFKA_VERSION
from crm.devservices.stack import DevStack

dev_app = typer.Typer(
    help=f"Local Kafka {KAFKA_VERSION} and PostgreSQL on 127.0.0.1 (no Docker): "
    "up, down, status, env.",
    no_args_is_help=True,
)
console = Console(stderr=True)

HomeOption = Annotated[
    Path | None,
    typer.Option(
        "--home",
        envvar="CRM_DEV_HOME",
        help="State directory of the stack [default: ~/.local/state/loopcrm/dev]",
        show_default=False,
    ),
]


def _fail(exc: DevServiceError) -> typer.Exit:
    console.print(Text(str(exc), style="red"))
    return typer.Exit(code=1)


def _status_view(status: dict[str, Any]) -> Group:
    table = Table(title=f"LoopCRM dev stack ({status['home']})", title_justify="left")
    for column in ("service", "state", "pid", "endpoint", "version"):
        table.add_column(column, overflow="fold")
    paths = []
    for name, endpoint_key in (("kafka", "bootstrap"), ("postgres", "url")):
        svc = status[name]
        state = "[green]running[/]" if svc["running"] else "[red]stopped[/]"
        pid = str(svc["pid"] or "-")
        table.add_row(name, state, pid, Text(svc[endpoint_key]), svc["version"] or "?")
        paths.append(Text(f"{name}: data {svc['data_dir']}\n{name}: log  {svc['log']}"))
    return Group(table, *paths)


@dev_app.command()
def up(home: HomeOption = None) -> None:
    """Start Kafka and PostgreSQL (detached; a no-op if they already run)."""
    stack = DevStack(home)
    try:
        with console.status("starting…") as spinner:
            status = stack.up(on_progress=spinner.update)
    except DevServiceError as exc:
        raise _fail(exc) from None
    console.print(_status_view(status))
    console.print('Point LoopCRM at them with: [bold]eval "$(crm dev env)"[/]')


@dev_app.command()
def down(home: HomeOption = None) -> None:
    """Stop Kafka and PostgreSQL (data is kept for the next `up`)."""
    stack = DevStack(home)
    try:
        with console.status("stopping Kafka and PostgreSQL…"):
            stack.down()
    except DevServiceError as exc:
        raise _fail(exc) from None
    console.print("stopped")


@dev_app.command()
def status(home: HomeOption = None) -> None:
    """Show whether the services run, their pids, endpoints, versions and paths."""
    stack = DevStack(home)
    current = stack.status()
    if not current["configured"]:
        console.print(f"no dev stack in {stack.home} yet: run `crm dev up`")
        return
    console.print(_status_view(current))


@dev_app.command()
def env(home: HomeOption = None) -> None:
    """Print `export CRM_KAFKA_BOOTSTRAP=… CRM_DATABASE_URL=…` lines for `eval`."""
    stack = DevStack(home)
    try:
        variables = stack.env()
    except DevServiceError as exc:
        raise _fail(exc) from None
    current = stack.status()
    if not (current["kafka"]["running"] and current["postgres"]["running"]):
        console.print("[yellow]warning:[/] the dev stack is not running: `crm dev up`")
    for name, value in variables.items():
        typer.echo(f"export {name}={shlex.quote(value)}")
