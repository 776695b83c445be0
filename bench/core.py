"""What every benchmark section shares: the run context and the figure it reports.

A section is a function ``run(ctx: BenchContext) -> list[Figure]``. Each figure carries
its baseline measured in the same run (a raw Kafka producer, a raw COPY, a peer
library), so the ratio holds even on a noisy machine. Sections create their own topics
and schemas (named with ``ctx.name(...)``) and clean up what they can.
"""

from __future__ import annotations

import os
import platform
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Sizes:
    """How much each section does; ``quick()`` keeps CI fast, ``full()`` is the issue's."""

    events: int
    customers: int
    replay_events: int
    ingest_events: int
    freshness_seconds: float
    load_seconds: float
    peer_events: int

    @classmethod
    def full(cls) -> Sizes:
        return cls(200_000, 20_000, 1_000_000, 100_000, 30.0, 20.0, 50_000)

    @classmethod
    def quick(cls) -> Sizes:
        return cls(5_000, 500, 10_000, 3_000, 3.0, 3.0, 2_000)


@dataclass(frozen=True)
class Figure:
    """One measured figure, with the baseline it is compared to (same run, same machine)."""

    section: str
    name: str
    value: float
    unit: str
    baseline: float | None = None
    baseline_name: str | None = None
    target: str | None = None
    notes: str = ""

    @property
    def ratio(self) -> float | None:
        if self.baseline is None or self.baseline == 0:
            return None
        return self.value / self.baseline

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "ratio": self.ratio}


def new_run_id() -> str:
    return uuid.uuid4().hex[:6]


@dataclass
class BenchContext:
    kafka_bootstrap: str
    database_url: str
    sizes: Sizes
    workdir: Path
    quick: bool
    out: Path | None = None  # where sections may write pictures of their own
    run_id: str = field(default_factory=new_run_id)
    log: Callable[[str], None] = print

    def name(self, what: str) -> str:
        """A fresh topic/schema name for this run (lowercase, PostgreSQL-safe); the run id
        comes first, so that ``bench.leftovers`` finds what a killed run left behind."""
        return f"bench_{self.run_id}_{what}"


def machine() -> dict[str, Any]:
    """Where the figures come from."""
    mem_kb = 0
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem_kb = int(line.split()[1])
    except OSError:
        pass
    return {
        "cpus": os.cpu_count(),
        "memory_gib": round(mem_kb / 2**20, 1),
        "python": platform.python_version(),
        "platform": platform.platform(),
    }


def descendants(pid: int) -> list[int]:
    """The process ids of ``pid``'s children, their children, and so on (Linux /proc)."""
    parents: dict[int, int] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rpartition(")")[2].split()
        except OSError:
            continue
        parents[int(stat.parent.name)] = int(fields[1])
    found, frontier = [], [pid]
    while frontier:
        children = [p for p, parent in parents.items() if parent in frontier]
        found += children
        frontier = children
    return found


def peak_rss_tree_mib(pid: int) -> float | None:
    """``peak_rss_mib`` of a process plus all its descendants (e.g. ``crm process`` and
    its projector's child process): each one's own peak, summed."""
    own = peak_rss_mib(pid)
    if own is None:
        return None
    return own + sum(peak_rss_mib(child) or 0.0 for child in descendants(pid))


def peak_rss_mib(pid: int) -> float | None:
    """Peak resident memory of a running process (Linux ``VmHWM``), in MiB."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None
