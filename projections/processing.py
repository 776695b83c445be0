"""The port a stream processor drives: apply batches of log records exactly once.

The processor (``projections.faust_app``) knows Kafka; the projector knows the database.
Exactly-once *effect* rests on the projector alone: it stores the next offset to apply
per partition in the same transaction as the rows it derives, and skips records below
it, so the processor may deliver any record any number of times (at-least-once).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Protocol, runtime_checkable

from events.log import LogRecord


@runtime_checkable
class BatchProjector(Protocol):
    """Applies log records to projections, one transaction per batch."""

    def checkpoints(self, topic: str) -> dict[int, int]:
        """Next offset to apply per partition (partitions never applied are absent)."""
        ...

    def apply_batch(self, topic: str, records: Sequence[LogRecord]) -> int:
        """Apply records in ONE database transaction together with the new checkpoints.

        Records at offsets below the stored checkpoint are skipped, so redelivery is
        safe. Blocking; returns how many records were applied (not skipped). Derived
        events go to an outbox table in the same transaction.
        """
        ...

    def publish_outbox(self) -> int:
        """Append pending derived events to the log (blocking); returns how many."""
        ...


class ProcessorSettings(Protocol):
    """What a stream processor reads from settings (``crm.settings.Settings`` fits)."""

    @property
    def kafka_bootstrap(self) -> str | None: ...

    @property
    def topic(self) -> str: ...

    @property
    def data_dir(self) -> Path: ...
