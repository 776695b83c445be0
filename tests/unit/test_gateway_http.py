"""The ingest gateway over HTTP (TestClient) on the embedded log and SQLite keys."""

from __future__ import annotations

import uuid
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest
from fastapi.testclient import TestClient

from auth import Scope, SqlApiKeyStore
from events.codec import encode_event
from events.log import LogRecord, LogUnavailableError, OutgoingRecord, Position
from events.sqlite import SqliteEventLog
from producers.gateway import GatewayLimits, create_app
from producers.gateway.models import IngestResult
from producers.synthetic import SyntheticTouchpoints
from projections.sql import create_engine_for
from schemas import Envelope

JSON = {"Content-Type": "application/json"}
CE = {"Content-Type": "application/cloudevents+json"}
CE_BATCH = {"Content-Type": "application/cloudevents-batch+json"}


class SwitchableLog:
    """The embedded log, which can be made unavailable and counts append calls."""

    def __init__(self, inner: SqliteEventLog) -> None:
        self.inner = inner
        self.down = False
        self.append_calls = 0

    @property
    def topic(self) -> str:
        return self.inner.topic

    def partition_count(self) -> int:
        return self.inner.partition_count()

    def append(self, events: Sequence[Envelope]) -> list[Position]:
        self.append_calls += 1
        if self.down:
            raise LogUnavailableError("Kafka did not acknowledge (simulated outage)")
        return self.inner.append(events)

    def records_of(self, events: Sequence[Envelope]) -> list[OutgoingRecord]:
        return self.inner.records_of(events)

    def append_records(self, records: Sequence[OutgoingRecord]) -> list[Position]:
        self.append_calls += 1
        if self.down:
            raise LogUnavailableError("Kafka did not acknowledge (simulated outage)")
        return self.inner.append_records(records)

    def read(self, **kwargs: Any) -> Iterator[LogRecord]:
        return self.inner.read(**kwargs)

    def end_offsets(self) -> dict[int, int]:
        return self.inner.end_offsets()

    def offsets_for_time(self, when: datetime) -> dict[int, int]:
        return self.inner.offsets_for_time(when)

    def close(self) -> None:
        self.inner.close()


class Gateway:
    def __init__(self, tmp_path: Path, limits: GatewayLimits | None = None) -> None:
        path = tmp_path / "log.sqlite3"
        self.events = SwitchableLog(SqliteEventLog(path, "crm.events", partitions=3))
        self.deadletters = SwitchableLog(SqliteEventLog(path, "crm.deadletters", partitions=1))
        self.keys = SqlApiKeyStore(create_engine_for(None, tmp_path / "auth.sqlite3"))
        self.ingest_key = self.keys.create("shop-eu", [Scope.INGEST]).plaintext
        self.read_key = self.keys.create("dashboard", [Scope.READ]).plaintext
        self.admin_key = self.keys.create("ops", [Scope.ADMIN]).plaintext
        self.ready_error: str | None = None

        def readiness() -> None:
            if self.ready_error:
                raise LogUnavailableError(self.ready_error)

        app = create_app(
            self.events, self.deadletters, self.keys, limits, readiness=readiness, readiness_ttl_s=0
        )
        self.client = TestClient(app, raise_server_exceptions=True)

    def post(
        self, body: bytes | Any, headers: dict[str, str] | None = None, *, key: str | None = None
    ) -> Any:
        content = body if isinstance(body, bytes) else orjson.dumps(body)
        auth = {"Authorization": f"Bearer {key or self.ingest_key}"}
        return self.client.post(
            "/v1/events", content=content, headers={**auth, **(headers or JSON)}
        )

    def stored(self) -> list[dict[str, Any]]:
        return [orjson.loads(r.value) for r in self.events.read()]

    def dead_letters(self) -> list[LogRecord]:
        return list(self.deadletters.read())


@pytest.fixture
def gateway(tmp_path: Path) -> Gateway:
    return Gateway(tmp_path)


