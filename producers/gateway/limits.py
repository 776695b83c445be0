"""Request limits of the ingest gateway, and a body reader that enforces them as it reads.

A body larger than ``max_request_bytes`` is refused from its ``Content-Length`` before
a byte is read, and a body without one (chunked) is refused as soon as the bytes read
pass the limit, so no request can make the gateway buffer more than the limit.
"""

from __future__ import annotations

from dataclasses import dataclass

from fastapi import HTTPException, Request, status


@dataclass(frozen=True, slots=True)
class GatewayLimits:
    """What one request may carry. Over a limit, the request gets 413 naming it."""

    max_events: int = 1_000
    """Events per request (a batch)."""
    max_event_bytes: int = 256 * 1024
    """Bytes of one event as JSON (an array item is measured re-serialized, compactly)."""
    max_request_bytes: int = 8 * 1024 * 1024
    """Bytes of a whole request body."""

    def __post_init__(self) -> None:
        if min(self.max_events, self.max_event_bytes, self.max_request_bytes) < 1:
            raise ValueError("gateway limits must be positive")


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, or 413 as soon as it is known to exceed ``limit`` bytes."""
    declared = request.headers.get("content-length")
    if declared is not None:
        if not declared.isdigit():
            raise HTTPException(status.HTTP_400_BAD_REQUEST, "Content-Length is not a number")
        if int(declared) > limit:
            raise _too_large(f"request body of {int(declared):,} bytes exceeds {limit:,} bytes")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise _too_large(f"request body exceeds {limit:,} bytes")
    return bytes(body)


def _too_large(message: str) -> HTTPException:
    return HTTPException(status.HTTP_413_CONTENT_TOO_LARGE, message)
