"""The worker's batching (``projections.faust_app.Batches``): a batch is what arrived while
the last one was applied, in log order per partition, each record once, and bounded."""

from __future__ import annotations

import asyncio

import pytest

from events.log import LogRecord
from projections.faust_app import Batches


def _record(partition: int, offset: int) -> LogRecord:
    return LogRecord("t", partition, offset, 0, None, b"{}")


def _positions(batch: list[LogRecord]) -> list[tuple[int, int]]:
    return [(r.partition, r.offset) for r in batch]


def test_a_batch_is_everything_that_arrived_while_the_last_was_applied() -> None:
    async def scenario() -> list[list[tuple[int, int]]]:
        batches = Batches(max_size=1_000)
        took: asyncio.Queue[list[tuple[int, int]]] = asyncio.Queue()
        applied: asyncio.Queue[None] = asyncio.Queue()

        async def projector() -> None:
            while True:
                await took.put(_positions(await batches.take()))
                await applied.get()  # "applying" the batch until the test says so

        task = asyncio.ensure_future(projector())
        seen = []
        await batches.put(_record(0, 0))
        seen.append(await asyncio.wait_for(took.get(), 5))  # at once, alone: no timer
        for offset in range(1, 6):  # arrive while the first batch is applied
            await batches.put(_record(0, offset))
        applied.put_nowait(None)
        seen.append(await asyncio.wait_for(took.get(), 5))
        await batches.put(_record(0, 6))
        applied.put_nowait(None)
        seen.append(await asyncio.wait_for(took.get(), 5))
        task.cancel()
        return seen

    assert asyncio.run(scenario()) == [[(0, 0)], [(0, o) for o in range(1, 6)], [(0, 6)]]


def test_take_orders_by_partition_and_offset_and_drops_redeliveries() -> None:
    async def scenario() -> list[tuple[int, int]]:
        batches = Batches(max_size=100)
        # a partition sought back to its checkpoint delivers 5..6 again
        for partition, offset in [(1, 5), (0, 9), (1, 6), (1, 7), (1, 5), (1, 6), (0, 8)]:
            await batches.put(_record(partition, offset))
        return _positions(await batches.take())

    assert asyncio.run(scenario()) == [(0, 8), (0, 9), (1, 5), (1, 6), (1, 7)]


def test_put_waits_while_a_full_batch_is_waiting() -> None:
    async def scenario() -> tuple[int, bool, list[int]]:
        batches = Batches(max_size=3)
        for offset in range(3):
            await batches.put(_record(0, offset))
        blocked = asyncio.ensure_future(batches.put(_record(0, 3)))
        await asyncio.sleep(0.05)
        waiting, was_blocked = len(batches), not blocked.done()
        first = await batches.take()
        await asyncio.wait_for(blocked, 5)
        second = await batches.take()
        return waiting, was_blocked, [r.offset for r in first + second]

    waiting, was_blocked, offsets = asyncio.run(scenario())
    assert waiting == 3
    assert was_blocked
    assert offsets == [0, 1, 2, 3]


@pytest.mark.parametrize("linger", [0.0, 0.5])
def test_linger_lets_more_records_join_once_the_projector_is_free(linger: float) -> None:
    async def scenario() -> int:
        batches = Batches(max_size=100, linger=linger)
        await batches.put(_record(0, 0))
        taking = asyncio.ensure_future(batches.take())
        await asyncio.sleep(0.02)
        for offset in range(1, 4):
            await batches.put(_record(0, offset))
        return len(await taking)

    assert asyncio.run(scenario()) == (4 if linger else 1)
