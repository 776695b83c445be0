"""The composition root: the one place that turns settings into adapters."""

from __future__ import annotations

from crm.settings import Settings
from events.kafka import KafkaEventLog
from events.log import EventLog
from events.sqlite import SqliteEventLog


def build_event_log(settings: Settings, *, topic: str | None = None) -> EventLog:
    """Kafka when ``CRM_KAFKA_BOOTSTRAP`` is set, else the embedded SQLite log."""
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
