"""The ingest gateway served by uvicorn on a real Kafka broker, keys in real PostgreSQL."""

from __future__ import annotations

import socket
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any
from uuid import UUID

import httpx2
import orjson
import pytest
import uvicorn
from fastapi import FastAPI
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from auth import DEFAULT_CACHE_TTL_S, Scope, SqlApiKeyStore
from crm.bootstrap import build_event_log, build_protector, build_raw_event_log
from crm.bootstrap_auth import build_api_key_store
from crm.cli_ingest import IngestSettings, build_gateway
from crm.devservices.testing import TestServices
from events import EventLog, decode_event
from events.codec import encode_event
from producers.gateway.models import ErrorResponse, IngestResult
from producers.synthetic import SyntheticTouchpoints
from schemas import Envelope, parse_event
from tests.unit.test_gateway_http import to_cloudevent

JSON = {"Content-Type": "application/json"}
CE = {"Content-Type": "application/cloudevents+json"}
CE_BATCH = {"Content-Type": "application/cloudevents-batch+json"}
DOCUMENTED = {200, 207, 400, 401, 403, 413, 415, 422, 503}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def served(app: FastAPI) -> Iterator[str]:
    """Run ``app`` with uvicorn in a thread on 127.0.0.1; yield its base URL."""
    port = _free_port()
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="off")
    )
    thread = threading.Thread(target=server.run, name="gateway", daemon=True)
    thread.start()
    deadline = time.monotonic() + 15
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(15)


class Stack:
    """Logs, keys and a served gateway on the test services."""

    def __init__(self, services: TestServices, **overrides: Any) -> None:
        topic = f"gw-{uuid.uuid4().hex[:8]}"
        self.settings = IngestSettings(
            kafka_bootstrap=services.kafka_bootstrap,
            database_url=services.database_url,
            topic=topic,
            deadletter_topic=f"{topic}-dlq",
            partitions=3,
            **overrides,
        )
        self.events: EventLog = build_event_log(self.settings)
        self.deadletters: EventLog = build_raw_event_log(
            self.settings, topic=self.settings.deadletter_topic
        )
        self.keys: SqlApiKeyStore = build_api_key_store(self.settings)
        self.key = self.keys.create(f"test-{topic}", [Scope.INGEST]).plaintext
        self.read_key = self.keys.create(f"reader-{topic}", [Scope.READ]).plaintext
        self.app = build_gateway(self.settings, self.events, self.deadletters)

    def close(self) -> None:
        self.events.close()
        self.deadletters.close()

    def headers(self, content: dict[str, str] | None = None) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.key}", **(content or JSON)}

    def opened(self) -> dict[UUID, Envelope]:
        """The stored events by id, personal data opened with the installation's keys."""
        datas = [orjson.loads(r.value) for r in self.events.read()]
        build_protector(self.settings).open_all(datas)
        return {e.event_id: e for e in map(parse_event, datas)}

    def stored_ids(self) -> list[str]:
        return [str(decode_event(r.value).event_id) for r in self.events.read()]


@pytest.fixture(scope="module")
def stack(services: TestServices) -> Iterator[Stack]:
    stack = Stack(services)
    yield stack
    stack.close()


@pytest.fixture(scope="module")
def client(stack: Stack) -> Iterator[httpx2.Client]:
    with served(stack.app) as url, httpx2.Client(base_url=url, timeout=60) as client:
        yield client


def native_events(n: int, seed: int) -> list[dict[str, Any]]:
    return [
        orjson.loads(encode_event(e))
        for e in SyntheticTouchpoints(customers=200, seed=seed).events(n)
    ]


def test_single_and_batch_land_in_kafka(stack: Stack, client: httpx2.Client) -> None:
    events = native_events(101, seed=1)
    single = client.post("/v1/events", content=orjson.dumps(events[0]), headers=stack.headers())
    assert single.status_code == 200, single.text
    batch = client.post("/v1/events", content=orjson.dumps(events[1:]), headers=stack.headers())
    assert batch.status_code == 200, batch.text
    assert IngestResult.model_validate_json(batch.content).accepted == 100
    stored = {str(decode_event(r.value).event_id): r for r in stack.events.read()}
    assert {e["event_id"] for e in events} <= set(stored)
    record = stored[events[0]["event_id"]]
    assert record.header("crm-type") == events[0]["type"].encode()
    # personal data is sealed in the log (no name, no email), and opens to what was sent
    sent = events[0]
    assert sent["payload"]["first_name"].encode() not in record.value
    assert sent["identifiers"]["email"].encode() not in record.value
    opened = build_protector(stack.settings).open_all([orjson.loads(record.value)])[0]
    assert opened["payload"] == sent["payload"]
    assert opened["identifiers"]["email"] == sent["identifiers"]["email"]


