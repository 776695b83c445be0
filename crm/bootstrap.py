"""The composition root: the one place that turns settings into adapters."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from functools import cache
from pathlib import Path

from crm.settings import Settings
from events.kafka import KafkaEventLog
from events.log import EventLog
from events.sqlite import SqliteEventLog
from privacy.keystore import SqlKeyStore, load_master_key
from privacy.protect import Protector, SealingEventLog
from projections.sql import create_engine_for
from projections.store import SqlProjectionStore, outbox_publisher


def build_event_log(settings: Settings, *, topic: str | None = None) -> EventLog:
    """The event log, sealing personal data on append (every door goes through here).

    Kafka when ``CRM_KAFKA_BOOTSTRAP`` is set, else the embedded SQLite log. The
    dead-letter topic is opened with ``build_raw_event_log``: it keeps rejected input
    byte for byte.
    """
    return SealingEventLog(build_raw_event_log(settings, topic=topic), build_protector(settings))


def build_protector(settings: Settings) -> Protector:
    """The key store (PostgreSQL schema ``privacy``, else ``CRM_DATA_DIR/privacy.sqlite3``)
    behind sealing, opening and erasure; one per process and configuration."""
    master = settings.master_key.get_secret_value() if settings.master_key else None
    return _protector(settings.database_url, settings.data_dir, settings.privacy_schema, master)


@cache
def _protector(
    database_url: str | None, data_dir: Path, schema: str, master: str | None
) -> Protector:
    engine = create_engine_for(database_url, data_dir / "privacy.sqlite3")
    key = load_master_key(master, data_dir / "master.key")
    return Protector(SqlKeyStore(engine, key, schema=schema))


def build_raw_event_log(settings: Settings, *, topic: str | None = None) -> EventLog:
    """The log as is: for the processor, dead letters and tools reading records."""
    name = topic or settings.topic
    if settings.kafka_bootstrap:
        return KafkaEventLog(
            settings.kafka_bootstrap,
            name,
            partitions=settings.partitions,
            replication_factor=settings.replication_factor,
            client_id=settings.kafka_client_id,
            delivery_timeout_ms=settings.kafka_delivery_timeout_ms,
        )
    return SqliteEventLog(settings.data_dir / "log.sqlite3", name, partitions=settings.partitions)


def build_projection_store(
    settings: Settings,
    event_log: EventLog | None = None,
    *,
    clock: Callable[[], datetime] | None = None,
) -> SqlProjectionStore:
    """PostgreSQL when ``CRM_DATABASE_URL`` is set, else SQLite under ``CRM_DATA_DIR``.

    With ``event_log``, derived events go back to it and dead letters to the
    dead-letter topic; tables are created if missing. ``clock`` is the store's "now"
    (default: the wall clock), e.g. a virtual clock for the demo.
    """
    engine = create_engine_for(settings.database_url, settings.data_dir / "projections.sqlite3")
    publish = None
    if event_log is not None:
        deadletters = build_raw_event_log(settings, topic=settings.deadletter_topic)
        publish = outbox_publisher(event_log, deadletters)
    store = SqlProjectionStore(
        engine,
        schema=settings.projection_schema,
        shared_threshold=settings.shared_identifier_threshold,
        publish=publish,
        clock=clock or _utcnow,
        protector=build_protector(settings),
        async_commit=settings.projection_async_commit,
    )
    store.create()
    return store


def _utcnow() -> datetime:
    return datetime.now(UTC)
