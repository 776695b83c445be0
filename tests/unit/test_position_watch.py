"""The shared checkpoint poll behind ``min_position``/``wait_ms``."""

import asyncio
import threading

import pytest
import sqlalchemy as sa

from read_api.freshness import PositionWatch
from read_api.notices import PostgresCheckpointNotices


class Checkpoints:
    """Checkpoints a test moves forward; counts the reads."""

    def __init__(self) -> None:
        self.positions: dict[int, int] = {0: 0}
        self.reads = 0
        self.fail = False
        self._lock = threading.Lock()

    def read(self) -> dict[int, int]:
        with self._lock:
            self.reads += 1
            if self.fail:
                raise RuntimeError("database went away")
            return dict(self.positions)


def test_many_waiters_share_one_poll_and_all_wake_when_reached() -> None:
    checkpoints = Checkpoints()
    watch = PositionWatch(checkpoints.read, poll_s=0.01)

    async def scenario() -> list[bool]:
        waiters = [asyncio.create_task(watch.wait({0: 10 + i % 3}, 2_000)) for i in range(100)]
        await asyncio.sleep(0.1)
        checkpoints.positions[0] = 12
        return await asyncio.gather(*waiters)

    assert asyncio.run(scenario()) == [True] * 100
    # ~10 polls in 0.1 s for 100 waiters, not one query per waiter per poll
    assert checkpoints.reads < 40


def test_a_position_not_reached_in_time_answers_false() -> None:
    checkpoints = Checkpoints()
    watch = PositionWatch(checkpoints.read, poll_s=0.01)
    assert asyncio.run(watch.wait({0: 5}, 50)) is False
    assert asyncio.run(watch.wait({0: 5}, 0)) is False


def test_a_position_already_seen_answers_without_a_query() -> None:
    checkpoints = Checkpoints()
    checkpoints.positions = {0: 7, 1: 3}
    watch = PositionWatch(checkpoints.read, poll_s=0.01)

    async def scenario() -> tuple[bool, int, bool]:
        first = await watch.wait({0: 7, 1: 3}, 1_000)
        reads = checkpoints.reads
        again = await watch.wait({0: 6}, 1_000)
        return first, reads, again and checkpoints.reads == reads

    first, reads, again_without_reading = asyncio.run(scenario())
    assert first and reads >= 1 and again_without_reading


def test_a_partition_never_checkpointed_counts_as_zero() -> None:
    checkpoints = Checkpoints()
    watch = PositionWatch(checkpoints.read, poll_s=0.01)
    assert asyncio.run(watch.wait({4: 0}, 100)) is True
    assert asyncio.run(watch.wait({4: 1}, 30)) is False


def test_a_failing_read_reaches_the_waiters_and_the_next_wait_reads_again() -> None:
    checkpoints = Checkpoints()
    checkpoints.fail = True
    watch = PositionWatch(checkpoints.read, poll_s=0.01)
    with pytest.raises(RuntimeError, match="database went away"):
        asyncio.run(watch.wait({0: 1}, 1_000))
    checkpoints.fail = False
    checkpoints.positions[0] = 1
    assert asyncio.run(watch.wait({0: 1}, 1_000)) is True


def test_the_poll_stops_when_nobody_waits() -> None:
    checkpoints = Checkpoints()
    watch = PositionWatch(checkpoints.read, poll_s=0.01)

    async def scenario() -> int:
        await watch.wait({0: 1}, 50)
        await asyncio.sleep(0.05)
        after = checkpoints.reads
        await asyncio.sleep(0.1)
        return checkpoints.reads - after

    assert asyncio.run(scenario()) == 0


class Notices:
    """Notices a test sends; ``next`` never returns on its own."""

    def __init__(self) -> None:
        self.event = asyncio.Event()

    async def next(self, poll_s: float) -> None:
        await self.event.wait()
        self.event.clear()


def test_with_notices_the_checkpoints_are_read_on_each_notice_not_polled() -> None:
    checkpoints = Checkpoints()
    notices = Notices()
    watch = PositionWatch(checkpoints.read, poll_s=0.001, notices=notices)

    async def scenario() -> tuple[int, bool, int]:
        waiting = asyncio.create_task(watch.wait({0: 3}, 2_000))
        await asyncio.sleep(0.1)
        quiet = checkpoints.reads  # one read when the wait began, none since
        checkpoints.positions[0] = 3
        await asyncio.sleep(0.05)
        assert not waiting.done()  # moved, but nobody said so yet
        notices.event.set()
        return quiet, await waiting, checkpoints.reads

    quiet, reached, reads = asyncio.run(scenario())
    assert quiet == 1 and reached and reads == 2


def test_unreachable_notices_fall_back_to_polling(caplog: pytest.LogCaptureFixture) -> None:
    """Nothing listens on port 9 of loopback: the watch says so and polls."""
    engine = sa.create_engine("postgresql+psycopg2://crm:secret-password@127.0.0.1:9/crm")
    notices = PostgresCheckpointNotices(engine, "crm")
    checkpoints = Checkpoints()
    watch = PositionWatch(checkpoints.read, poll_s=0.01, notices=notices)

    async def scenario() -> bool:
        waiting = asyncio.create_task(watch.wait({0: 2}, 5_000))
        await asyncio.sleep(0.1)
        checkpoints.positions[0] = 2
        return await waiting

    assert asyncio.run(scenario()) is True
    assert not notices.listening and checkpoints.reads > 2
    assert "cannot listen for checkpoint notices (OperationalError)" in caplog.text
    assert "secret-password" not in caplog.text