def native_events(n: int, seed: int = 7) -> list[dict[str, Any]]:
    return [
        orjson.loads(encode_event(e))
        for e in SyntheticTouchpoints(customers=50, seed=seed).events(n)
    ]


def order_event(quantity: int = 1) -> dict[str, Any]:
    return {
        "type": "order.placed",
        "schema_version": 1,
        "occurred_at": "2026-03-14T10:21:07Z",
        "source": {"system": "shop-eu", "channel": "ecommerce"},
        "identifiers": {"account_id": "ACC-0000042"},
        "payload": {
            "order_id": "O-42-1",
            "currency": "EUR",
            "total": "129.90",
            "lines": [{"sku": "SHO-0042", "quantity": quantity, "unit_price": "129.90"}],
        },
    }


def to_cloudevent(event: dict[str, Any], ce_id: str) -> dict[str, Any]:
    return {
        "specversion": "1.0",
        "id": ce_id,
        "source": event["source"]["system"],
        "type": "com.loopcrm." + event["type"],
        "time": event["occurred_at"],
        "crmchannel": event["source"]["channel"],
        "crmidentifiers": event["identifiers"],
        "crmschemaversion": event["schema_version"],
        "datacontenttype": "application/json",
        "data": event["payload"],
    }


def result(response: Any) -> IngestResult:
    return IngestResult.model_validate_json(response.content)


# -- accepted ---------------------------------------------------------------------------


def test_one_event_is_stored_and_reported(gateway: Gateway) -> None:
    event = native_events(1)[0]
    response = gateway.post(event)
    assert response.status_code == 200, response.text
    body = result(response)
    assert (body.accepted, body.rejected) == (1, 0)
    assert str(body.results[0].event_id) == event["event_id"]
    (stored,) = gateway.stored()
    assert stored["event_id"] == event["event_id"]
    assert stored["payload"] == event["payload"]


def test_a_batch_is_appended_in_one_call_in_order(gateway: Gateway) -> None:
    events = native_events(100)
    response = gateway.post(events)
    assert response.status_code == 200
    assert [str(r.event_id) for r in result(response).results] == [e["event_id"] for e in events]
    assert gateway.events.append_calls == 1
    assert gateway.deadletters.append_calls == 0
    assert {e["event_id"] for e in gateway.stored()} == {e["event_id"] for e in events}


def test_x_api_key_header_and_admin_keys_work(gateway: Gateway) -> None:
    response = gateway.client.post(
        "/v1/events",
        content=orjson.dumps(order_event()),
        headers={**JSON, "X-API-Key": gateway.ingest_key},
    )
    assert response.status_code == 200
    assert gateway.post(order_event(2), key=gateway.admin_key).status_code == 200


def test_recorded_at_is_the_gateways_clock(gateway: Gateway) -> None:
    event = {**order_event(), "recorded_at": "2001-01-01T00:00:00Z"}
    before = datetime.now(UTC)
    assert gateway.post(event).status_code == 200
    recorded = datetime.fromisoformat(gateway.stored()[0]["recorded_at"])
    assert before - timedelta(seconds=1) <= recorded <= datetime.now(UTC)


def test_empty_batch_is_fine(gateway: Gateway) -> None:
    response = gateway.post([])
    assert response.status_code == 200
    assert result(response).accepted == 0


# -- derived ids ------------------------------------------------------------------------


def test_events_without_id_get_a_content_id_so_retries_dedupe(gateway: Gateway) -> None:
    event = order_event()
    first = result(gateway.post(event)).results[0].event_id
    reordered = dict(reversed(list(event.items())))
    retried = gateway.post(
        orjson.dumps(reordered, option=orjson.OPT_INDENT_2).replace(
            b'"type"', b'"recorded_at": "2030-01-01T00:00:00Z", "type"'
        )
    )
    assert result(retried).results[0].event_id == first
    other = result(gateway.post(order_event(quantity=2))).results[0].event_id
    assert other != first
    stored = [e["event_id"] for e in gateway.stored()]
    assert stored == [str(first), str(first), str(other)]  # consumers dedupe the retry


