"""Read-your-writes: ``min_position=P:O,P:O`` makes a request wait (up to ``wait_ms``)
until the projections' checkpoints reach those log positions.

A writer that knows where its events landed (the gateway answers with partitions and
offsets) passes them; the read then includes those events, or says it does not
(``freshness.caught_up = false``) and answers with the data as it is, rather than 503:
a slightly stale view is more useful to a call-centre screen than no view.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping

from read_api.models import FreshnessPublic

POLL_S = 0.05
MAX_WAIT_MS = 5_000


class InvalidPositionError(ValueError):
    pass


def parse_positions(text: str) -> dict[int, int]:
    """``"0:120,3:7"`` -> ``{0: 120, 3: 7}``; ``InvalidPositionError`` if malformed."""
    wanted: dict[int, int] = {}
    for item in text.split(","):
        partition, sep, offset = item.strip().partition(":")
        if not sep or not partition.isdigit() or not offset.isdigit():
            raise InvalidPositionError(
                "min_position must be PARTITION:OFFSET pairs separated by commas, e.g. 0:120,3:7"
            )
        p, o = int(partition), int(offset)
        wanted[p] = max(o, wanted.get(p, 0))
    return wanted


def reached(positions: Mapping[int, int], wanted: Mapping[int, int]) -> bool:
    """Reached when each partition's checkpoint (next offset) is at least the one wanted.

    ``wanted`` is in the unit of ``freshness.positions``: pass ``offset + 1`` to include
    the event at ``offset``, or echo a previous answer's positions."""
    return all(positions.get(p, 0) >= o for p, o in wanted.items())


async def wait_for(
    read_positions: Callable[[], Mapping[int, int]], wanted: Mapping[int, int], wait_ms: int
) -> bool:
    """Poll the checkpoints every 50 ms until ``wanted`` is reached or ``wait_ms`` passed."""
    deadline = time.monotonic() + wait_ms / 1000
    while True:
        if reached(await asyncio.to_thread(read_positions), wanted):
            return True
        if time.monotonic() >= deadline:
            return False
        await asyncio.sleep(min(POLL_S, max(0.0, deadline - time.monotonic())))


def freshness(
    topic: str, positions: Mapping[int, int], wanted: Mapping[int, int]
) -> FreshnessPublic:
    return FreshnessPublic(
        topic=topic,
        positions={str(p): o for p, o in sorted(positions.items())},
        caught_up=reached(positions, wanted),
    )
