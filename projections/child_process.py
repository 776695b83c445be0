"""A ``BatchProjector`` that runs another one in a child process.

faust's consumer works in threads of the worker's process (its event loop and
aiokafka's), and they share Python's GIL with the projector's thread: a live batch took
about twice as long as the same batch applied alone. In a child process the projector
has an interpreter, a GIL and, on a multi-core machine, a core of its own; the worker
sends it each batch (pickled records) and waits. After every ~5,000 records the child
hands the memory its batches freed back to the system (``projections.heap``).

The child ignores SIGINT and SIGTERM: the worker stops it after its graceful stop, so a
batch in progress ends with its commit. A worker killed outright (SIGKILL, the OOM
killer) cannot stop it, so the child watches its parent and exits within a second of
losing it (a batch in progress rolls back) instead of lingering with its connections.
If the child dies (killed, out of memory), the call fails, its transaction has rolled
back, and the next call starts a new child (the worker retries failed calls), which
resumes from the checkpoints.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any, Generic, TypeVar

from events.log import LogRecord
from projections.heap import HeapTrimmer
from projections.processing import BatchProjector

log = logging.getLogger(__name__)

S = TypeVar("S")
T = TypeVar("T")

_projector: BatchProjector | None = None  # in the child
_trimmer: HeapTrimmer | None = None  # in the child: memory freed by big batches goes back
PARENT_CHECK_S = 0.5


def _start(
    factory: Callable[[Any], BatchProjector], settings: Any, log_level: int, parent: int
) -> None:
    """``parent``: the worker's pid, as the worker saw it (a worker killed while its child
    was starting left ``os.getppid()`` already 1 here, and the child waited forever)."""
    global _projector, _trimmer
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    threading.Thread(target=_exit_without, args=(parent,), daemon=True).start()
    logging.basicConfig(
        level=log_level, format="[%(asctime)s] [%(process)d] [%(levelname)s] %(message)s"
    )
    _projector = factory(settings)
    _trimmer = HeapTrimmer()


def _exit_without(parent: int) -> None:
    """Exit once ``parent`` is gone: an orphan is re-parented, so its parent pid changes."""
    while os.getppid() == parent:
        time.sleep(PARENT_CHECK_S)
    log.warning("the worker (pid %d) is gone: the projector child exits", parent)
    os._exit(1)


def _child() -> BatchProjector:
    assert _projector is not None, "the child process was not started with a projector"
    return _projector


def _checkpoints(topic: str) -> dict[int, int]:
    return _child().checkpoints(topic)


def _apply_batch(topic: str, records: Sequence[LogRecord]) -> int:
    applied = _child().apply_batch(topic, records)
    if _trimmer is not None:
        _trimmer.applied(len(records))
    return applied


def _publish_outbox() -> int:
    return _child().publish_outbox()


def _close_projector() -> None:
    close = getattr(_child(), "close", None)
    if close is not None:
        close()


def _pid() -> int:
    return os.getpid()


class ChildProcessProjector(Generic[S]):
    """``factory(settings)`` built and called in one child process (spawned, so
    ``factory`` and ``settings`` must pickle: a module-level function and a settings
    object)."""

    def __init__(
        self, factory: Callable[[S], BatchProjector], settings: S, log_level: int = logging.INFO
    ) -> None:
        self._args = (factory, settings, log_level, os.getpid())
        self._pool = self._new_pool()
        try:  # build the projector now (it creates its tables), as in-process
            self._pool.submit(_pid).result()
        except BrokenProcessPool as exc:
            self._pool.shutdown(wait=False, cancel_futures=True)
            raise RuntimeError(
                "the projector's child process failed to start: its error is logged above "
                "(Exception in initializer)"
            ) from exc

    def _new_pool(self) -> ProcessPoolExecutor:
        return ProcessPoolExecutor(
            max_workers=1,
            mp_context=multiprocessing.get_context("spawn"),
            initializer=_start,
            initargs=self._args,
        )

    def _call(self, fn: Callable[..., T], *args: Any) -> T:
        try:
            return self._pool.submit(fn, *args).result()
        except BrokenProcessPool:
            log.error("the projector's child process died; the next call starts a new one")
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = self._new_pool()
            raise

    def checkpoints(self, topic: str) -> dict[int, int]:
        return self._call(_checkpoints, topic)

    def apply_batch(self, topic: str, records: Sequence[LogRecord]) -> int:
        return self._call(_apply_batch, topic, list(records))

    def publish_outbox(self) -> int:
        return self._call(_publish_outbox)

    def child_pid(self) -> int:
        """The child's process id (starting it if needed)."""
        return self._call(_pid)

    def close(self) -> None:
        """Stop the child after the call in progress (closing its projector first, if it
        has a ``close``, e.g. a ``BackgroundOutbox`` publishing what is left)."""
        try:
            self._call(_close_projector)
        except Exception as exc:  # a dead child: nothing to close
            log.warning("closing the projector failed (%s)", type(exc).__qualname__)
        self._pool.shutdown(wait=True, cancel_futures=True)