def test_a_given_event_id_is_kept(gateway: Gateway) -> None:
    event_id = uuid.uuid4()
    response = gateway.post({**order_event(), "event_id": str(event_id)})
    assert result(response).results[0].event_id == event_id


# -- rejected ---------------------------------------------------------------------------


def test_mixed_batch_is_207_with_field_errors_and_dead_letters(gateway: Gateway) -> None:
    good = native_events(3)
    unknown_type = {**order_event(), "type": "order.teleported"}
    no_identifiers = {**order_event(), "identifiers": {}}
    wrong_type = order_event()
    wrong_type["payload"]["lines"][0]["quantity"] = "3"
    items: list[Any] = [good[0], unknown_type, good[1], no_identifiers, wrong_type, 42, good[2]]
    response = gateway.post(items)
    assert response.status_code == 207
    body = result(response)
    assert (body.accepted, body.rejected) == (3, 4)
    by_index = {r.index: r for r in body.results}
    assert [r.status for r in body.results] == [
        "accepted",
        "rejected",
        "accepted",
        "rejected",
        "rejected",
        "rejected",
        "accepted",
    ]
    assert by_index[1].errors and by_index[1].errors[0].loc == "type"
    assert by_index[3].errors and by_index[3].errors[0].loc == "identifiers"
    assert by_index[4].errors and by_index[4].errors[0].loc == "payload.lines.0.quantity"
    assert by_index[5].event_id is None
    assert {e["event_id"] for e in gateway.stored()} == {e["event_id"] for e in good}

    letters = gateway.dead_letters()
    assert [letter.header("crm-origin") for letter in letters] == [
        f"http:/v1/events#{i}".encode() for i in (1, 3, 4, 5)
    ]
    assert [letter.value for letter in letters] == [orjson.dumps(items[i]) for i in (1, 3, 4, 5)]
    error = letters[2].header("crm-error")
    assert error is not None and b"payload.lines.0.quantity" in error


def test_one_invalid_event_is_422_and_dead_lettered_byte_for_byte(gateway: Gateway) -> None:
    body = b'{\n  "type": "order.placed",\n  "schema_version": 1\n}\n'
    response = gateway.post(body)
    assert response.status_code == 422
    assert result(response).rejected == 1
    (letter,) = gateway.dead_letters()
    assert letter.value == body
    assert letter.header("crm-origin") == b"http:/v1/events#0"
    assert gateway.stored() == []


def test_malformed_json_is_400_naming_the_position_and_dead_lettered(gateway: Gateway) -> None:
    body = b'[{"type": "order.placed",}]'
    response = gateway.post(body)
    assert response.status_code == 400
    assert "malformed JSON" in response.json()["detail"]
    assert "column" in response.json()["detail"]
    (letter,) = gateway.dead_letters()
    assert letter.value == body
    assert letter.header("crm-origin") == b"http:/v1/events"
    assert (letter.header("crm-error") or b"").startswith(b"malformed JSON")


@pytest.mark.parametrize(
    ("body", "headers"),
    [(b'"hello"', JSON), (b"[]", CE), (b"{}", CE_BATCH), (b"null", JSON)],
)
def test_bodies_of_the_wrong_shape_are_400(gateway: Gateway, body: bytes, headers: Any) -> None:
    assert gateway.post(body, headers).status_code == 400
    assert [letter.value for letter in gateway.dead_letters()] == [body]


def test_json_too_deep_to_rewrite_is_400_not_500(gateway: Gateway) -> None:
    event = orjson.dumps({**order_event(), "payload": "DEEP"})
    body = b"[" + event.replace(b'"DEEP"', b"[" * 300 + b"1" + b"]" * 300) + b"]"
    response = gateway.post(body)
    assert response.status_code == 400
    assert "nested deeper" in response.json()["detail"]
    assert [letter.value for letter in gateway.dead_letters()] == [body]


