"""``crm keys``: create, list and revoke API keys of the HTTP services."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from auth import Scope, UnknownKeyError
from crm.bootstrap_auth import build_api_key_store
from crm.settings import Settings

keys_app = typer.Typer(help="API keys of the HTTP services (ingest gateway, read API).")
console = Console(stderr=True)


@keys_app.command("create")
def keys_create(
    name: Annotated[str, typer.Option("--name", help="who or what will use the key")],
    scope: Annotated[
        list[Scope], typer.Option("--scope", help="ingest, read, analyst or admin (repeatable)")
    ],
) -> None:
    """Create a key and print it once on stdout (nothing else goes to stdout)."""
    store = build_api_key_store(Settings())
    try:
        key = store.create(name, scope)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from exc
    typer.echo(key.plaintext)
    scopes = ", ".join(sorted(s.value for s in set(scope)))
    console.print(f"created key {key.key_id} ({scopes}); it is shown only this once")


@keys_app.command("list")
def keys_list() -> None:
    """List keys: id, name, scopes, dates. Secrets are never stored, so never shown."""
    keys = build_api_key_store(Settings()).list()
    table = Table(title=f"{len(keys)} API key(s)")
    for column in ("key id", "name", "scopes", "created", "last used", "revoked"):
        table.add_column(column)
    for key in keys:
        table.add_row(
            key.key_id,
            key.name,
            ", ".join(s.value for s in key.scopes),
            f"{key.created_at:%Y-%m-%d %H:%M:%S}Z",
            f"{key.last_used_at:%Y-%m-%d %H:%M:%S}Z" if key.last_used_at else "-",
            f"{key.revoked_at:%Y-%m-%d %H:%M:%S}Z" if key.revoked_at else "-",
            style="dim" if key.revoked_at else None,
        )
    Console().print(table)


@keys_app.command("revoke")
def keys_revoke(
    key_id: Annotated[str, typer.Argument(help="the key's id (see crm keys list)")],
) -> None:
    """Revoke a key. Running services stop accepting it within their cache TTL (5 s)."""
    try:
        revoked = build_api_key_store(Settings()).revoke(key_id)
    except UnknownKeyError as exc:
        console.print(f"[red]{exc}")
        raise typer.Exit(1) from exc
    console.print(f"revoked {key_id}" if revoked else f"{key_id} was already revoked")
