"""``crm api serve``: the read API (uvicorn), wired from settings.

FastAPI and uvicorn are imported when the API is built, not when ``crm`` starts.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer

from crm.bootstrap import build_event_log, build_protector
from crm.bootstrap_auth import build_api_key_store
from crm.cli_process import LogLevel
from crm.serving import Workers, frozen_heap_at_startup
from crm.serving import serve as serve_app
from crm.settings import Settings

if TYPE_CHECKING:
    from fastapi import FastAPI

api_app = typer.Typer(help="The read API: the single customer view over HTTP.")


def build_read_api(settings: Settings) -> FastAPI:
    """The read API on the configured projections (PostgreSQL or embedded SQLite), with
    the key store that opens sealed personal data and the (sealing) log that takes
    erasure requests."""
    from read_api import create_app, create_read_engine

    engine = create_read_engine(
        settings.database_url,
        settings.data_dir / "projections.sqlite3",
        schema=settings.projection_schema,
    )
    event_log = build_event_log(settings)
    return create_app(
        engine,
        build_api_key_store(settings),
        topic=settings.topic,
        schema=settings.projection_schema,
        log_ends=event_log.end_offsets,
        max_lag=settings.api_max_lag,
        protector=build_protector(settings),
        event_log=event_log,
    )


def app_from_settings() -> FastAPI:
    """The app factory each uvicorn worker process calls (``--workers``)."""
    return frozen_heap_at_startup(build_read_api(Settings()))


@api_app.command("serve")
def serve(
    host: Annotated[str, typer.Option(help="address to listen on")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65_535)] = 8000,
    log_level: Annotated[LogLevel, typer.Option(case_sensitive=False)] = LogLevel.info,
    workers: Workers = 1,
) -> None:
    """Serve /v1/customers (API key with the read scope, admin for erasure and export:
    see `crm keys create`).

    Reads CRM_DATABASE_URL (schema CRM_PROJECTION_SCHEMA), else the embedded
    CRM_DATA_DIR/projections.sqlite3. Uvicorn's access log is off: it would print query
    strings, which hold identifiers; the API logs route templates only.
    """
    serve_app(
        app_from_settings,
        "crm.cli_api:app_from_settings",
        workers=workers,
        host=host,
        port=port,
        log_level=log_level,
        access_log=False,
    )