# -- CloudEvents ------------------------------------------------------------------------


def test_cloudevents_structured_and_batch(gateway: Gateway) -> None:
    events = native_events(3)
    single = gateway.post(to_cloudevent(events[0], "ce-0"), CE)
    assert single.status_code == 200, single.text
    bad = to_cloudevent(events[2], "ce-2")
    del bad["time"]
    batch = gateway.post([to_cloudevent(events[1], "ce-1"), bad], CE_BATCH)
    assert batch.status_code == 207
    rejected = result(batch).results[1]
    assert rejected.errors and rejected.errors[0].loc == "time"
    again = gateway.post(to_cloudevent(events[0], "ce-0"), CE)
    assert result(again).results[0].event_id == result(single).results[0].event_id
    stored = gateway.stored()
    assert [e["type"] for e in stored] == [events[0]["type"], events[1]["type"], events[0]["type"]]


# -- refused requests -------------------------------------------------------------------


def test_missing_or_invalid_keys_are_401_with_a_challenge(gateway: Gateway) -> None:
    body = orjson.dumps(order_event())
    for headers in (
        {},
        {"Authorization": "Bearer crm_000000000000_" + "a" * 43},
        {"Authorization": "Basic dXNlcjpwYXNz"},
        {"X-API-Key": "not-a-key"},
    ):
        response = gateway.client.post("/v1/events", content=body, headers={**JSON, **headers})
        assert response.status_code == 401, headers
        assert response.headers["WWW-Authenticate"] == "Bearer"
        assert "a" * 43 not in response.text
    assert gateway.stored() == [] and gateway.dead_letters() == []


def test_a_key_without_the_ingest_scope_is_403(gateway: Gateway) -> None:
    response = gateway.post(order_event(), key=gateway.read_key)
    assert response.status_code == 403
    assert "ingest" in response.json()["detail"]
    assert gateway.stored() == []


@pytest.mark.parametrize(
    "headers",
    [
        {"Content-Type": "text/plain"},
        {"Content-Type": "application/xml"},
        {"Content-Type": "application/json; charset=latin-1"},
        {"Content-Type": "application/json", "Content-Encoding": "gzip"},
    ],
)
def test_unsupported_media_is_415_naming_the_accepted_types(
    gateway: Gateway, headers: dict[str, str]
) -> None:
    response = gateway.post(order_event(), headers)
    assert response.status_code == 415
    if "xml" in headers["Content-Type"] or "plain" in headers["Content-Type"]:
        for accepted in (
            "application/json",
            "application/cloudevents+json",
            "application/cloudevents-batch+json",
        ):
            assert accepted in response.json()["detail"]


def test_charset_utf8_is_accepted(gateway: Gateway) -> None:
    response = gateway.post(order_event(), {"Content-Type": "application/json; charset=UTF-8"})
    assert response.status_code == 200


def test_limits_are_413_naming_the_limit(tmp_path: Path) -> None:
    gateway = Gateway(
        tmp_path, GatewayLimits(max_events=5, max_event_bytes=2_000, max_request_bytes=6_000)
    )
    too_many = gateway.post([order_event(i + 1) for i in range(6)])
    assert too_many.status_code == 413
    assert "limit is 5" in too_many.json()["detail"]

    big = order_event()
    big["payload"]["lines"] = [
        {"sku": f"SKU-{i}", "quantity": 1, "unit_price": "1.00"} for i in range(40)
    ]
    big_in_batch = gateway.post([order_event(), big])
    assert big_in_batch.status_code == 413
    assert "event #1" in big_in_batch.json()["detail"]
    assert "2,000 bytes" in big_in_batch.json()["detail"]
    assert gateway.post(big).status_code == 413

    huge = orjson.dumps([order_event()] * 40)
    assert len(huge) > 6_000
    declared = gateway.post(huge)
    assert declared.status_code == 413 and "6,000 bytes" in declared.json()["detail"]

    def chunks() -> Iterator[bytes]:  # no Content-Length: counted while streaming
        for i in range(0, len(huge), 1_000):
            yield huge[i : i + 1_000]

    streamed = gateway.client.post(
        "/v1/events",
        content=chunks(),
        headers={**JSON, "Authorization": f"Bearer {gateway.ingest_key}"},
    )
    assert streamed.status_code == 413
    assert gateway.stored() == [] and gateway.dead_letters() == []


