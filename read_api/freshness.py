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
from typing import Protocol

from read_api.models import FreshnessPublic

POLL_S = 0.02
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


class CheckpointNotices(Protocol):
    async def next(self, poll_s: float) -> None:
        """Return when the checkpoints may have moved since the last call."""


class Polling:
    """No notices: the checkpoints may have moved after every ``poll_s``."""

    async def next(self, poll_s: float) -> None:
        await asyncio.sleep(poll_s)


class PositionWatch:
    """One checkpoint poll per process, shared by every request waiting for positions.

    While anyone waits, a single task reads the checkpoints and wakes the waiters, then
    reads again on the next notice that they moved (``notices``, e.g.
    ``read_api.notices.PostgresCheckpointNotices``) or, without notices, after
    ``poll_s``; 100 waiting requests cost one query per read, not 100. Checkpoints only
    move forward, so a position reached in an earlier read is still reached.
    """

    def __init__(
        self,
        read_positions: Callable[[], Mapping[int, int]],
        poll_s: float = POLL_S,
        notices: CheckpointNotices | None = None,
    ) -> None:
        self._read = read_positions
        self._poll_s = poll_s
        self._notices = notices or Polling()
        self._latest: Mapping[int, int] = {}
        self._error: Exception | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._changed = asyncio.Condition()
        self._waiters = 0
        self._task: asyncio.Task[None] | None = None

    async def wait(self, wanted: Mapping[int, int], wait_ms: int) -> bool:
        """Until ``wanted`` is reached (True) or ``wait_ms`` passed (False)."""
        if reached(self._latest, wanted):
            return True
        deadline = time.monotonic() + wait_ms / 1000
        if self._loop is not asyncio.get_running_loop():  # e.g. a new test client's loop
            self._loop, self._changed, self._task = (
                asyncio.get_running_loop(),
                asyncio.Condition(),
                None,
            )
            self._waiters = 0
        self._waiters += 1
        try:
            if self._task is None:
                self._error = None
                self._task = asyncio.create_task(self._poll())
            async with self._changed:
                while True:
                    if self._error is not None:
                        raise self._error
                    if reached(self._latest, wanted):
                        return True
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        return False
                    try:
                        await asyncio.wait_for(self._changed.wait(), remaining)
                    except TimeoutError:
                        return reached(self._latest, wanted)
        finally:
            self._waiters -= 1

    async def _poll(self) -> None:
        try:
            while self._waiters:
                try:
                    latest, error = await asyncio.to_thread(self._read), None
                except Exception as exc:  # every waiter gets it; the next poll tries again
                    latest, error = self._latest, exc
                async with self._changed:
                    self._latest, self._error = latest, error
                    self._changed.notify_all()
                await self._notices.next(self._poll_s)
        finally:
            self._task = None


def freshness(
    topic: str, positions: Mapping[int, int], wanted: Mapping[int, int]
) -> FreshnessPublic:
    return FreshnessPublic(
        topic=topic,
        positions={str(p): o for p, o in sorted(positions.items())},
        caught_up=reached(positions, wanted),
    )
