"""``ChildProcessProjector`` runs a projector in a child process: calls and records go
there and back intact, the child outlives SIGTERM, a dead child is replaced, and a child
whose worker was killed exits."""

from __future__ import annotations

import multiprocessing
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path

import pytest

from events.log import LogRecord
from projections.child_process import ChildProcessProjector, _start


class CountingProjector:
    """Remembers, per partition, the offset after the last record applied (in memory)."""

    def __init__(self, start: dict[int, int]) -> None:
        self.next_offsets = dict(start)
        self.published = 0

    def checkpoints(self, topic: str) -> dict[int, int]:
        return dict(self.next_offsets)

    def apply_batch(self, topic: str, records: Sequence[LogRecord]) -> int:
        for r in records:
            assert r.topic == topic and r.value == f"v{r.offset}".encode()
            self.next_offsets[r.partition] = r.offset + 1
        self.published += len(records)
        return len(records)

    def publish_outbox(self) -> int:
        published, self.published = self.published, 0
        return published


def counting(start: dict[int, int]) -> CountingProjector:
    return CountingProjector(start)


def failing(message: str) -> CountingProjector:
    raise RuntimeError(message)  # e.g. the database refused the projector's tables


def _records(partition: int, offsets: range) -> list[LogRecord]:
    return [
        LogRecord("t", partition, o, 0, b"k", f"v{o}".encode(), (("h", b"x"),)) for o in offsets
    ]


@pytest.fixture
def projector() -> Iterator[ChildProcessProjector[dict[int, int]]]:
    projector = ChildProcessProjector(counting, {5: 7})
    yield projector
    projector.close()


def test_calls_run_in_a_child_built_from_the_factory(
    projector: ChildProcessProjector[dict[int, int]],
) -> None:
    child = projector.child_pid()
    assert child != os.getpid()
    assert projector.checkpoints("t") == {5: 7}  # the settings reached the factory
    assert projector.apply_batch("t", _records(0, range(3))) == 3
    assert projector.apply_batch("t", _records(2, range(10, 15))) == 5
    assert projector.checkpoints("t") == {5: 7, 0: 3, 2: 15}
    assert projector.publish_outbox() == 8
    assert projector.child_pid() == child  # one child for every call


def test_the_child_ignores_sigterm(projector: ChildProcessProjector[dict[int, int]]) -> None:
    """A process manager signalling the whole group must not kill a batch midway: the
    worker stops the child itself after its graceful stop."""
    child = projector.child_pid()
    os.kill(child, signal.SIGTERM)
    os.kill(child, signal.SIGINT)
    assert projector.apply_batch("t", _records(1, range(2))) == 2
    assert projector.child_pid() == child


def test_a_dead_child_fails_one_call_and_is_replaced(
    projector: ChildProcessProjector[dict[int, int]],
) -> None:
    child = projector.child_pid()
    projector.apply_batch("t", _records(0, range(4)))
    os.kill(child, signal.SIGKILL)
    with pytest.raises(BrokenProcessPool):
        projector.apply_batch("t", _records(0, range(4, 6)))
    assert projector.checkpoints("t") == {5: 7}  # a new child, built afresh
    assert projector.child_pid() != child


def test_a_projector_that_cannot_be_built_fails_the_start_with_its_error_logged(
    capfd: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(RuntimeError, match="child process failed to start") as failed:
        ChildProcessProjector(failing, "no tables today")
    assert isinstance(failed.value.__cause__, BrokenProcessPool)
    assert "no tables today" in capfd.readouterr().err  # the child's own traceback


def test_the_child_exits_when_its_worker_is_killed(tmp_path: Path) -> None:
    """SIGKILL (the OOM killer) gives the worker no chance to stop its child: the child
    must notice and go, not linger holding memory and database connections."""
    script = (
        "import sys, time\n"
        "from projections.child_process import ChildProcessProjector\n"
        "from tests.unit.test_child_process import counting\n"
        "projector = ChildProcessProjector(counting, {})\n"
        "print(projector.child_pid(), flush=True)\n"
        "time.sleep(600)\n"
    )
    repo = Path(__file__).resolve().parents[2]
    worker = subprocess.Popen(
        [sys.executable, "-c", script], cwd=repo, stdout=subprocess.PIPE, text=True
    )
    try:
        assert worker.stdout is not None
        child = int(worker.stdout.readline())
        os.kill(child, 0)  # alive
        worker.kill()
        worker.wait()
        deadline = time.monotonic() + 10
        while _alive(child):
            assert time.monotonic() < deadline, f"child {child} outlived its worker by 10 s"
            time.sleep(0.1)
    finally:
        worker.kill()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie (exited, not reaped yet) is gone too
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except FileNotFoundError:
        return False


def _start_then_wait(parent: int) -> None:
    _start(counting, {}, 20, parent)
    time.sleep(30)


def test_a_child_whose_worker_died_before_it_started_exits_at_once() -> None:
    gone = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        check=True,
    )
    child = multiprocessing.get_context("spawn").Process(
        target=_start_then_wait, args=(int(gone.stdout),)
    )
    child.start()
    child.join(15)
    alive = child.is_alive()
    if alive:
        child.kill()
    assert not alive and child.exitcode == 1  # did not wait 30 s for a parent long gone
