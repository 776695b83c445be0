"""``crm privacy``: erase a customer, export everything held about one (GDPR art. 17, 15).

CUSTOMER is a customer id (``cus_...``, merged ids too) or an identifier as
``kind:value`` (``email:ana@example.com``), looked up by its keyed hash.
"""

from __future__ import annotations

import json
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import sqlalchemy as sa
import typer
from rich.console import Console

from crm.cli_loop import _loop, _settle
from privacy.subject import export_subject, request_erasure
from projections.queries import live_customer
from projections.store import SqlProjectionStore
from projections.tables import customers, timeline
from schemas import IDENTIFIER_KINDS

console = Console(stderr=True)
privacy_app = typer.Typer(
    help="Privacy: erase a customer, export their data.", no_args_is_help=True
)

CustomerArg = Annotated[
    str, typer.Argument(help="customer id, or an identifier as kind:value (email:ana@x.com)")
]


def _customer(store: SqlProjectionStore, text: str) -> str:
    kind, sep, value = text.partition(":")
    if sep and kind in IDENTIFIER_KINDS and kind != "customer_id":
        try:
            found = store.customer_for(kind, value)
        except ValueError as exc:
            raise typer.BadParameter(str(exc)) from None
        if found is None:
            raise typer.BadParameter(f"no customer has that {kind}")
        text = found
    with store.engine.connect() as conn:
        live = live_customer(conn, text.removeprefix("customer_id:"))
    if live is None:
        raise typer.BadParameter(f"no customer {text!r}")
    return live


@privacy_app.command("erase")
def erase_command(
    customer: CustomerArg,
    reason: Annotated[str | None, typer.Option(help="why (kept in the audit trail)")] = None,
    by: Annotated[str | None, typer.Option(help="who asked or approved")] = None,
    yes: Annotated[bool, typer.Option("--yes", help="do not ask for confirmation")] = False,
) -> None:
    """Erase a customer: destroy their data keys, redact every projection, and keep
    them out of segments and campaigns. Cannot be undone."""
    with _loop() as (_settings, event_log, store):
        customer_id = _customer(store, customer)
        if not yes and not typer.confirm(f"Erase {customer_id}? This cannot be undone"):
            raise typer.Exit(1)
        request = request_erasure(
            event_log, customer_id, now=datetime.now(UTC), reason=reason, requested_by=by
        )
        _settle(event_log, store)
        with store.engine.connect() as conn:
            live = live_customer(conn, customer_id) or customer_id
            when = conn.execute(
                sa.select(customers.c.erased_at).where(customers.c.customer_id == live)
            ).scalar_one_or_none()
            done = conn.execute(
                sa.select(timeline.c.event).where(
                    timeline.c.customer_id == live, timeline.c.type == "customer.erased"
                )
            ).scalars()
            destroyed = [
                e["payload"]["keys_destroyed"]
                for e in done
                if e["payload"]["request_id"] == str(request.event_id)
            ]
    if when is None:
        console.print(f"[red]erasure of {customer_id} requested ({request.event_id}) but not done")
        raise typer.Exit(1)
    keys = f"{destroyed[0]} data keys destroyed" if destroyed else "erased before"
    console.print(f"[green]erased {live}[/]: {keys}; request {request.event_id}")


@privacy_app.command("export")
def export_command(
    customer: CustomerArg,
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="file to write (default: stdout)")
    ] = None,
) -> None:
    """Everything held about a customer as JSON: profile, identifiers, consents, every
    event of their timeline, segments, campaigns (subject access request)."""
    with _loop() as (_settings, _event_log, store):
        customer_id = _customer(store, customer)
        with store.engine.connect() as conn:
            data = export_subject(conn, customer_id, store.protector, now=datetime.now(UTC))
    assert data is not None
    text = json.dumps(data, indent=2, ensure_ascii=False, default=str)
    if output is None:
        sys.stdout.write(text + "\n")
    else:
        output.write_text(text + "\n")
        console.print(f"wrote {output} ({len(data['events'])} events)")
