"""An open-loop HTTP load generator: requests leave on a fixed schedule whether or not
earlier ones have answered, and latency is measured from the scheduled time, so a slow
server cannot hide its queueing (no coordinated omission).

    python -m bench.load --url http://127.0.0.1:8000 --key crm_... --rate 500 \\
        --seconds 20 --path '/v1/customers/{id}' --ids ids.txt

``{id}`` in the path is replaced by ids from the file, round robin. Sends to loopback only.

Its httpx client costs about a core per 100-200 requests/s on a 2-core machine, so at
higher rates it measures itself: ``bench.read_api`` drives the read API with a leaner
raw-socket generator (``lean_load``) and reports this one only for comparison.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import statistics
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Annotated
from urllib.parse import urlparse

import httpx
import typer


@dataclass(frozen=True)
class LoadResult:
    rate: float
    seconds: float
    sent: int
    ok: int
    errors: int
    achieved_rate: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    return ordered[min(len(ordered) - 1, max(0, round(q * len(ordered)) - 1))]


async def run_load(
    url: str, key: str, rate: float, seconds: float, paths: list[str], concurrency: int = 512
) -> LoadResult:
    host = urlparse(url).hostname
    if host not in {"127.0.0.1", "localhost", "::1"}:
        raise ValueError("load tests send traffic to loopback only")
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    latencies: list[float] = []
    errors = 0
    total = int(rate * seconds)
    cycle = itertools.cycle(paths)
    async with httpx.AsyncClient(
        base_url=url, headers={"Authorization": f"Bearer {key}"}, limits=limits, timeout=30
    ) as client:
        start = time.perf_counter() + 0.2

        async def one(i: int, path: str) -> None:
            nonlocal errors
            scheduled = start + i / rate
            delay = scheduled - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            try:
                response = await client.get(path)
                ok = response.status_code == 200
            except httpx.HTTPError:
                ok = False
            if ok:
                latencies.append((time.perf_counter() - scheduled) * 1e3)
            else:
                errors += 1

        await asyncio.gather(*(one(i, next(cycle)) for i in range(total)))
        elapsed = time.perf_counter() - start
    return LoadResult(
        rate=rate,
        seconds=seconds,
        sent=total,
        ok=len(latencies),
        errors=errors,
        achieved_rate=len(latencies) / elapsed if elapsed > 0 else 0.0,
        p50_ms=statistics.median(latencies) if latencies else float("nan"),
        p90_ms=percentile(latencies, 0.90),
        p99_ms=percentile(latencies, 0.99),
        max_ms=max(latencies, default=float("nan")),
    )


def main(
    url: Annotated[str, typer.Option()],
    key: Annotated[str, typer.Option(envvar="CRM_BENCH_KEY")],
    path: Annotated[str, typer.Option(help="e.g. /v1/customers/{id}")],
    ids: Annotated[Path, typer.Option(help="file with one id per line for {id}")],
    rate: Annotated[float, typer.Option(min=1)] = 500,
    seconds: Annotated[float, typer.Option(min=1)] = 20,
) -> None:
    names = [line.strip() for line in ids.read_text().splitlines() if line.strip()]
    paths = [path.replace("{id}", name) for name in names] or [path]
    result = asyncio.run(run_load(url, key, rate, seconds, paths))
    typer.echo(json.dumps(asdict(result)))


if __name__ == "__main__":
    typer.run(main)
