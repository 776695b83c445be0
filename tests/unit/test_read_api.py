"""The read API over HTTP (TestClient) on embedded SQLite projections built by the real
projection store from events: search, customer 360 with aliases, timeline, freshness."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from auth import Scope, SqlApiKeyStore
from events.codec import decode_event
from producers.synthetic import SyntheticTouchpoints
from projections.identity import customer_id_for
from projections.sql import create_engine_for
from projections.store import SqlProjectionStore
from projections.tables import outbox
from read_api import create_app, create_read_engine
from schemas import CATALOG, Channel, Envelope, Identifiers, Source, new_event
from tests.projection_harness import TOPIC, as_records

SURVIVOR = customer_id_for("account_id:ACC-1")
MERGED = {customer_id_for("device_id:dev-9"), customer_id_for("email:ana.silva@example.com")}


def _at(minutes: int) -> datetime:
    return datetime(2026, 5, 1, 9, 0, tzinfo=UTC) + timedelta(minutes=minutes)


def _event(type_: str, channel: Channel, when: int, ids: Identifiers, **payload: Any) -> Envelope:
    return new_event(
        CATALOG[type_].payload(**payload),
        source=Source(system="test", channel=channel),
        identifiers=ids,
        occurred_at=_at(when),
    )


def ana_events() -> list[Envelope]:
    """Four touchpoints of one person, linked through account, email, device and phone."""
    return [
        _event("web.page_viewed", Channel.WEB, 1, Identifiers(device_id="dev-9"), url="https://s/"),
        _event(
            "call.logged",
            Channel.CALL_CENTRE,
            3,
            Identifiers(phone="(415) 555-0123", account_id="ACC-1"),
            call_id="c1",
            direction="inbound",
            duration_seconds=60,
        ),
        _event(
            "customer.registered",
            Channel.WEB,
            2,
            Identifiers(device_id="dev-9", email=" Ana.Silva@Example.COM "),
            first_name="Ana",
            last_name="Silva",
        ),
        _event(
            "order.placed",
            Channel.ECOMMERCE,
            4,
            Identifiers(account_id="ACC-1", email="ana.silva@example.com"),
            order_id="o1",
            currency="EUR",
            total="10.00",
            lines=[{"sku": "A", "quantity": 1, "unit_price": "10.00"}],
        ),
    ]


@dataclass
class World:
    store: SqlProjectionStore
    client: TestClient
    keys: dict[str, str]
    offset: int

    def get(self, url: str, key: str = "read", **params: Any) -> Any:
        return self.client.get(
            url, params=params, headers={"Authorization": f"Bearer {self.keys[key]}"}
        )

    def apply(self, events: list[Envelope]) -> None:
        self.store.apply_batch(TOPIC, as_records(events, start=self.offset))
        self.offset += len(events)


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    store = SqlProjectionStore(create_engine_for(None, tmp_path / "projections.sqlite3"))
    store.create()
    key_store = SqlApiKeyStore(create_engine_for(None, tmp_path / "auth.sqlite3"))
    keys = {
        scope: key_store.create(f"test-{scope}", [Scope(scope)]).plaintext
        for scope in ("read", "ingest", "admin")
    }
    engine = create_read_engine(None, tmp_path / "projections.sqlite3")
    w = World(store, TestClient(create_app(engine, key_store, topic=TOPIC)), keys, 0)
    for event in ana_events():
        w.apply([event])
    with store.engine.connect() as conn:
        merges = [decode_event(v) for v in conn.execute(sa.select(outbox.c.value)).scalars()]
    w.apply(merges)  # the identity.merged events read back: old ids now resolve
    w.apply(list(SyntheticTouchpoints(customers=40, seed=3).events(400)))
    yield w
    engine.dispose()
    store.engine.dispose()


@pytest.mark.parametrize(
    "identifier",
    [
        "email:ana.silva@example.com",
        "email:  ANA.Silva@EXAMPLE.com ",
        "phone:+14155550123",
        "phone:(415) 555-0123",
        "account_id:ACC-1",
        "device_id:dev-9",
    ],
)
def test_search_by_each_identifier_kind_normalised(world: World, identifier: str) -> None:
    r = world.get("/v1/customers", identifier=identifier)
    assert r.status_code == 200, r.text
    body = r.json()
    assert [c["customer_id"] for c in body["data"]] == [SURVIVOR]
    assert body["next_cursor"] is None
    assert body["freshness"]["topic"] == TOPIC
    assert body["freshness"]["positions"] == {"0": world.offset}
    assert body["freshness"]["caught_up"] is True


def test_search_unknown_identifier_is_an_empty_page(world: World) -> None:
    body = world.get("/v1/customers", identifier="email:nobody@example.com").json()
    assert body["data"] == [] and body["next_cursor"] is None


def test_search_by_name_prefix_any_case(world: World) -> None:
    body = world.get("/v1/customers", name="ana s").json()
    assert SURVIVOR in [c["customer_id"] for c in body["data"]]
    assert all(c["display_name"].lower().startswith("ana s") for c in body["data"])
    assert world.get("/v1/customers", name="%").json()["data"] == []  # LIKE is escaped


@pytest.mark.parametrize(
    "sort", ["last_seen", "-last_seen", "first_seen", "-order_count", "event_count"]
)
@pytest.mark.parametrize("limit", [1, 7, 200])
def test_pages_cover_every_customer_once_in_order(world: World, sort: str, limit: int) -> None:
    everyone = world.get("/v1/customers", limit=200, sort=sort).json()["data"]
    seen: list[dict[str, Any]] = []
    cursor = None
    while True:
        params: dict[str, Any] = {"limit": limit, "sort": sort}
        if cursor:
            params["cursor"] = cursor
        body = world.get("/v1/customers", **params).json()
        assert len(body["data"]) <= limit
        seen += body["data"]
        cursor = body["next_cursor"]
        if cursor is None:
            break
    assert [c["customer_id"] for c in seen] == [c["customer_id"] for c in everyone]
    assert len({c["customer_id"] for c in seen}) == len(seen) > 1
    key = sort.lstrip("-")
    pairs = [(c[key], c["customer_id"]) for c in seen]
    assert pairs == sorted(pairs, reverse=sort.startswith("-"))


def test_exact_page_boundary_has_no_next_cursor(world: World) -> None:
    total = len(world.get("/v1/customers", limit=200).json()["data"])
    body = world.get("/v1/customers", limit=total).json()
    assert len(body["data"]) == total and body["next_cursor"] is None
    first = world.get("/v1/customers", limit=total - 1).json()
    last = world.get("/v1/customers", limit=total - 1, cursor=first["next_cursor"]).json()
    assert len(last["data"]) == 1 and last["next_cursor"] is None


def test_cursor_is_stable_under_inserts(world: World) -> None:
    first = world.get("/v1/customers", limit=5, sort="first_seen").json()
    world.apply(
        [
            _event(
                "web.page_viewed",
                Channel.WEB,
                -10_000,  # earliest of all: sorts before the first page
                Identifiers(device_id="dev-new"),
                url="https://s/",
            )
        ]
    )
    second = world.get("/v1/customers", limit=5, sort="first_seen", cursor=first["next_cursor"])
    ids = {c["customer_id"] for c in first["data"]} & {
        c["customer_id"] for c in second.json()["data"]
    }
    assert not ids
    assert customer_id_for("device_id:dev-new") not in {
        c["customer_id"] for c in second.json()["data"]
    }


def test_customer_360_and_alias_resolution(world: World) -> None:
    body = world.get(f"/v1/customers/{SURVIVOR}").json()
    assert body["customer_id"] == SURVIVOR and body["resolved_from"] is None
    assert body["display_name"] == "Ana Silva"
    assert body["order_count"] == 1 and body["revenue"] == {"EUR": "10.00"}
    assert body["event_count"] == 4 and body["state"]["event_count"] == 4
    kinds = {(i["kind"], i["value"]) for i in body["identifiers"]}
    assert {
        ("email", "ana.silva@example.com"),
        ("phone", "+14155550123"),
        ("account_id", "ACC-1"),
        ("device_id", "dev-9"),
    } <= kinds
    assert body["freshness"]["positions"] == {"0": world.offset}
    for alias in MERGED - {SURVIVOR}:
        merged = world.get(f"/v1/customers/{alias}").json()
        assert merged["customer_id"] == SURVIVOR and merged["resolved_from"] == alias


def test_unknown_customer_is_404_with_a_message(world: World) -> None:
    for url in ("/v1/customers/cus_nobody", "/v1/customers/cus_nobody/timeline"):
        r = world.get(url)
        assert r.status_code == 404 and "not found" in r.json()["detail"]


def test_timeline_newest_first_filters_and_aliases(world: World) -> None:
    body = world.get(f"/v1/customers/{SURVIVOR}/timeline").json()
    assert [e["type"] for e in body["data"]] == [
        "order.placed",
        "call.logged",
        "customer.registered",
        "web.page_viewed",
    ]
    assert body["next_cursor"] is None and body["resolved_from"] is None
    web = world.get(f"/v1/customers/{SURVIVOR}/timeline", channel="web").json()["data"]
    assert {e["channel"] for e in web} == {"web"} and len(web) == 2
    typed = world.get(f"/v1/customers/{SURVIVOR}/timeline", type="call.logged").json()["data"]
    assert [e["type"] for e in typed] == ["call.logged"]
    none = world.get(f"/v1/customers/{SURVIVOR}/timeline", type="nps.answered").json()
    assert none["data"] == [] and none["next_cursor"] is None
    alias = next(iter(MERGED - {SURVIVOR}))
    via_alias = world.get(f"/v1/customers/{alias}/timeline").json()
    assert via_alias["customer_id"] == SURVIVOR and via_alias["resolved_from"] == alias
    assert via_alias["data"] == body["data"]


def test_timeline_pagination_edges(world: World) -> None:
    url = f"/v1/customers/{SURVIVOR}/timeline"
    everything = world.get(url).json()["data"]
    exact = world.get(url, limit=4).json()
    assert len(exact["data"]) == 4 and exact["next_cursor"] is None
    pages, cursor = [], None
    while True:
        params: dict[str, Any] = {"limit": 3}
        if cursor:
            params["cursor"] = cursor
        page = world.get(url, **params).json()
        pages += page["data"]
        cursor = page["next_cursor"]
        if not cursor:
            break
    assert pages == everything
    # A cursor of one query is refused by another (other filter, other customer, search).
    first = world.get(url, limit=1).json()["next_cursor"]
    assert world.get(url, limit=1, channel="web", cursor=first).status_code == 422
    assert world.get("/v1/customers", cursor=first).status_code == 422


@pytest.mark.parametrize(
    ("url", "params", "fragment"),
    [
        ("/v1/customers", {"cursor": "not-a-cursor"}, "cursor"),
        ("/v1/customers", {"cursor": "W10"}, "cursor"),
        ("/v1/customers", {"identifier": "fax:123"}, "unknown identifier kind"),
        ("/v1/customers", {"identifier": "email"}, "KIND:VALUE"),
        ("/v1/customers", {"identifier": "email:not-an-email"}, "not valid"),
        ("/v1/customers", {"identifier": "phone:12"}, "not valid"),
        ("/v1/customers", {"limit": 0}, "limit"),
        ("/v1/customers", {"limit": 201}, "limit"),
        ("/v1/customers", {"sort": "revenue"}, "sort"),
        ("/v1/customers", {"min_position": "0-12"}, "PARTITION:OFFSET"),
        ("/v1/customers", {"wait_ms": 6000}, "wait_ms"),
        (f"/v1/customers/{SURVIVOR}/timeline", {"channel": "pigeon"}, "channel"),
        (f"/v1/customers/{SURVIVOR}/timeline", {"cursor": "%%%"}, "cursor"),
    ],
)
def test_bad_parameters_are_422_with_a_clear_message(
    world: World, url: str, params: dict[str, Any], fragment: str
) -> None:
    r = world.get(url, **params)
    assert r.status_code == 422, r.text
    assert fragment in r.text
    assert "not-an-email" not in r.json()["detail"] if isinstance(r.json()["detail"], str) else True


def test_keys_and_scopes(world: World) -> None:
    url = f"/v1/customers/{SURVIVOR}"
    r = world.client.get(url)
    assert r.status_code == 401 and r.headers["WWW-Authenticate"] == "Bearer"
    r = world.client.get(url, headers={"Authorization": "Bearer crm_000000000000_" + "x" * 43})
    assert r.status_code == 401
    assert world.get(url, key="ingest").status_code == 403
    assert world.get(url, key="admin").status_code == 200
    r = world.client.get(url, headers={"X-API-Key": world.keys["read"]})
    assert r.status_code == 200


def test_min_position_not_reached_answers_with_caught_up_false(world: World) -> None:
    started = time.monotonic()
    body = world.get(
        "/v1/customers",
        identifier="account_id:ACC-1",
        min_position=f"0:{world.offset + 5}",
        wait_ms=200,
    ).json()
    assert time.monotonic() - started >= 0.2
    assert body["freshness"]["caught_up"] is False and len(body["data"]) == 1
    reached = world.get("/v1/customers", min_position=f"0:{world.offset}").json()
    assert reached["freshness"]["caught_up"] is True


def test_min_position_waits_for_a_concurrent_batch(world: World) -> None:
    late = _event(
        "customer.registered",
        Channel.STORE,
        50,
        Identifiers(email="late@example.com"),
        first_name="Late",
    )
    target = world.offset + 1

    def apply_later() -> None:
        time.sleep(0.3)
        world.apply([late])

    thread = threading.Thread(target=apply_later)
    thread.start()
    r = world.client.get(
        "/v1/customers",
        params={"identifier": "email:late@example.com", "wait_ms": 5000},
        headers={"X-API-Key": world.keys["read"], "X-Min-Position": f"0:{target}"},
    )
    thread.join()
    body = r.json()
    assert body["freshness"]["caught_up"] is True
    assert body["freshness"]["positions"]["0"] >= target
    assert len(body["data"]) == 1 and body["data"][0]["display_name"] == "Late"


def test_health_ready_metrics_and_openapi(world: World) -> None:
    assert world.client.get("/healthz").json() == {"status": "ok", "detail": None}
    assert world.client.get("/readyz").status_code == 200
    world.get(f"/v1/customers/{SURVIVOR}")
    text = world.client.get("/metrics").text
    assert 'crm_read_api_requests_total{method="GET",route="/v1/customers/{customer_id}"' in text
    assert "crm_read_api_request_seconds_bucket" in text
    assert f'crm_projection_next_offset{{topic="{TOPIC}",partition="0"}} {world.offset}' in text
    assert SURVIVOR not in text
    schema = world.client.get("/openapi.json").json()
    components = schema["components"]["schemas"]
    assert "example" in components["Customer360Public"]
    assert {"BearerKey", "ApiKeyHeader"} <= set(schema["components"]["securitySchemes"])


def test_readyz_is_503_without_projection_tables(tmp_path: Path) -> None:
    keys = SqlApiKeyStore(create_engine_for(None, tmp_path / "auth.sqlite3"))
    app = create_app(create_read_engine(None, tmp_path / "empty.sqlite3"), keys)
    assert TestClient(app).get("/readyz").status_code == 503


def test_readyz_and_metrics_judge_the_lag_behind_the_log(world: World, tmp_path: Path) -> None:
    ends = {0: world.offset}
    keys = SqlApiKeyStore(create_engine_for(None, tmp_path / "auth.sqlite3"))
    engine = create_read_engine(None, tmp_path / "projections.sqlite3")
    client = TestClient(create_app(engine, keys, topic=TOPIC, log_ends=lambda: ends, max_lag=5))
    assert client.get("/readyz").status_code == 200
    metrics = client.get("/metrics").text
    assert f'crm_projection_lag{{topic="{TOPIC}",partition="0"}} 0' in metrics
    assert f'crm_projection_applied_total{{topic="{TOPIC}"}} {world.offset}' in metrics

    ends[0] = world.offset + 6  # the log moved on; ends are cached for a second
    time.sleep(1.1)
    answer = client.get("/readyz")
    assert answer.status_code == 503
    assert answer.json()["detail"] == "the projections are 6 records behind (max 5)"
    assert f'crm_projection_lag{{topic="{TOPIC}",partition="0"}} 6' in client.get("/metrics").text

    def broken() -> dict[int, int]:
        raise ConnectionError("broker down")

    down = TestClient(create_app(engine, keys, topic=TOPIC, log_ends=broken))
    assert down.get("/readyz").json()["detail"] == "the event log is not reachable"
    engine.dispose()


def test_logs_hold_no_identifiers_or_names(world: World, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level("DEBUG"):
        world.get("/v1/customers", identifier="email:ana.silva@example.com")
        world.get("/v1/customers", name="Ana")
        world.get("/v1/customers", identifier="email:bad")
    server_side = [r for r in caplog.records if not r.name.startswith("httpx")]  # the client's
    assert any(r.name == "read_api" for r in server_side)
    text = "\n".join(r.getMessage() for r in server_side).lower()
    assert "ana" not in text and "example.com" not in text and "bad" not in text


def test_each_uvicorn_worker_builds_the_app_from_settings(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`crm api serve --workers N` starts N processes that each call this factory."""
    from crm.cli_api import app_from_settings

    monkeypatch.delenv("CRM_DATABASE_URL", raising=False)
    monkeypatch.delenv("CRM_KAFKA_BOOTSTRAP", raising=False)
    monkeypatch.setenv("CRM_DATA_DIR", str(tmp_path))
    with TestClient(app_from_settings()) as client:
        paths = set(client.get("/openapi.json").json()["paths"])
        assert {"/v1/customers/{customer_id}", "/v1/customers/{customer_id}/erasure"} <= paths
        assert client.get("/healthz").status_code == 200
        assert 'route="/healthz"' in client.get("/metrics").text
