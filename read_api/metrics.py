"""Prometheus text exposition, hand-rolled (no extra dependency): request counts and a
latency histogram per route template (never the raw path, which may hold ids), and
the projections' checkpoint per partition."""

from __future__ import annotations

import threading
import time
from collections import defaultdict
from collections.abc import Mapping

BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class RequestMetrics:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: dict[tuple[str, str, str], int] = defaultdict(int)
        self._buckets: dict[tuple[str, str], list[int]] = {}
        self._sums: dict[tuple[str, str], float] = defaultdict(float)
        self._last_applied: tuple[float, int] | None = None

    def observe(self, method: str, route: str, status: int, seconds: float) -> None:
        with self._lock:
            self._counts[(method, route, str(status))] += 1
            buckets = self._buckets.setdefault((method, route), [0] * (len(BUCKETS) + 1))
            for i, bound in enumerate(BUCKETS):
                if seconds <= bound:
                    buckets[i] += 1
            buckets[-1] += 1
            self._sums[(method, route)] += seconds

    def render(
        self,
        topic: str,
        positions: Mapping[int, int] | None,
        lag: Mapping[int, int] | None = None,
    ) -> str:
        lines = [
            "# HELP crm_read_api_requests_total Requests answered, by route and status.",
            "# TYPE crm_read_api_requests_total counter",
        ]
        with self._lock:
            for (method, route, status), n in sorted(self._counts.items()):
                labels = f'method="{method}",route="{_esc(route)}",status="{status}"'
                lines.append(f"crm_read_api_requests_total{{{labels}}} {n}")
            lines += [
                "# HELP crm_read_api_request_seconds Request latency, by route.",
                "# TYPE crm_read_api_request_seconds histogram",
            ]
            for (method, route), buckets in sorted(self._buckets.items()):
                labels = f'method="{method}",route="{_esc(route)}"'
                for bound, n in zip((*map(str, BUCKETS), "+Inf"), buckets, strict=True):
                    lines.append(
                        f'crm_read_api_request_seconds_bucket{{{labels},le="{bound}"}} {n}'
                    )
                lines.append(
                    f"crm_read_api_request_seconds_sum{{{labels}}} {self._sums[(method, route)]}"
                )
                lines.append(f"crm_read_api_request_seconds_count{{{labels}}} {buckets[-1]}")
        lines += [
            "# HELP crm_projection_next_offset The projections' checkpoint per partition.",
            "# TYPE crm_projection_next_offset gauge",
        ]
        for partition, offset in sorted((positions or {}).items()):
            labels = f'topic="{_esc(topic)}",partition="{partition}"'
            lines.append(f"crm_projection_next_offset{{{labels}}} {offset}")
        if positions is not None:
            lines += [
                "# HELP crm_projection_applied_total Records the projections have applied "
                "(rate() of it is events applied per second).",
                "# TYPE crm_projection_applied_total counter",
                f'crm_projection_applied_total{{topic="{_esc(topic)}"}} {sum(positions.values())}',
            ]
            rate = self._applied_rate(sum(positions.values()))
            if rate is not None:
                lines += [
                    "# HELP crm_projection_applied_per_second Events applied per second "
                    "since the previous scrape.",
                    "# TYPE crm_projection_applied_per_second gauge",
                    f'crm_projection_applied_per_second{{topic="{_esc(topic)}"}} {rate:.3f}',
                ]
        if lag is not None:
            lines += [
                "# HELP crm_projection_lag Records in the log not yet applied, per partition.",
                "# TYPE crm_projection_lag gauge",
            ]
            for partition, behind in sorted(lag.items()):
                labels = f'topic="{_esc(topic)}",partition="{partition}"'
                lines.append(f"crm_projection_lag{{{labels}}} {behind}")
        return "\n".join(lines) + "\n"

    def _applied_rate(self, applied: int) -> float | None:
        now = time.monotonic()
        with self._lock:
            last, self._last_applied = self._last_applied, (now, applied)
        if last is None or now <= last[0]:
            return None
        return max(0, applied - last[1]) / (now - last[0])


def _esc(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
