"""The read API over sealed events (TestClient, embedded SQLite): events appended through
a ``SealingEventLog``, projected by the real store with a ``Protector``; searching by a
typed identifier, the 360 and timeline in plain for staff, the admin endpoints (export,
erasure) and what is left after an erasure is carried out."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from auth import Scope, SqlApiKeyStore
from events.sqlite import SqliteEventLog
from privacy.crypto import new_key
from privacy.keystore import SqlKeyStore
from privacy.protect import Protector, SealingEventLog
from projections import planning
from projections.sql import create_engine_for
from projections.store import SqlProjectionStore, outbox_publisher
from projections.tables import customers, timeline
from read_api import create_app, create_read_engine
from schemas import Channel, Envelope, Identifiers
from tests.unit.test_read_api import _event

TOPIC = "crm.events"
EMAIL = "ana.quintanilha@example.com"
PHONE = "+14155550123"
SURNAME = "Quintanilha"
SUBJECT = "Parcel never arrived at Rua Xavantina"
OTHER_EMAIL = "bruno.okonkwo@example.com"


def ana_events() -> list[Envelope]:
    return [
        _event(
            "customer.registered",
            Channel.WEB,
            1,
            Identifiers(email="Ana.Quintanilha@Example.com", phone="(415) 555-0123"),
            first_name="Ana",
            last_name=SURNAME,
        ),
        _event(
            "ticket.opened",
            Channel.CALL_CENTRE,
            2,
            Identifiers(email=EMAIL),
            ticket_id="t-1",
            subject=SUBJECT,
        ),
        _event(
            "order.placed",
            Channel.ECOMMERCE,
            3,
            Identifiers(account_id="ACC-7", email=EMAIL),
            order_id="o-1",
            currency="EUR",
            total="10.00",
            lines=[{"sku": "A", "quantity": 1, "unit_price": "10.00"}],
        ),
    ]


def bruno_events() -> list[Envelope]:
    return [
        _event(
            "customer.registered",
            Channel.WEB,
            4,
            Identifiers(email=OTHER_EMAIL),
            first_name="Bruno",
            last_name="Okonkwo",
        ),
        _event(
            "ticket.opened",
            Channel.CALL_CENTRE,
            5,
            Identifiers(email=OTHER_EMAIL),
            ticket_id="t-2",
            subject="Wrong size delivered",
        ),
    ]


@dataclass
class World:
    event_log: SealingEventLog
    store: SqlProjectionStore
    client: TestClient
    keys: dict[str, str]
    ana: str
    bruno: str
    ana_ids: set[str] = field(default_factory=set)
    bruno_ids: set[str] = field(default_factory=set)

    def call(
        self,
        method: str,
        url: str,
        key: str = "admin",
        headers: dict[str, str] | None = None,
        **kwargs: Any,
    ) -> Any:
        headers = {**(headers or {}), "Authorization": f"Bearer {self.keys[key]}"}
        return self.client.request(method, url, headers=headers, **kwargs)

    def settle(self) -> None:
        planning.settle(self.event_log, self.store)

    def timeline_rows(self, customer_id: str) -> list[dict[str, Any]]:
        with self.store.engine.connect() as conn:
            return [
                dict(e)
                for e in conn.execute(
                    sa.select(timeline.c.event).where(timeline.c.customer_id == customer_id)
                ).scalars()
            ]


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    protector = Protector(
        SqlKeyStore(create_engine_for(None, tmp_path / "privacy.sqlite3"), new_key(), schema=None)
    )
    raw = SqliteEventLog(tmp_path / "log.sqlite3", TOPIC, partitions=2)
    dead = SqliteEventLog(tmp_path / "log.sqlite3", "crm.deadletters", partitions=1)
    event_log = SealingEventLog(raw, protector)
    store = SqlProjectionStore(
        create_engine_for(None, tmp_path / "projections.sqlite3"),
        schema=None,
        protector=protector,
        publish=outbox_publisher(event_log, dead),
    )
    store.create()
    key_store = SqlApiKeyStore(create_engine_for(None, tmp_path / "auth.sqlite3"))
    keys = {
        scope: key_store.create(f"test-{scope}", [Scope(scope)]).plaintext
        for scope in ("read", "admin")
    }
    anas, brunos = ana_events(), bruno_events()
    event_log.append(anas + brunos)
    planning.settle(event_log, store)
    ana, bruno = store.customer_for("email", EMAIL), store.customer_for("email", OTHER_EMAIL)
    assert ana is not None and bruno is not None and ana != bruno
    engine = create_read_engine(None, tmp_path / "projections.sqlite3")
    app = create_app(
        engine, key_store, topic=TOPIC, schema="crm", protector=protector, event_log=event_log
    )
    yield World(
        event_log,
        store,
        TestClient(app),
        keys,
        ana,
        bruno,
        {str(e.event_id) for e in anas},
        {str(e.event_id) for e in brunos},
    )
    engine.dispose()
    store.engine.dispose()
    raw.close()
    dead.close()


def _no_pii(text: str) -> None:
    lowered = text.lower()
    for needle in (EMAIL, "4155550123", SURNAME.lower(), SUBJECT.lower()):
        assert needle not in lowered, needle


# --- before erasure ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "typed", [EMAIL, "  ANA.Quintanilha@EXAMPLE.com ", "Ana.quintanilha@example.COM"]
)
def test_search_by_email_typed_in_any_case(world: World, typed: str) -> None:
    r = world.call("GET", "/v1/customers", "read", params={"identifier": f"email:{typed}"})
    assert r.status_code == 200, r.text
    assert [c["customer_id"] for c in r.json()["data"]] == [world.ana]


def test_search_by_phone_and_account(world: World) -> None:
    for identifier in ("phone:(415) 555-0123", "account_id:ACC-7"):
        r = world.call("GET", "/v1/customers", "read", params={"identifier": identifier})
        assert [c["customer_id"] for c in r.json()["data"]] == [world.ana], identifier


def test_search_by_an_invalid_identifier_is_422_without_the_value(world: World) -> None:
    r = world.call("GET", "/v1/customers", "read", params={"identifier": "email:not-an-email"})
    assert r.status_code == 422
    assert set(r.json()) == {"detail"} and "not-an-email" not in r.json()["detail"]


def test_customer_360_shows_plain_identifiers(world: World) -> None:
    body = world.call("GET", f"/v1/customers/{world.ana}", "read").json()
    assert body["display_name"] == f"Ana {SURNAME}"
    assert body["erased_at"] is None
    shown = {(i["kind"], i["value"]) for i in body["identifiers"]}
    assert {("email", EMAIL), ("phone", PHONE), ("account_id", "ACC-7")} <= shown
    assert not any(value.startswith("h1:") for _, value in shown)


def test_timeline_opens_sealed_events_and_hides_the_blob(world: World) -> None:
    body = world.call("GET", f"/v1/customers/{world.ana}/timeline", "read").json()
    events = {row["type"]: row["event"] for row in body["data"]}
    assert events["ticket.opened"]["payload"]["subject"] == SUBJECT
    assert events["ticket.opened"]["identifiers"]["email"] == EMAIL
    assert events["customer.registered"]["payload"]["last_name"] == SURNAME
    assert all("pii" not in row["event"] for row in body["data"])


def test_timeline_rows_in_the_database_are_sealed(world: World) -> None:
    rows = world.timeline_rows(world.ana)
    assert rows and any("pii" in row for row in rows)
    _no_pii(json.dumps(rows))


def test_export_holds_every_event_of_the_customer_and_no_other(world: World) -> None:
    r = world.call("GET", f"/v1/customers/{world.ana}/export")
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["customer_id"] == world.ana and body["erased_at"] is None
    exported = {e["event_id"] for e in body["events"]}
    stored = {row["event_id"] for row in world.timeline_rows(world.ana)}
    assert world.ana_ids <= exported == stored
    assert not exported & world.bruno_ids
    assert OTHER_EMAIL not in r.text
    assert {"kind": "email", "value": EMAIL, "shared": False} in body["identifiers"]
    assert SUBJECT in r.text and '"pii"' not in r.text


@pytest.mark.parametrize(
    ("method", "suffix"), [("GET", "export"), ("POST", "erasure")], ids=["export", "erasure"]
)
def test_admin_endpoints_refuse_a_read_key(world: World, method: str, suffix: str) -> None:
    r = world.call(method, f"/v1/customers/{world.ana}/{suffix}", "read")
    assert r.status_code == 403 and set(r.json()) == {"detail"}
    anonymous = world.client.request(method, f"/v1/customers/{world.ana}/{suffix}")
    assert anonymous.status_code == 401


@pytest.mark.parametrize(
    ("method", "suffix"), [("GET", "export"), ("POST", "erasure")], ids=["export", "erasure"]
)
def test_admin_endpoints_unknown_customer_is_404(world: World, method: str, suffix: str) -> None:
    r = world.call(method, f"/v1/customers/cus_nobody_here/{suffix}")
    assert r.status_code == 404
    assert r.json() == {"detail": "customer not found"}


@pytest.mark.parametrize(
    "body",
    [
        {"reason": "x" * 201},
        {"reason": 5},
        {"reason": "   "},
        {"requested_by": "agent", "secret_note": "ana@example.com"},
        ["not", "an", "object"],
    ],
)
def test_erasure_with_a_bad_body_is_422_without_echo(world: World, body: Any) -> None:
    r = world.call("POST", f"/v1/customers/{world.ana}/erasure", json=body)
    assert r.status_code == 422, r.text
    assert set(r.json()) == {"detail"}
    assert "xxxxx" not in r.text and "ana@example.com" not in r.text


@pytest.mark.parametrize(("content", "code"), [(b"{reason", 422), (b"\xff\xfe{", 400)])
def test_erasure_with_an_unreadable_body_is_4xx_detail(
    world: World, content: bytes, code: int
) -> None:
    r = world.call(
        "POST",
        f"/v1/customers/{world.ana}/erasure",
        content=content,
        headers={"Content-Type": "application/json"},
    )
    assert r.status_code == code and set(r.json()) == {"detail"}


def test_erasure_without_an_event_log_is_503(world: World, tmp_path: Path) -> None:
    engine = create_read_engine(None, tmp_path / "projections.sqlite3")
    key_store = world.client.app.state.key_store  # type: ignore[attr-defined]
    client = TestClient(create_app(engine, key_store, topic=TOPIC))
    r = client.post(
        f"/v1/customers/{world.ana}/erasure",
        headers={"Authorization": f"Bearer {world.keys['admin']}"},
    )
    assert r.status_code == 503 and "event log" in r.json()["detail"]
    engine.dispose()


# --- erasure ----------------------------------------------------------------------------


def test_erasure_is_requested_then_carried_out(world: World) -> None:
    r = world.call(
        "POST",
        f"/v1/customers/{world.ana}/erasure",
        json={"reason": "customer request", "requested_by": "agent-17"},
    )
    assert r.status_code == 202, r.text
    answer = r.json()
    assert answer["customer_id"] == world.ana and answer["status"] == "requested"
    assert answer["request_id"]

    world.settle()
    with world.store.engine.connect() as conn:
        erased_at = conn.execute(
            sa.select(customers.c.erased_at).where(customers.c.customer_id == world.ana)
        ).scalar_one()
    assert erased_at is not None

    view = world.call("GET", f"/v1/customers/{world.ana}", "read")
    body = view.json()
    assert body["erased_at"] is not None and body["display_name"] is None
    assert {i["kind"] for i in body["identifiers"]} <= {"account_id", "customer_id"}
    _no_pii(view.text)

    page = world.call("GET", f"/v1/customers/{world.ana}/timeline", "read")
    events = {row["type"]: row["event"] for row in page.json()["data"]}
    assert events["ticket.opened"]["payload"]["subject"] == "[redacted]"
    assert events["ticket.opened"]["identifiers"]["email"].startswith("h1:")
    assert all("pii" not in e for e in events.values())
    _no_pii(page.text)

    exported = world.call("GET", f"/v1/customers/{world.ana}/export")
    assert exported.status_code == 200
    assert exported.json()["erased_at"] is not None
    assert world.ana_ids <= {e["event_id"] for e in exported.json()["events"]}
    _no_pii(exported.text)
    assert "Ana" not in exported.text

    search = world.call("GET", "/v1/customers", "read", params={"name": "Ana"})
    assert world.ana not in [c["customer_id"] for c in search.json()["data"]]

    other = world.call("GET", f"/v1/customers/{world.bruno}/timeline", "read").json()
    subjects = [r["event"]["payload"].get("subject") for r in other["data"]]
    assert "Wrong size delivered" in subjects  # nobody else's data was touched
