"""``crm ingest serve``: the HTTP ingest gateway (uvicorn), wired from settings.

FastAPI and uvicorn are imported when the gateway is built, not when ``crm`` starts.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Annotated

import typer
from pydantic import Field

from crm.bootstrap import build_event_log, build_raw_event_log
from crm.bootstrap_auth import build_api_key_store
from crm.cli_process import LogLevel
from crm.serving import Workers, frozen_heap_at_startup
from crm.serving import serve as serve_app
from crm.settings import Settings
from events.log import EventLog

if TYPE_CHECKING:
    from fastapi import FastAPI

    from producers.gateway import GatewayLimits

ingest_app = typer.Typer(help="The HTTP ingest gateway: touchpoints POST events.")


class IngestSettings(Settings):
    """Settings of the ingest gateway: the CLI's, plus its request limits."""

    ingest_max_batch: int = Field(
        default=1_000, ge=1, le=100_000, description="most events in one request"
    )
    ingest_max_event_bytes: int = Field(
        default=256 * 1024, ge=1_024, description="most bytes of one event (JSON)"
    )
    ingest_max_request_bytes: int = Field(
        default=8 * 1024 * 1024, ge=1_024, description="most bytes of one request body"
    )

    def limits(self) -> GatewayLimits:
        from producers.gateway import GatewayLimits

        return GatewayLimits(
            max_events=self.ingest_max_batch,
            max_event_bytes=self.ingest_max_event_bytes,
            max_request_bytes=self.ingest_max_request_bytes,
        )


def build_gateway(settings: IngestSettings, event_log: EventLog, deadletters: EventLog) -> FastAPI:
    """The gateway on the given logs, with the configured key store and limits."""
    from producers.gateway import KafkaProbe, always_ready, create_app

    probe = KafkaProbe(settings.kafka_bootstrap) if settings.kafka_bootstrap else always_ready
    return create_app(
        event_log, deadletters, build_api_key_store(settings), settings.limits(), readiness=probe
    )


def gateway_from_settings() -> FastAPI:
    """The app factory each uvicorn worker process calls (``--workers``): its own logs,
    closed when the worker stops."""
    settings = IngestSettings()
    event_log = build_event_log(settings)
    deadletters = build_raw_event_log(settings, topic=settings.deadletter_topic)
    app = build_gateway(settings, event_log, deadletters)

    @asynccontextmanager
    async def lifespan(_app: object) -> AsyncIterator[None]:
        try:
            yield
        finally:
            event_log.close()
            deadletters.close()

    app.router.lifespan_context = lifespan
    return frozen_heap_at_startup(app)


@ingest_app.command("serve")
def serve(
    host: Annotated[str, typer.Option(help="address to listen on")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65_535)] = 8080,
    log_level: Annotated[LogLevel, typer.Option(case_sensitive=False)] = LogLevel.info,
    workers: Workers = 1,
) -> None:
    """Serve POST /v1/events (API key with the ingest scope: see `crm keys create`).

    Answers 2xx only after Kafka acknowledged every accepted event; 503 with
    Retry-After when Kafka is unreachable. Without CRM_KAFKA_BOOTSTRAP, events go to
    the embedded log. Limits: CRM_INGEST_MAX_BATCH, CRM_INGEST_MAX_EVENT_BYTES,
    CRM_INGEST_MAX_REQUEST_BYTES. Request bodies and keys are never logged.
    """
    serve_app(
        gateway_from_settings,
        "crm.cli_ingest:gateway_from_settings",
        workers=workers,
        host=host,
        port=port,
        log_level=log_level,
    )
