"""The SDK's HTTP target: batches to the ingest gateway's ``POST /v1/events``.

Request: ``Authorization: Bearer <key>``, ``Content-Type: application/json``, body a JSON
array of native envelopes. Response contract of the gateway: 200 all accepted, 207 some
accepted, 422 none accepted, each with ``{"accepted", "rejected", "results": [{"index",
"event_id", "status", "errors": [{"loc", "msg"}]}]}``; 401/403 bad credentials; 413 a
batch over the limits; 503 (with ``Retry-After``) while Kafka is down.

503, 429, 502, 504 and connection errors (timeouts included) are retried with
exponential backoff, honouring ``Retry-After``, for at most ``retry_timeout`` seconds.
Resending a batch whose answer was lost is safe: the events keep their ids and
consumers dedupe on them. A 413 batch is split in halves and resent.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any

import httpx

from events.codec import encode_event
from producers.sdk import Rejection, SendError
from schemas import Envelope, FieldError

RETRYABLE_STATUSES = frozenset({429, 502, 503, 504})
EVENTS_PATH = "/v1/events"


class GatewayTarget:
    """A :class:`producers.sdk.BatchTarget` posting to the LoopCRM ingest gateway."""

    def __init__(
        self,
        url: str,
        api_key: str,
        *,
        timeout: float = 10.0,
        retry_timeout: float = 30.0,
        max_backoff: float = 5.0,
        transport: httpx.BaseTransport | None = None,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._client = httpx.Client(
            base_url=url.rstrip("/"),
            timeout=timeout,
            transport=transport,
            headers={
                "Authorization": f"Bearer {api_key}",
                "Content-Type": "application/json",
                "User-Agent": "loopcrm-sdk",
            },
        )
        self._retry_timeout = retry_timeout
        self._max_backoff = max_backoff
        self._sleep = sleep
        self._clock = clock

    def send(self, events: Sequence[Envelope]) -> list[Rejection]:
        if not events:
            return []
        response = self._post(b"[" + b",".join(encode_event(e) for e in events) + b"]")
        status = response.status_code
        if status == 200:
            return []
        if status == 413 and len(events) > 1:
            half = len(events) // 2
            tail = self.send(events[half:])
            return self.send(events[:half]) + [
                Rejection(r.index + half, r.event_id, r.errors) for r in tail
            ]
        if status == 413:
            error = FieldError("", f"event too large for the gateway: {_detail(response)}", "413")
            return [Rejection(0, events[0].event_id, (error,))]
        if status in (207, 422):
            rejections = _rejections(response, events)
            if status == 422 and len(rejections) < len(events):
                return self._resend_unrejected(events, rejections)
            return rejections
        if status in (401, 403):
            raise SendError(f"gateway refused the API key ({status}): {_detail(response)}")
        raise SendError(f"gateway answered {status}: {_detail(response)}")

    def _resend_unrejected(
        self, events: Sequence[Envelope], rejections: list[Rejection]
    ) -> list[Rejection]:
        """A 422 accepts nothing: resend the events it did not reject (strictly fewer)."""
        if not rejections:
            raise SendError("gateway answered 422 without rejecting any event")
        rejected = {r.index for r in rejections}
        rest = [i for i in range(len(events)) if i not in rejected]
        again = self.send([events[i] for i in rest])
        return rejections + [Rejection(rest[r.index], r.event_id, r.errors) for r in again]

    def _post(self, body: bytes) -> httpx.Response:
        deadline = self._clock() + self._retry_timeout
        attempt = 0
        while True:
            attempt += 1
            try:
                response = self._client.post(EVENTS_PATH, content=body)
            except httpx.TransportError as exc:
                reason, wait = f"gateway unreachable: {exc!r}", None
            else:
                if response.status_code not in RETRYABLE_STATUSES:
                    return response
                reason = f"gateway answered {response.status_code}: {_detail(response)}"
                wait = _retry_after(response)
            delay = wait if wait is not None else min(0.1 * 2 ** (attempt - 1), self._max_backoff)
            if self._clock() + delay > deadline:
                raise SendError(
                    f"{reason} (gave up after {attempt} attempt(s) in {self._retry_timeout:g}s)"
                )
            self._sleep(delay)

    def close(self) -> None:
        self._client.close()


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("Retry-After")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - datetime.now(UTC)).total_seconds())


def _detail(response: httpx.Response) -> str:
    text = response.text.strip()
    return text[:300] if text else response.reason_phrase


def _rejections(response: httpx.Response, events: Sequence[Envelope]) -> list[Rejection]:
    """Read the per-event results of a 207/422; anything else is a whole-batch failure."""
    try:
        body: Any = response.json()
        results = body["results"]
        rejected = [r for r in results if r.get("status") == "rejected"]
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise SendError(
            f"gateway answered {response.status_code} without per-event results: "
            f"{_detail(response)}"
        ) from exc
    out = []
    for result in rejected:
        index = result.get("index")
        if not isinstance(index, int) or not 0 <= index < len(events):
            raise SendError(f"gateway reported a result for unknown index {index!r}")
        event_id = events[index].event_id
        reported = result.get("event_id")
        if reported is not None and str(reported) != str(event_id):
            raise SendError(f"gateway result {index} names event {reported}, not {event_id}")
        errors = tuple(
            FieldError(str(e.get("loc", "")), str(e.get("msg", "")), str(e.get("kind", "rejected")))
            for e in result.get("errors") or [{"msg": "rejected by the gateway"}]
        )
        out.append(Rejection(index, event_id, errors))
    return out
