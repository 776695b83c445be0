import gc
import threading
import weakref
from collections.abc import Iterator

import pytest

from events import gcpause
from events.gcpause import collection_paused


@pytest.fixture(autouse=True)
def _collector_on() -> Iterator[None]:
    gc.enable()
    yield
    gc.enable()


def test_paused_inside_and_back_on_after() -> None:
    with collection_paused():
        assert not gc.isenabled()
    assert gc.isenabled()


def test_nested_pauses_resume_only_at_the_outermost() -> None:
    with collection_paused():
        with collection_paused():
            assert not gc.isenabled()
        assert not gc.isenabled()
    assert gc.isenabled()


def test_back_on_after_an_exception() -> None:
    with pytest.raises(RuntimeError), collection_paused():
        raise RuntimeError("batch failed")
    assert gc.isenabled()


def test_a_collector_switched_off_by_the_application_stays_off() -> None:
    gc.disable()
    with collection_paused():
        pass
    assert not gc.isenabled()


def test_concurrent_pauses_resume_when_the_last_one_ends() -> None:
    first_inside, second_done = threading.Event(), threading.Event()
    seen: list[bool] = []

    def other() -> None:
        with collection_paused():
            first_inside.wait(5)
        second_done.set()

    with collection_paused():
        thread = threading.Thread(target=other)
        thread.start()
        first_inside.set()
        second_done.wait(5)
        seen.append(gc.isenabled())  # the other pause ended, ours has not
    thread.join(5)
    assert seen == [False]
    assert gc.isenabled()


def test_cycles_made_during_a_pause_are_collected_after_it() -> None:
    class Node:
        other: "Node"

    with collection_paused():
        a, b = Node(), Node()
        a.other, b.other = b, a
        ref = weakref.ref(a)
        del a, b
        assert ref() is not None  # no collector while paused
    assert ref() is None


def test_overlapping_pauses_still_collect_now_and_then(monkeypatch: pytest.MonkeyPatch) -> None:
    """A busy gateway's requests overlap without end: blocks ending collect anyway."""
    monkeypatch.setattr(gcpause, "YOUNG_EVERY_S", 0.0)

    class Node:
        other: "Node"

    with collection_paused():  # a long request
        with collection_paused():  # a short one that ends meanwhile
            a, b = Node(), Node()
            a.other, b.other = b, a
            ref = weakref.ref(a)
            del a, b
        assert not gc.isenabled()
        assert ref() is None


def test_a_growing_heap_is_frozen_as_it_settles_and_thawed_at_the_end(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(gcpause, "YOUNG_EVERY_S", 0.0)  # inner blocks would collect at once

    class Node:
        other: "Node"

    with gcpause.growing_heap() as settle:
        assert not gc.isenabled()
        with collection_paused():  # a batch of a rebuild
            piled = [[i] for i in range(1_000)]  # what a rebuild keeps from a batch
            a, b = Node(), Node()
            a.other, b.other = b, a  # and a batch's cyclic garbage
            ref = weakref.ref(a)
            del a, b
        assert ref() is not None  # the batch's end collected nothing: no walk of the pile
        before = gc.get_freeze_count()
        settle()
        assert gc.get_freeze_count() >= before + len(piled)  # no collection walks them again
        gc.collect()
        assert ref() is not None  # frozen with the pile
    assert gc.get_freeze_count() == 0
    assert gc.isenabled()
    gc.collect()
    assert ref() is None  # thawed, and collected when next due