def test_cloudevents_structured_and_batch_round_trip(stack: Stack, client: httpx2.Client) -> None:
    events = native_events(11, seed=2)
    ids = [f"ce-{uuid.uuid4()}" for _ in events]
    one = client.post(
        "/v1/events",
        content=orjson.dumps(to_cloudevent(events[0], ids[0])),
        headers=stack.headers(CE),
    )
    assert one.status_code == 200, one.text
    batch = client.post(
        "/v1/events",
        content=orjson.dumps(
            [to_cloudevent(e, i) for e, i in zip(events[1:], ids[1:], strict=True)]
        ),
        headers=stack.headers(CE_BATCH),
    )
    assert batch.status_code == 200, batch.text
    event_ids = [
        r.event_id
        for response in (one, batch)
        for r in IngestResult.model_validate_json(response.content).results
    ]
    by_id = stack.opened()
    for event_id, original in zip(event_ids, events, strict=True):
        assert event_id is not None
        stored = by_id[event_id]
        assert stored.type == original["type"]
        assert stored.source.system == original["source"]["system"]
        assert orjson.loads(stored.payload.model_dump_json()) == original["payload"]


def test_mixed_batch_dead_letters_are_in_the_dlq_topic(stack: Stack, client: httpx2.Client) -> None:
    good = native_events(2, seed=3)
    marker = uuid.uuid4().hex
    bad: dict[str, Any] = {
        **good[0],
        "event_id": None,
        "type": "order.teleported",
        "marker": marker,
    }
    response = client.post(
        "/v1/events", content=orjson.dumps([good[0], bad, good[1]]), headers=stack.headers()
    )
    assert response.status_code == 207, response.text
    result = IngestResult.model_validate_json(response.content)
    assert [r.status for r in result.results] == ["accepted", "rejected", "accepted"]
    letters = [r for r in stack.deadletters.read() if marker.encode() in r.value]
    assert len(letters) == 1
    assert letters[0].value == orjson.dumps(bad)
    assert letters[0].header("crm-origin") == b"http:/v1/events#1"
    assert b"unknown event type" in (letters[0].header("crm-error") or b"")
    assert {good[0]["event_id"], good[1]["event_id"]} <= set(stack.stored_ids())


def test_auth_uses_keys_in_postgres(stack: Stack, client: httpx2.Client) -> None:
    body = orjson.dumps(native_events(1, seed=4))
    assert client.post("/v1/events", content=body, headers=JSON).status_code == 401
    reader = {"Authorization": f"Bearer {stack.read_key}", **JSON}
    assert client.post("/v1/events", content=body, headers=reader).status_code == 403
    revoked_at = time.monotonic()
    assert stack.keys.revoke(stack.read_key[4:16]) is True  # another store: the CLI's
    while client.post("/v1/events", content=body, headers=reader).status_code != 401:
        assert time.monotonic() - revoked_at < DEFAULT_CACHE_TTL_S + 1, "revocation ignored"
        time.sleep(0.2)
    assert client.get("/readyz").json() == {"status": "ready"}


# -- fuzz -------------------------------------------------------------------------------

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=30),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4)
    ),
    max_leaves=20,
)
TEMPLATE = native_events(1, seed=5)[0]
TEMPLATE_CE = to_cloudevent(TEMPLATE, "fuzz")


@st.composite
def mutated(draw: st.DrawFn, template: dict[str, Any]) -> Any:
    event = orjson.loads(orjson.dumps(template))
    for _ in range(draw(st.integers(1, 3))):
        target = (
            event["payload"]
            if draw(st.booleans()) and isinstance(event.get("payload"), dict)
            else event
        )
        keys = sorted(target) or ["x"]
        key = draw(st.sampled_from([*keys, "extra"]))
        if draw(st.booleans()):
            target.pop(key, None)
        else:
            target[key] = draw(json_values)
    return event


bodies = st.one_of(
    json_values.map(orjson.dumps),
    mutated(TEMPLATE).map(orjson.dumps),
    st.lists(mutated(TEMPLATE), max_size=5).map(orjson.dumps),
    mutated(TEMPLATE_CE).map(orjson.dumps),
    st.lists(mutated(TEMPLATE_CE), max_size=5).map(orjson.dumps),
    st.binary(max_size=64),
    st.sampled_from(
        [
            b"",
            b"{",
            b"[1,",
            b'{"a": 99999999999999999999999}',
            b"\xff\xfe",
            b"[" * 1000,
            b"[" * 300 + b"]" * 300,
            b"NaN",
        ]
    ),
)
content_types = st.sampled_from(
    [
        "application/json",
        "application/cloudevents+json",
        "application/cloudevents-batch+json",
        "application/json; charset=utf-8",
        "application/json; charset=latin-1",
        "text/plain",
        "",
        "application/cloudevents+json; charset=UTF-8",
    ]
)


