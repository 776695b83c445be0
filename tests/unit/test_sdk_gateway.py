"""The SDK's gateway target against an in-test gateway implementing the HTTP contract."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

import httpx
import pytest

from producers.sdk import Publisher, PublishError
from producers.sdk_http import GatewayTarget
from schemas import EventValidationError, parse_event

NOW = datetime(2026, 3, 14, 10, 0, tzinfo=UTC)
KEY = "lcrm_test_key"


class FakeGateway:
    """``POST /v1/events`` as the gateway promises it: 200/207/422 with per-event
    results, 401 on a bad key, 413 over ``max_batch``, 503 + Retry-After while
    ``unavailable`` > 0. It refuses order ids starting with ``BAD`` (a server-side rule
    the SDK cannot know), and stores accepted events by id."""

    def __init__(self) -> None:
        self.stored: dict[UUID, dict[str, Any]] = {}
        self.requests: list[httpx.Request] = []
        self.unavailable = 0
        self.retry_after: str | None = "2"
        self.max_batch = 10_000
        self.connection_errors = 0

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        if self.connection_errors:
            self.connection_errors -= 1
            raise httpx.ConnectError("connection refused", request=request)
        if (request.method, request.url.path) != ("POST", "/v1/events"):
            return httpx.Response(404)
        if request.headers.get("authorization") != f"Bearer {KEY}":
            return httpx.Response(401, json={"detail": "invalid API key"})
        if self.unavailable:
            self.unavailable -= 1
            headers = {"Retry-After": self.retry_after} if self.retry_after else {}
            return httpx.Response(503, json={"detail": "Kafka unavailable"}, headers=headers)
        body = json.loads(request.content)
        if len(body) > self.max_batch:
            return httpx.Response(413, json={"detail": f"at most {self.max_batch} events"})
        results = [self._one(index, item) for index, item in enumerate(body)]
        accepted = sum(r["status"] == "accepted" for r in results)
        status = 200 if accepted == len(results) else 422 if accepted == 0 else 207
        return httpx.Response(
            status,
            json={"accepted": accepted, "rejected": len(results) - accepted, "results": results},
        )

    def _one(self, index: int, item: dict[str, Any]) -> dict[str, Any]:
        result: dict[str, Any] = {"index": index, "event_id": item.get("event_id")}
        try:
            event = parse_event(item)
        except EventValidationError as exc:
            errors = [{"loc": e.loc, "msg": e.msg} for e in exc.errors]
            return {**result, "status": "rejected", "errors": errors}
        if str(item["payload"].get("order_id", "")).startswith("BAD"):
            errors = [{"loc": "payload.order_id", "msg": "unknown order"}]
            return {**result, "status": "rejected", "errors": errors}
        self.stored[event.event_id] = item
        return {**result, "status": "accepted", "errors": []}


@pytest.fixture
def gateway() -> FakeGateway:
    return FakeGateway()


def _publisher(gateway: FakeGateway, **options: Any) -> tuple[Publisher, list[float]]:
    """A publisher whose retries sleep on a fake clock: ``slept`` lists the waits."""
    slept: list[float] = []

    def sleep(seconds: float) -> None:
        slept.append(seconds)

    target = GatewayTarget(
        "https://ingest.example/",
        options.pop("api_key", KEY),
        transport=httpx.MockTransport(gateway),
        sleep=sleep,
        clock=lambda: sum(slept),
        retry_timeout=options.pop("retry_timeout", 30.0),
    )
    publisher = Publisher(target, source_system="shop-eu", linger=60, close_target=True, **options)
    return publisher, slept


def _order(publisher: Publisher, order_id: str) -> UUID:
    return publisher.order_placed(
        identifiers={"email": "ana@example.com"},
        occurred_at=NOW,
        order_id=order_id,
        lines=[{"sku": "SHO-1", "quantity": 1, "unit_price": "59.90"}],
        currency="EUR",
        total="59.90",
    )


def test_200_stores_every_event_as_a_native_envelope(gateway: FakeGateway) -> None:
    with Publisher.to_gateway(
        "https://ingest.example",
        KEY,
        source_system="shop-eu",
        linger=60,
        transport=httpx.MockTransport(gateway),
    ) as publisher:
        ids = [_order(publisher, f"O-{n}") for n in range(3)]
    assert list(gateway.stored) == ids
    (request,) = gateway.requests
    assert request.headers["content-type"] == "application/json"
    assert request.headers["authorization"] == f"Bearer {KEY}"
    body = json.loads(request.content)
    assert [parse_event(item).model_dump(mode="json") for item in body] == body


def test_207_reports_the_rejected_event_and_keeps_the_accepted_ones(
    gateway: FakeGateway,
) -> None:
    publisher, _ = _publisher(gateway)
    ids = [_order(publisher, order_id) for order_id in ("O-1", "BAD-2", "O-3")]
    with pytest.raises(PublishError) as caught:
        publisher.flush()
    (rejection,) = caught.value.rejections
    assert (rejection.index, rejection.event_id) == (1, ids[1])
    assert [(e.loc, e.msg) for e in rejection.errors] == [("payload.order_id", "unknown order")]
    assert "payload.order_id: unknown order" in str(caught.value)
    assert caught.value.failed == 1 and not caught.value.unsent
    assert set(gateway.stored) == {ids[0], ids[2]}
    assert publisher.buffered == 0  # resending a rejected event cannot help
    publisher.close()


def test_422_rejects_the_whole_batch(gateway: FakeGateway) -> None:
    publisher, _ = _publisher(gateway)
    _order(publisher, "BAD-1")
    _order(publisher, "BAD-2")
    with pytest.raises(PublishError) as caught:
        publisher.flush()
    assert [r.index for r in caught.value.rejections] == [0, 1]
    assert gateway.stored == {}
    publisher.close()


def test_401_keeps_the_events_buffered(gateway: FakeGateway) -> None:
    publisher, slept = _publisher(gateway, api_key="wrong")
    ids = [_order(publisher, f"O-{n}") for n in range(3)]
    with pytest.raises(PublishError, match="refused the API key \\(401\\)") as caught:
        publisher.flush()
    assert [e.event_id for e in caught.value.unsent] == ids
    assert publisher.buffered == 3
    assert slept == []  # credentials are not retried
    with pytest.raises(PublishError):
        publisher.close()


def test_503_is_retried_honouring_retry_after(gateway: FakeGateway) -> None:
    gateway.unavailable = 2
    publisher, slept = _publisher(gateway)
    ids = [_order(publisher, f"O-{n}") for n in range(4)]
    publisher.close()
    assert slept == [2.0, 2.0]
    assert list(gateway.stored) == ids
    assert len(gateway.requests) == 3


def test_connection_errors_back_off_exponentially(gateway: FakeGateway) -> None:
    gateway.connection_errors = 3
    publisher, slept = _publisher(gateway)
    _order(publisher, "O-1")
    publisher.close()
    assert slept == [0.1, 0.2, 0.4]
    assert len(gateway.stored) == 1


def test_503_past_retry_timeout_fails_then_a_retry_sends_the_same_ids(
    gateway: FakeGateway,
) -> None:
    gateway.unavailable = 1_000
    publisher, slept = _publisher(gateway, retry_timeout=5.0)
    ids = [_order(publisher, f"O-{n}") for n in range(3)]
    with pytest.raises(PublishError, match="gave up after 3 attempt") as caught:
        publisher.flush()
    assert slept == [2.0, 2.0]  # a third wait would pass the 5 s budget
    assert "503" in str(caught.value)
    assert publisher.buffered == 3
    gateway.unavailable = 0
    publisher.close()
    assert list(gateway.stored) == ids


def test_an_oversized_batch_is_split(gateway: FakeGateway) -> None:
    gateway.max_batch = 2
    publisher, _ = _publisher(gateway)
    ids = [_order(publisher, f"O-{n}") for n in range(5)]
    publisher.close()
    assert sorted(gateway.stored) == sorted(ids)
