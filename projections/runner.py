"""The simple processor for the embedded log: read from the checkpoints, apply, repeat.

The same projections as the Kafka processor, run in one process without Kafka.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable

from events.log import EventLog
from projections.processing import BATCH_SIZE, BatchProjector


def catch_up(
    event_log: EventLog,
    projector: BatchProjector,
    *,
    batch_size: int = BATCH_SIZE,
    on_batch: Callable[[int], None] | None = None,
) -> int:
    """Apply everything up to the log's current end; returns records applied.

    Derived events published on the way (identity merges) land after the end seen at
    the start and are picked up by the next call.
    """
    applied = 0
    records = event_log.read(from_offsets=projector.checkpoints(event_log.topic))
    while batch := list(itertools.islice(records, batch_size)):
        applied += projector.apply_batch(event_log.topic, batch)
        projector.publish_outbox()
        if on_batch is not None:
            on_batch(len(batch))
    return applied


def follow(
    event_log: EventLog,
    projector: BatchProjector,
    *,
    batch_size: int = 2_000,
    idle_sleep: float = 0.5,
    should_stop: Callable[[], bool] = lambda: False,
) -> None:
    """Keep applying new records until ``should_stop()`` says so."""
    while not should_stop():
        if catch_up(event_log, projector, batch_size=batch_size) == 0:
            time.sleep(idle_sleep)
