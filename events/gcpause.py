"""Cyclic garbage collection paused while a batch is applied.

A batch allocates hundreds of thousands of objects (decoded events, states, rows) that
all stay alive until it ends, so CPython's collector, triggered every 700 allocations,
walks a growing heap again and again and frees nothing: a third of the projection's
time on 40,000 events. Reference counting frees the batch's objects when it ends; one
young-generation collection afterwards picks up any cycles among them, and full
collections still happen on the usual thresholds. Where blocks overlap without end (a
busy gateway's concurrent requests), a block ending collects the young generations if
the last collection is over ``YOUNG_EVERY_S`` old, and everything every ``FULL_EVERY_S``,
so memory stays bounded.
"""

from __future__ import annotations

import gc
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

YOUNG_EVERY_S = 1.0
FULL_EVERY_S = 60.0

_lock = threading.Lock()
_paused = 0
_resume = False  # whether the collector was on when the outermost pause began
_last_young = _last_full = time.monotonic()
_growing = 0  # growing_heap blocks open: the blocks inside them leave collecting to them


@contextmanager
def collection_paused() -> Iterator[None]:
    """Pause the cyclic collector for the block (nested and concurrent uses count)."""
    global _paused, _resume, _last_young, _last_full
    with _lock:
        if _paused == 0:
            _resume = gc.isenabled()
            gc.disable()
        _paused += 1
    try:
        yield
    finally:
        now = time.monotonic()
        with _lock:
            _paused -= 1
            resume = _paused == 0 and _resume
            if resume:
                gc.enable()
            generation = None
            if resume or (_resume and now - _last_young >= YOUNG_EVERY_S):
                generation, _last_young = 1, now
                if now - _last_full >= FULL_EVERY_S and _paused > 0:
                    generation, _last_full = 2, now
        if generation is not None and not _growing:
            gc.collect(generation)


@contextmanager
def growing_heap() -> Iterator[Callable[[], None]]:
    """For a block whose objects pile up and live until it ends (a rebuild's retained
    customers: millions of objects): the collector is paused as by
    ``collection_paused``, and the function it yields, called between units of work,
    freezes what is alive, so that no collection walks it again. Every full collection
    otherwise walked the whole pile (due each time it grew by a quarter: 15 of them took
    18.6 and 20.0 s of two rebuilds of 1,000,000 events, in 192.8 and 200.5 s).

    Nothing is collected inside the block either, not even the young generations when
    a ``collection_paused`` inside it ends: that walked every object the unit of work
    had added to the pile, only to find the few cycles among its garbage (a rebuild of
    1,000,000 events: 118 young collections, 7.5 s, 25,804 objects freed in all; now 20,
    0.4 s, those outside the block). Those cycles are frozen with the pile instead. The
    block's end unfreezes everything (what ``freeze_heap`` froze too: CPython has no
    partial thaw), which is reference-counted as ever and collected when next due."""
    global _growing
    with collection_paused():
        with _lock:
            _growing += 1
        try:
            yield gc.freeze
        finally:
            with _lock:
                _growing -= 1
            gc.unfreeze()


def freeze_heap() -> None:
    """Move every object alive now out of the cyclic collector's reach (``gc.freeze``).

    For a process's start-up heap (modules, routes, models, pools): a full collection
    walked it all, ~100 ms for a read-API worker's 211,000 objects on a 2-core machine,
    a stall for whatever was in flight; frozen, it costs nothing. Reference counting
    still frees frozen objects."""
    gc.collect()
    gc.freeze()
