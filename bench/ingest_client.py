"""The HTTP client of the ingest benchmark, run in its own process so the gateway's
CPU time is not shared with request building in one interpreter.

    python -m bench.ingest_client --url http://127.0.0.1:8080 --key crm_... \\
        --events events.jsonl --batch 1000 --concurrency 8

``events.jsonl`` holds one native event (JSON) per line. The events are cut into
requests of ``--batch`` events (a JSON array, or a single object for ``--batch 1``)
before the clock starts; ``--concurrency`` connections post them. Prints one JSON
object: events, requests, errors, seconds. Sends to loopback only.
"""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Annotated
from urllib.parse import urlparse

import httpx
import typer


def bodies(lines: list[bytes], batch: int) -> list[tuple[int, bytes]]:
    if batch == 1:
        return [(1, line) for line in lines]
    return [
        (len(part), b"[" + b",".join(part) + b"]")
        for part in (lines[i : i + batch] for i in range(0, len(lines), batch))
    ]


async def post_all(
    url: str, key: str, requests: list[tuple[int, bytes]], concurrency: int
) -> dict[str, object]:
    if urlparse(url).hostname not in {"127.0.0.1", "localhost", "::1"}:
        raise ValueError("the ingest benchmark sends to loopback only")
    queue: asyncio.Queue[tuple[int, bytes]] = asyncio.Queue()
    for item in requests:
        queue.put_nowait(item)
    headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    accepted = errors = 0
    first_error = ""

    async with httpx.AsyncClient(
        base_url=url, headers=headers, limits=limits, timeout=120
    ) as client:

        async def worker() -> None:
            nonlocal accepted, errors, first_error
            while True:
                try:
                    count, body = queue.get_nowait()
                except asyncio.QueueEmpty:
                    return
                try:
                    response = await client.post("/v1/events", content=body)
                    ok = response.status_code == 200
                    detail = f"HTTP {response.status_code}: {response.text[:200]}"
                except httpx.HTTPError as exc:
                    ok, detail = False, repr(exc)
                if ok:
                    accepted += count
                else:
                    errors += 1
                    first_error = first_error or detail

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        seconds = time.perf_counter() - started
    return {
        "events": accepted,
        "requests": len(requests),
        "errors": errors,
        "seconds": seconds,
        "first_error": first_error,
    }


def main(
    url: Annotated[str, typer.Option()],
    key: Annotated[str, typer.Option(envvar="CRM_BENCH_KEY")],
    events: Annotated[Path, typer.Option(help="one native event (JSON) per line")],
    batch: Annotated[int, typer.Option(min=1)] = 1_000,
    concurrency: Annotated[int, typer.Option(min=1)] = 8,
) -> None:
    lines = [line for line in events.read_bytes().splitlines() if line.strip()]
    result = asyncio.run(post_all(url, key, bodies(lines, batch), concurrency))
    typer.echo(json.dumps(result))


if __name__ == "__main__":
    typer.run(main)