def test_fuzzed_requests_never_get_an_undocumented_status(
    stack: Stack, client: httpx2.Client
) -> None:
    auths = [
        {"Authorization": f"Bearer {stack.key}"},
        {"X-API-Key": stack.key},
        {},
        {"Authorization": "Bearer crm_nonsense"},
        {"Authorization": "Basic Zm9vOmJhcg=="},
    ]
    seen: set[int] = set()

    @settings(
        max_examples=800,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
        database=None,
    )
    @given(body=bodies, content_type=content_types, auth=st.sampled_from(auths))
    def check(body: bytes, content_type: str, auth: dict[str, str]) -> None:
        headers = {**auth, "Content-Type": content_type} if content_type else dict(auth)
        response = client.post("/v1/events", content=body, headers=headers)
        assert response.status_code in DOCUMENTED, (response.status_code, response.text)
        assert response.status_code != 503, response.text  # Kafka is up
        if response.status_code in (200, 207, 422):
            IngestResult.model_validate_json(response.content)
        else:
            ErrorResponse.model_validate_json(response.content)
        seen.add(response.status_code)

    started = time.monotonic()
    check()
    assert time.monotonic() - started < 60
    assert {200, 400, 401, 415, 422} <= seen


# -- figures ----------------------------------------------------------------------------


def test_http_throughput_figures(
    stack: Stack, client: httpx2.Client, capsys: pytest.CaptureFixture[str]
) -> None:
    rates = {}
    for batch, requests in ((1, 300), (100, 30), (1_000, 8)):
        events = native_events(batch * requests, seed=10 + batch)
        bodies = [orjson.dumps(events[i : i + batch]) for i in range(0, len(events), batch)]
        started = time.perf_counter()
        for body in bodies:
            response = client.post("/v1/events", content=body, headers=stack.headers())
            assert response.status_code == 200, response.text
        rates[batch] = len(events) / (time.perf_counter() - started)
    with capsys.disabled():
        print(
            "\n[figures] HTTP ingest (uvicorn, one client, keep-alive, acks=all) events/s: "
            + ", ".join(f"batch {b:,}: {r:,.0f}" for b, r in rates.items())
        )


# -- outage (last: it stops the broker) ---------------------------------------------------


def test_broker_outage_is_503_then_a_retry_is_accepted_and_nothing_is_lost(
    services: TestServices,
) -> None:
    if services.kafka is None:
        pytest.skip("the broker is external (CRM_TEST_*/testcontainers): cannot stop it here")
    stack = Stack(services, kafka_delivery_timeout_ms=3_000)
    try:
        with served(stack.app) as url, httpx2.Client(base_url=url, timeout=60) as client:
            before = native_events(50, seed=20)
            during = native_events(50, seed=21)
            first = client.post("/v1/events", content=orjson.dumps(before), headers=stack.headers())
            assert first.status_code == 200, first.text

            services.kafka.stop()
            try:
                started = time.monotonic()
                refused = client.post(
                    "/v1/events", content=orjson.dumps(during), headers=stack.headers()
                )
                elapsed = time.monotonic() - started
                assert refused.status_code == 503, refused.text
                assert refused.headers["Retry-After"] == "5"
                assert elapsed < 10, f"503 took {elapsed:.1f}s"
                assert "accepted" not in refused.json()
                assert client.get("/readyz").status_code == 503
            finally:
                services.kafka.start()

            deadline = time.monotonic() + 90
            while True:
                retried = client.post(
                    "/v1/events", content=orjson.dumps(during), headers=stack.headers()
                )
                if retried.status_code == 200:
                    break
                assert retried.status_code == 503, retried.text
                assert time.monotonic() < deadline, "the retried batch was never accepted"
                time.sleep(1)
            while client.get("/readyz").status_code != 200:  # its probe result lives 2 s
                assert time.monotonic() < deadline + 10, "/readyz stayed 503 after the restart"
                time.sleep(0.5)
        stored = set(stack.stored_ids())
        assert {e["event_id"] for e in before + during} <= stored
    finally:
        stack.close()


def test_the_sdk_publishes_through_the_real_gateway_into_kafka(stack: Stack) -> None:
    """The SDK's gateway target against the real app (not a stand-in), end to end."""
    from datetime import UTC, datetime

    from producers.sdk import Publisher, PublishError

    when = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
    with served(stack.app) as url:
        with Publisher.to_gateway(url, stack.key, source_system="pos-eu", batch_size=50) as pub:
            ids = [
                pub.page_viewed(
                    identifiers={"device_id": f"d-{i}"},
                    occurred_at=when,
                    url=f"https://shop.example.com/{i}",
                )
                for i in range(120)
            ]
            ids.append(
                pub.order_placed(
                    identifiers={"email": "Ana@Example.com"},
                    occurred_at=when,
                    order_id="o-1",
                    currency="EUR",
                    total="9.90",
                    lines=[{"sku": "S", "quantity": 1, "unit_price": "9.90"}],
                )
            )
        assert pub.acknowledged == len(ids)
        stored = set(stack.stored_ids())
        assert {str(i) for i in ids} <= stored
        read_only = stack.keys.create("sdk-reader", [Scope.READ]).plaintext
        reader = Publisher.to_gateway(url, read_only, source_system="pos-eu", retry_timeout=1)
        refused = reader.page_viewed(
            identifiers={"device_id": "d-x"}, occurred_at=when, url="https://shop.example.com/x"
        )
        with pytest.raises(PublishError, match="403") as failure:
            reader.flush()
        assert [e.event_id for e in failure.value.unsent] == [refused]
        assert str(refused) not in set(stack.stored_ids())
