"""``HeapTrimmer`` hands freed memory back once enough records went through, and glibc's
``malloc_trim`` returns pages that ``free`` alone keeps."""

from __future__ import annotations

import platform

from projections.heap import HeapTrimmer, malloc_trim

GLIBC = platform.system() == "Linux" and platform.libc_ver()[0] == "glibc"


def _rss_mib() -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS in /proc/self/status")


def test_it_trims_once_enough_records_went_through_and_counts_again() -> None:
    calls: list[int] = []

    def trim(pad: int) -> int:
        calls.append(pad)
        return 1

    trimmer = HeapTrimmer(every=1_000, trim=trim)
    assert [trimmer.applied(n) for n in (400, 500, 100, 999, 1, 5_000)] == [
        False,
        False,
        True,  # 1,000 reached
        False,
        True,
        True,  # one big batch: one trim, not five
    ]
    assert calls == [0, 0, 0]


def test_without_malloc_trim_it_only_counts() -> None:
    trimmer = HeapTrimmer(every=1)
    trimmer._trim = None
    assert trimmer.applied(10_000) is False


def test_malloc_trim_returns_memory_free_keeps() -> None:
    trim = malloc_trim()
    if not GLIBC:  # no malloc_trim (musl, macOS): the trimmer only counts
        assert trim is None
        return
    assert trim is not None
    blocks = [bytes(2_000) + bytes([i % 256]) for i in range(100_000)]  # ~200 MiB, malloc'd
    pin = bytes(2_000) + b"pin"  # allocated above them: the heap's top stays in use
    before_free = _rss_mib()
    del blocks
    freed = _rss_mib()
    trim(0)
    trimmed = _rss_mib()
    assert pin
    assert freed > before_free - 50, (before_free, freed)  # free() alone kept most pages
    assert trimmed < freed - 150, (freed, trimmed)  # malloc_trim returned them
