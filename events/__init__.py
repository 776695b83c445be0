"""The event log: a port (:class:`EventLog`) and its Kafka and embedded SQLite adapters."""

from events.codec import decode_event, encode_event, partition_for, partition_key
from events.log import (
    EventLog,
    LogConfigError,
    LogError,
    LogRecord,
    LogUnavailableError,
    OutgoingRecord,
    Position,
)

__all__ = [
    "EventLog",
    "LogConfigError",
    "LogError",
    "LogRecord",
    "LogUnavailableError",
    "OutgoingRecord",
    "Position",
    "decode_event",
    "encode_event",
    "partition_for",
    "partition_key",
]