def test_default_limits() -> None:
    limits = GatewayLimits()
    assert (limits.max_events, limits.max_event_bytes, limits.max_request_bytes) == (
        1_000,
        256 * 1024,
        8 * 1024 * 1024,
    )
    with pytest.raises(ValueError):
        GatewayLimits(max_events=0)


# -- the log is down --------------------------------------------------------------------


def test_unavailable_log_is_503_with_retry_after_and_nothing_accepted(gateway: Gateway) -> None:
    gateway.events.down = True
    response = gateway.post(native_events(10))
    assert response.status_code == 503
    assert response.headers["Retry-After"] == "5"
    assert "nothing was stored" in response.json()["detail"]
    assert "simulated" not in response.text  # the cause is logged, not shown
    assert "accepted" not in response.json()


def test_unavailable_dead_letter_log_is_503_too(gateway: Gateway) -> None:
    gateway.deadletters.down = True
    assert gateway.post([order_event(), {"type": "nope"}]).status_code == 503
    assert gateway.post(b"{oops").status_code == 503
    assert gateway.stored() == []


# -- health and documentation -----------------------------------------------------------


def test_health_and_readiness(gateway: Gateway) -> None:
    assert gateway.client.get("/healthz").json() == {"status": "ok"}
    assert gateway.client.get("/readyz").json() == {"status": "ready"}
    gateway.ready_error = "Kafka at 127.0.0.1:9 did not answer"
    response = gateway.client.get("/readyz")
    assert response.status_code == 503
    assert "did not answer" in response.json()["detail"]
    assert gateway.client.get("/healthz").status_code == 200


def test_openapi_documents_bodies_responses_and_security(gateway: Gateway) -> None:
    spec = gateway.client.get("/openapi.json").json()
    operation = spec["paths"]["/v1/events"]["post"]
    content = operation["requestBody"]["content"]
    assert set(content) == {
        "application/json",
        "application/cloudevents+json",
        "application/cloudevents-batch+json",
    }
    assert all(media["examples"] for media in content.values())
    responses = operation["responses"]
    assert set(responses) >= {"200", "207", "400", "401", "403", "413", "415", "422", "503"}
    for code in ("200", "207", "422"):
        schema = responses[code]["content"]["application/json"]["schema"]
        assert schema == {"$ref": "#/components/schemas/IngestResult"}
    for code in ("400", "401", "403", "413", "415", "503"):
        schema = responses[code]["content"]["application/json"]["schema"]
        assert schema == {"$ref": "#/components/schemas/ErrorResponse"}
    assert "Retry-After" in responses["503"]["headers"]
    assert {"BearerKey", "ApiKeyHeader"} <= set(spec["components"]["securitySchemes"])
    assert operation["security"] == [{"BearerKey": []}, {"ApiKeyHeader": []}]
    schemas = spec["components"]["schemas"]
    assert {"IngestResult", "ItemResult", "ErrorResponse", "EventEnvelope", "CloudEvent"} <= set(
        schemas
    )
    assert "$defs" not in orjson.dumps(spec).decode()


def test_no_key_and_no_body_reaches_the_logs(
    gateway: Gateway, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("DEBUG")
    event = {**order_event(), "identifiers": {"email": "ana.silva@example.com"}}
    gateway.post([event, {**event, "type": "x"}])
    text = "\n".join(r.getMessage() for r in caplog.records)
    assert "ana.silva" not in text
    assert gateway.ingest_key.split("_", 2)[2] not in text
    assert "1 accepted, 1 rejected -> 207" in text
