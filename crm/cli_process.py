"""``crm process``: run a projection worker on Kafka in the foreground."""

from __future__ import annotations

import signal
import threading
from enum import StrEnum
from typing import Annotated

import typer
from rich.console import Console

from crm.bootstrap import build_event_log, build_projection_store
from crm.settings import Settings
from projections.faust_app import DEFAULT_GROUP_ID, DEFAULT_STOP_TIMEOUT_S, run_worker
from projections.processing import BATCH_SIZE, BackgroundOutbox, BatchProjector
from projections.runner import follow
from projections.sql import is_postgres

console = Console(stderr=True)


class LogLevel(StrEnum):
    critical = "critical"
    error = "error"
    warning = "warning"
    info = "info"
    debug = "debug"


def build_projector(settings: Settings) -> BatchProjector:
    """The projection store, publishing derived events back to the event log; on
    PostgreSQL from a thread of its own while the next batch is applied (SQLite has one
    writer at a time: a publisher holding it while Kafka answers would stall batches)."""
    store = build_projection_store(settings, build_event_log(settings))
    return BackgroundOutbox(store) if is_postgres(store.engine) else store


def process(
    workers_group: Annotated[
        str,
        typer.Option(
            "--workers-group", help="Kafka consumer group: workers in one group share partitions"
        ),
    ] = DEFAULT_GROUP_ID,
    batch_size: Annotated[
        int, typer.Option(min=1, max=100_000, help="most events applied in one transaction")
    ] = BATCH_SIZE,
    batch_wait: Annotated[
        float,
        typer.Option(
            min=0.0,
            max=60.0,
            help="seconds to wait for more events once the projector is free (default: "
            "none; what arrived while the last batch was applied is the next batch)",
        ),
    ] = 0.0,
    child_process: Annotated[
        bool,
        typer.Option(
            "--child-process/--in-process",
            help="apply batches in a child process (its own GIL, away from faust's threads)",
        ),
    ] = True,
    stop_timeout: Annotated[
        float,
        typer.Option(
            min=1.0,
            help="seconds a graceful stop (SIGTERM, Ctrl-C) may take before the worker exits "
            "anyway with code 3, logging its threads' stacks; nothing is lost",
        ),
    ] = DEFAULT_STOP_TIMEOUT_S,
    log_level: Annotated[LogLevel, typer.Option(case_sensitive=False)] = LogLevel.info,
) -> None:
    """Project the event topic into the database until SIGTERM or Ctrl-C.

    Start more workers with the same --workers-group to share the topic's partitions.
    Each batch is one transaction with its checkpoints, so a killed worker loses
    nothing and a restarted one repeats nothing. Without CRM_KAFKA_BOOTSTRAP the same
    projections follow the embedded log in this process.
    """
    settings = Settings()
    if settings.kafka_bootstrap is None:
        _process_embedded(settings, batch_size)
        return
    run_worker(
        settings,
        build_projector,
        group_id=workers_group,
        batch_size=batch_size,
        batch_wait=batch_wait,
        child_process=child_process,
        log_level=log_level.value,
        stop_timeout=stop_timeout,
    )


def _process_embedded(settings: Settings, batch_size: int) -> None:
    event_log = build_event_log(settings)
    store = build_projection_store(settings, event_log)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    console.print(f"following the embedded log in {settings.data_dir} (Ctrl-C to stop)")
    try:
        follow(event_log, store, batch_size=batch_size, should_stop=stop.is_set)
    except KeyboardInterrupt:
        pass
    finally:
        event_log.close()
