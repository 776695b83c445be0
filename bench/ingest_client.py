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

import typer

from bench.read_api import read_response


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
    """Post every body over ``concurrency`` keep-alive connections (closed loop).

    Raw HTTP/1.1 on asyncio streams, like ``bench.read_api``'s load generator: httpx
    costs ~4 ms of client CPU per request, so with small batches it measured itself.
    """
    parsed = urlparse(url)
    host, port = parsed.hostname or "127.0.0.1", parsed.port or 80
    if host not in {"127.0.0.1", "localhost", "::1"}:
        raise ValueError("the ingest benchmark sends to loopback only")
    queue: asyncio.Queue[tuple[int, bytes]] = asyncio.Queue()
    for count, body in requests:
        head = (
            f"POST /v1/events HTTP/1.1\r\nHost: {host}:{port}\r\n"
            f"Authorization: Bearer {key}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n"
        ).encode()
        queue.put_nowait((count, head + body))
    accepted = errors = 0
    first_error = ""

    async def worker() -> None:
        nonlocal accepted, errors, first_error
        reader, writer = await asyncio.open_connection(host, port, limit=1 << 24)
        try:
            while True:
                try:
                    count, raw = queue.get_nowait()
                except asyncio.QueueEmpty:
                    return
                try:
                    writer.write(raw)
                    status = await read_response(reader)
                    detail = f"HTTP {status}"
                except (OSError, ValueError, asyncio.IncompleteReadError) as exc:
                    status, detail = 0, repr(exc)
                    writer.close()
                    reader, writer = await asyncio.open_connection(host, port, limit=1 << 24)
                if status == 200:
                    accepted += count
                else:
                    errors += 1
                    first_error = first_error or detail
        finally:
            writer.close()

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
