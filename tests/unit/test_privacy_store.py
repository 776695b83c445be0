"""The projection store over a sealed log (SQLite): identity resolution on keyed hashes
gives the same customers as on plain identifiers; erasure destroys keys, redacts every
projection (also after a rebuild) and keeps aggregates; export gathers one person."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest
import sqlalchemy as sa

from events.log import EventLog
from events.sqlite import SqliteEventLog
from privacy.keystore import SqlKeyStore, data_keys
from privacy.protect import Protector, SealingEventLog
from privacy.subject import PRIVACY_SOURCE, export_subject, request_erasure
from producers.synthetic import SyntheticTouchpoints
from projections import planning
from projections.identity import customer_id_for
from projections.replay import ReplaySource, rebuild
from projections.sql import create_engine_for
from projections.store import SqlProjectionStore, outbox_publisher
from projections.tables import (
    customer_aliases,
    customer_segments,
    customers,
    identity_nodes,
    metadata,
    segment_history,
    timeline,
)
from schemas import (
    CATALOG,
    Channel,
    CustomerErasureRequested,
    Envelope,
    Identifiers,
    Source,
    new_event,
    parse_event,
)
from schemas.fields import REDACTED

T0 = datetime(2026, 5, 1, 9, 0, tzinfo=UTC)
TOPIC = "crm.events"
MASTER = bytes(range(32))
SEGMENT_RULE = {"field": "event_count", "op": "ge", "value": 1}

ANA_EMAIL = "ana.silva@example.com"
ANA_PHONE = "+14155550123"
ANA_DEVICE = "ana-device-5521"
ANA_ACCOUNT = "ACC-ANA-1"
BOB_EMAIL = "bob.bobson@example.com"
ANA_SECRETS = (
    ANA_EMAIL,
    "Ana.Silva@Example.com",
    ANA_PHONE,
    "4155550123",
    ANA_DEVICE,
    "Anabela",
    "Silvestre",
    "Rua Augusta",
    "Broken zipper on the red jacket",
    "Caller asked about her zipper",
)
BOB_SECRETS = (BOB_EMAIL, "Roberto", "Bobsonson", "Avenida da Boavista")


def _at(minutes: float) -> datetime:
    return T0 + timedelta(minutes=minutes)


def _event(type_: str, ids: Identifiers, minutes: float, **payload: Any) -> Envelope:
    return new_event(
        CATALOG[type_].payload(**payload),
        source=Source(system="test", channel=Channel.WEB),
        identifiers=ids,
        occurred_at=_at(minutes),
    )


def _order(ids: Identifiers, minutes: float, order_id: str, total: str) -> Envelope:
    return _event(
        "order.placed",
        ids,
        minutes,
        order_id=order_id,
        currency="EUR",
        total=total,
        lines=[{"sku": "SKU-" + order_id, "quantity": 1, "unit_price": total}],
    )


@dataclass
class Clock:
    now: datetime = T0

    def __call__(self) -> datetime:
        return self.now


@dataclass
class Env:
    """A log (sealing or plain), its raw SQLite log, and a projection store on SQLite."""

    path: Path
    raw: SqliteEventLog
    log: EventLog
    store: SqlProjectionStore
    protector: Protector | None
    clock: Clock

    def settle(self) -> int:
        return planning.settle(self.log, self.store)

    def append(self, events: Sequence[Envelope]) -> None:
        self.log.append(list(events))

    def owner(self, event: Envelope) -> str:
        with self.store.engine.connect() as conn:
            owner: str = conn.execute(
                sa.select(timeline.c.customer_id).where(timeline.c.event_id == str(event.event_id))
            ).scalar_one()
        return owner

    def rows(self, table: sa.Table, *where: Any) -> list[dict[str, Any]]:
        with self.store.engine.connect() as conn:
            return [dict(r._mapping) for r in conn.execute(sa.select(table).where(*where))]


def _make_env(tmp_path: Path, *, protect: bool, threshold: int = 3, partitions: int = 3) -> Env:
    protector = None
    if protect:
        keys_engine = create_engine_for(None, tmp_path / "privacy.sqlite3")
        protector = Protector(SqlKeyStore(keys_engine, MASTER))
    raw = SqliteEventLog(tmp_path / "log.sqlite3", TOPIC, partitions=partitions)
    dead = SqliteEventLog(tmp_path / "log.sqlite3", "crm.deadletters", partitions=1)
    log: EventLog = raw if protector is None else SealingEventLog(raw, protector)
    clock = Clock()
    store = SqlProjectionStore(
        create_engine_for(None, tmp_path / "projections.sqlite3"),
        shared_threshold=threshold,
        publish=outbox_publisher(log, dead),
        clock=clock,
        protector=protector,
    )
    store.create()
    return Env(tmp_path, raw, log, store, protector, clock)


@pytest.fixture
def make_env(tmp_path: Path) -> Iterator[Callable[..., Env]]:
    made: list[Env] = []

    def make(
        name: str = "env", *, protect: bool = True, threshold: int = 3, partitions: int = 1
    ) -> Env:
        folder = tmp_path / name
        folder.mkdir()
        env = _make_env(folder, protect=protect, threshold=threshold, partitions=partitions)
        made.append(env)
        return env

    yield make
    for env in made:
        env.store.engine.dispose()
        env.raw.close()


def _dump(store: SqlProjectionStore) -> dict[str, str]:
    """Every table of the projection schema as text."""

    def default(value: Any) -> Any:
        if isinstance(value, bytes | memoryview):
            return bytes(value).decode("utf-8", "replace")
        return str(value)

    out = {}
    with store.engine.connect() as conn:
        for table in metadata.sorted_tables:
            rows = [dict(r._mapping) for r in conn.execute(sa.select(table))]
            out[table.name] = orjson.dumps(
                rows, default=default, option=orjson.OPT_NON_STR_KEYS
            ).decode()
    return out


def _leaks(store: SqlProjectionStore, secrets: Sequence[str]) -> dict[str, list[str]]:
    """secret -> tables holding it."""
    dump = _dump(store)
    found = {s: sorted(t for t, text in dump.items() if s in text) for s in secrets}
    return {s: tables for s, tables in found.items() if tables}


# --- identity resolution: hashes give the same customers -----------------------------


def _partition(env: Env, events: Sequence[Envelope]) -> set[frozenset[str]]:
    wanted = {str(e.event_id) for e in events}
    groups: dict[str, set[str]] = defaultdict(set)
    with env.store.engine.connect() as conn:
        for event_id, customer_id in conn.execute(
            sa.select(timeline.c.event_id, timeline.c.customer_id)
        ):
            if event_id in wanted:
                groups[customer_id].add(event_id)
        counts = {
            c: n
            for c, n in conn.execute(sa.select(customers.c.customer_id, customers.c.event_count))
        }
    assert sum(len(g) for g in groups.values()) == len(wanted), "events missing from timeline"
    for customer_id, group in groups.items():
        assert counts[customer_id] == len(group)
    return {frozenset(g) for g in groups.values()}


def _touchpoints() -> list[Envelope]:
    web = _event(
        "web.page_viewed", Identifiers(device_id="dev-9"), 1, url="https://shop.example.com/"
    )
    login = _event(
        "web.page_viewed",
        Identifiers(device_id="dev-9", email=" Ana.Silva@Example.COM "),
        2,
        url="https://shop.example.com/account",
    )
    call = _event(
        "call.logged",
        Identifiers(phone="(415) 555-0123", account_id="ACC-1"),
        3,
        call_id="c1",
        direction="inbound",
        duration_seconds=60,
    )
    order = _order(Identifiers(account_id="ACC-1", email="ana.silva@example.com"), 4, "o1", "10")
    stranger = _event(
        "customer.registered", Identifiers(email="someone@example.com"), 5, first_name="S"
    )
    return [web, call, login, order, stranger]


def _household() -> list[Envelope]:
    family = [
        _event(
            "customer.registered",
            Identifiers(email=f"member{i}@example.com", phone="+14155550199"),
            i,
            first_name=f"M{i}",
        )
        for i in range(5)
    ]
    call = _event(
        "call.logged",
        Identifiers(phone="+14155550199"),
        10,
        call_id="c",
        direction="inbound",
        duration_seconds=5,
    )
    return [*family, call]


def _synthetic() -> list[Envelope]:
    return list(SyntheticTouchpoints(customers=40, seed=11).events(400))


@pytest.mark.parametrize(
    ("scenario", "batch", "people"),
    [(_touchpoints, 1, 2), (_household, 1, 6), (_synthetic, 37, None)],
    ids=["touchpoints-merge", "household-phone-guard", "synthetic"],
)
def test_sealed_identity_resolution_finds_the_same_customers(
    make_env: Callable[..., Env],
    scenario: Callable[[], list[Envelope]],
    batch: int,
    people: int | None,
) -> None:
    events = scenario()
    partitions = []
    for protect in (False, True):
        env = make_env(f"protect-{protect}", protect=protect, partitions=3)
        for start in range(0, len(events), batch):
            env.append(events[start : start + batch])
            env.settle()
        partitions.append(_partition(env, events))
        if protect:  # matched on hashes: the plain value is only in identity_nodes.value
            leaks = _leaks(env.store, ["ana.silva@example.com", "member1@example.com"])
            assert set().union(*leaks.values()) <= {"identity_nodes"}, leaks
            nodes = {r["node"] for r in env.rows(identity_nodes)}
            assert "email:member1@example.com" not in nodes
            assert "email:ana.silva@example.com" not in nodes
    plain, sealed = partitions
    assert sealed == plain
    assert len(plain) == people if people else len(plain) > 1


def test_identifiers_typed_by_a_person_find_the_sealed_customer(
    make_env: Callable[..., Env],
) -> None:
    env = make_env()
    events = _touchpoints()
    for event in events:
        env.append([event])
        env.settle()
    ana = env.owner(events[3])
    store = env.store
    assert store.customer_for("email", "  ANA.Silva@example.com") == ana
    assert store.customer_for("phone", "+1 415 555 0123") == ana
    assert store.customer_for("device_id", "dev-9") == ana
    assert store.customer_for("account_id", "ACC-1") == ana
    with env.store.engine.connect() as conn:
        nodes = {
            n: v for n, v in conn.execute(sa.select(identity_nodes.c.node, identity_nodes.c.value))
        }
    assert "email:ana.silva@example.com" not in nodes
    assert protector_node(env, "email", ANA_EMAIL) in nodes
    assert nodes[protector_node(env, "email", ANA_EMAIL)] == ANA_EMAIL  # plain kept beside
    assert nodes["account_id:ACC-1"] is None


def protector_node(env: Env, kind: str, typed: str) -> str:
    assert env.protector is not None
    return f"{kind}:{env.protector.hasher.lookup(kind, typed)}"


# --- erasure -------------------------------------------------------------------------


@dataclass
class People:
    ana: list[Envelope]
    bob: list[Envelope]


def _populate(env: Env) -> People:
    """The segment "active", then Ana (seen first on a device: a merge) and Bob."""
    planning.define_segment(
        env.log, env.store, segment_id="active", name="Active", rule=SEGMENT_RULE, now=T0
    )
    env.settle()
    ana_ids = Identifiers(email=ANA_EMAIL, phone=ANA_PHONE, device_id=ANA_DEVICE)
    browse = _event(
        "web.page_viewed", Identifiers(device_id=ANA_DEVICE), 1, url="https://shop.example/"
    )
    env.append([browse])
    env.settle()
    ana = [
        browse,
        # the account first: the device customer then merges straight into the account
        # customer (see test_erasure_through_a_merged_id_reaches_the_person otherwise)
        _order(Identifiers(account_id=ANA_ACCOUNT, email=ANA_EMAIL), 5, "o-1", "40.00"),
        _event(
            "customer.registered",
            ana_ids,
            2,
            first_name="Anabela",
            last_name="Silvestre",
            address={"line1": "12 Rua Augusta", "city": "Lisboa", "country": "PT"},
            attributes={"tier": "gold"},
        ),
        _event(
            "ticket.opened",
            Identifiers(email=ANA_EMAIL),
            3,
            ticket_id="t-1",
            subject="Broken zipper on the red jacket",
        ),
        _event(
            "call.logged",
            Identifiers(phone=ANA_PHONE),
            4,
            call_id="c-1",
            direction="inbound",
            duration_seconds=30,
            notes="Caller asked about her zipper",
        ),
        _order(Identifiers(email=ANA_EMAIL), 6, "o-2", "2.50"),
    ]
    bob_ids = Identifiers(email=BOB_EMAIL)
    bob = [
        _event(
            "customer.registered",
            bob_ids,
            7,
            first_name="Roberto",
            last_name="Bobsonson",
            address={"line1": "5 Avenida da Boavista", "country": "PT"},
        ),
        _order(bob_ids, 8, "o-9", "9.99"),
    ]
    env.append(ana[1:] + bob)  # one batch, in this order (the log has one partition)
    env.settle()
    return People(ana, bob)


def _record_value(env: Env, event: Envelope) -> dict[str, Any]:
    """The event's record as stored in the log (sealed)."""
    [value] = [
        data
        for r in env.raw.read()
        if (data := orjson.loads(r.value))["event_id"] == str(event.event_id)
    ]
    found: dict[str, Any] = value
    return found


def _kid(env: Env, event: Envelope) -> str:
    """The data key that sealed ``event`` in the log."""
    kid: str = _record_value(env, event)["pii"]["kid"]
    return kid


def _member(env: Env, customer_id: str) -> bool | None:
    rows = env.rows(
        customer_segments,
        customer_segments.c.customer_id == customer_id,
        customer_segments.c.segment_id == "active",
    )
    return None if not rows else bool(rows[0]["member"])


def _timeline_types(env: Env, customer_id: str) -> list[str]:
    return [r["type"] for r in env.rows(timeline, timeline.c.customer_id == customer_id)]


def _customer(env: Env, customer_id: str) -> dict[str, Any]:
    [row] = env.rows(customers, customers.c.customer_id == customer_id)
    return row


def _erase(env: Env, customer_id: str, minutes: float = 60) -> Envelope:
    env.clock.now = _at(minutes)
    request = request_erasure(env.log, customer_id, now=_at(minutes), reason="asked by phone")
    env.settle()
    return request


def test_erasure_destroys_keys_redacts_projections_and_survives_a_rebuild(
    make_env: Callable[..., Env],
) -> None:
    env = make_env()
    assert env.protector is not None
    people = _populate(env)
    ana, bob = env.owner(people.ana[-1]), env.owner(people.bob[0])
    assert ana != bob
    assert {env.owner(e) for e in people.ana} == {ana}
    assert len(env.rows(customer_aliases)) == 1  # Ana's device customer merged
    assert _member(env, ana) is True and _member(env, bob) is True
    # the identifiers and profile are kept in the clear before the erasure
    assert _leaks(env.store, ANA_SECRETS[:1]) and _leaks(env.store, BOB_SECRETS[:1])
    before = _customer(env, ana)
    assert before["order_count"] == 2 and before["revenue_by_currency"] == {"EUR": "42.50"}
    assert before["display_name"] == "Anabela Silvestre"

    # asked through the id Ana's device was first known by (merged into her since)
    device_customer = customer_id_for(protector_node(env, "device_id", ANA_DEVICE))
    assert [r["alias"] for r in env.rows(customer_aliases)] == [device_customer]
    request = _erase(env, device_customer)

    erased_rows = env.rows(timeline, timeline.c.type == "customer.erased")
    assert len(erased_rows) == 1
    erased = parse_event(erased_rows[0]["event"])
    assert erased_rows[0]["customer_id"] == ana
    assert erased.payload.request_id == request.event_id  # type: ignore[attr-defined]
    # the keys of Ana's events (one per identifier set: device; account + email;
    # email + phone + device; email; phone), none of Bob's
    ana_kids = {_kid(env, e) for e in people.ana}
    assert len(ana_kids) == 5
    assert erased.payload.keys_destroyed == len(ana_kids)  # type: ignore[attr-defined]
    assert env.protector.keystore.keys(ana_kids) == {}
    assert not ana_kids & {_kid(env, e) for e in people.bob}
    after = _customer(env, ana)
    assert after["erased_at"] is not None
    assert after["display_name"] is None
    assert after["state"]["profile"] == {} and after["state"]["attributes"] == {}
    assert (after["order_count"], after["revenue_by_currency"]) == (2, {"EUR": "42.50"})
    assert _customer(env, bob)["erased_at"] is None

    # Ana left the segment, Bob stayed
    assert _member(env, ana) is False and _member(env, bob) is True
    history = env.rows(segment_history, segment_history.c.customer_id == ana)
    assert [h["entered"] for h in sorted(history, key=lambda h: h["occurred_at"])] == [
        True,
        False,
    ]
    assert "segment.exited" in _timeline_types(env, ana)

    # nothing of Ana's in any table; Bob's data is still there
    assert _leaks(env.store, ANA_SECRETS) == {}
    assert set(_leaks(env.store, BOB_SECRETS)) == set(BOB_SECRETS)
    for row in env.rows(timeline, timeline.c.customer_id == ana):
        assert row["event"].get("pii") is None, row["type"]
        parse_event(row["event"])
    _assert_bob_openable(env, people)

    # a new order from Ana's email: to her erased record, counted, nothing personal kept
    late = _order(Identifiers(email="Ana.Silva@Example.com"), 120, "o-3", "7.50")
    env.append([late])
    env.settle()
    assert env.owner(late) == ana
    again = _customer(env, ana)
    assert (again["order_count"], again["revenue_by_currency"]) == (3, {"EUR": "50.00"})
    assert again["erased_at"] == after["erased_at"]
    assert _member(env, ana) is False
    assert _leaks(env.store, ANA_SECRETS) == {}
    assert len(env.rows(timeline, timeline.c.type == "customer.erased")) == 1

    # a rebuild from the log gives the same projections, still without Ana's data
    live = _dump(env.store)
    target = env.path / "rebuilt" / "projections.sqlite3"
    target.parent.mkdir()
    result = rebuild(env.raw, ReplaySource(None, "crm", target, 3, env.protector))
    assert result.switched and result.records > 0
    rebuilt = SqlProjectionStore(create_engine_for(None, target), protector=env.protector)
    try:
        assert _leaks(rebuilt, ANA_SECRETS) == {}
        assert set(_leaks(rebuilt, BOB_SECRETS)) == set(BOB_SECRETS)
        replayed = _dump(rebuilt)
        for name in _COMPARED:
            assert _sorted_rows(replayed[name]) == _sorted_rows(live[name]), name
        owners = {(r["event_id"], r["customer_id"]) for r in orjson.loads(live["timeline"])}
        assert {(r["event_id"], r["customer_id"]) for r in orjson.loads(replayed["timeline"])} == (
            owners
        )
    finally:
        rebuilt.engine.dispose()


_COMPARED = (
    "customers",
    "customer_segments",
    "segment_history",
    "customer_aliases",
    "identity_nodes",
    "identity_edges",
)


def _sorted_rows(text: str) -> list[str]:
    return sorted(
        orjson.dumps(row, option=orjson.OPT_SORT_KEYS).decode() for row in orjson.loads(text)
    )


def _assert_bob_openable(env: Env, people: People) -> None:
    assert env.protector is not None
    bob = env.owner(people.bob[0])
    raws = [r["event"] for r in env.rows(timeline, timeline.c.customer_id == bob)]
    opened = {e.event_id: e for e in map(parse_event, env.protector.open_all(raws))}
    for event in people.bob:
        assert opened[event.event_id] == event
    assert _customer(env, bob)["display_name"] == "Roberto Bobsonson"
    assert env.store.customer_for("email", BOB_EMAIL) == bob


def test_export_holds_exactly_the_persons_events(make_env: Callable[..., Env]) -> None:
    env = make_env()
    people = _populate(env)
    bob, ana = env.owner(people.bob[0]), env.owner(people.ana[-1])
    with env.store.engine.connect() as conn:
        export = export_subject(conn, bob, env.protector, now=_at(90))
        ana_export = export_subject(conn, ana, env.protector, now=_at(90))
    assert export is not None and ana_export is not None
    ids = {e["event_id"] for e in export["events"]}
    appended = {str(e.event_id) for e in people.bob}
    derived = {
        r["event_id"]
        for r in env.rows(timeline, timeline.c.customer_id == bob)
        if r["source_system"] != "test"
    }
    assert derived and ids == appended | derived
    assert not ids & {str(e.event_id) for e in people.ana}
    assert {e["type"] for e in export["events"] if e["event_id"] in derived} == {"segment.entered"}
    text = orjson.dumps(export).decode()
    assert BOB_EMAIL in text and "Avenida da Boavista" in text
    assert {"kind": "email", "value": BOB_EMAIL, "shared": False} in export["identifiers"]
    assert export["profile"]["first_name"] == "Roberto"
    assert not [s for s in ANA_SECRETS if s in text]
    for event in export["events"]:
        assert "pii" not in event
        if event["event_id"] in appended:
            assert parse_event(event) in people.bob
    assert ANA_EMAIL in orjson.dumps(ana_export).decode()  # before her erasure

    _erase(env, ana)
    with env.store.engine.connect() as conn:
        erased_export = export_subject(conn, ana, env.protector, now=_at(90))
    assert erased_export is not None and erased_export["erased_at"] is not None
    text = orjson.dumps(erased_export).decode()
    assert not [s for s in ANA_SECRETS if s in text]
    assert erased_export["profile"] == {}
    assert {i["kind"] for i in erased_export["identifiers"]} <= {"account_id"}  # not personal
    assert {str(e.event_id) for e in people.ana} <= {e["event_id"] for e in erased_export["events"]}


def test_a_redelivered_erasure_request_erases_once(make_env: Callable[..., Env]) -> None:
    env = make_env()
    assert env.protector is not None
    people = _populate(env)
    ana, bob = env.owner(people.ana[-1]), env.owner(people.bob[0])
    keystore = env.protector.keystore
    assert isinstance(keystore, SqlKeyStore)
    calls: list[tuple[set[str], int]] = []
    destroy = keystore.destroy

    def counting_destroy(kids: Any) -> int:
        destroyed = destroy(kids)
        calls.append((set(kids), destroyed))
        return destroyed

    keystore.destroy = counting_destroy  # type: ignore[method-assign]
    bob_subject = protector_node(env, "email", BOB_EMAIL)  # Bob's events name his email only
    with keystore.engine.connect() as conn:
        bob_kid = conn.execute(
            sa.select(data_keys.c.kid).where(data_keys.c.subject == bob_subject)
        ).scalar_one()
    bob_kids = {_kid(env, e) for e in people.bob}
    assert bob_kids == {bob_kid} == {keystore.subject_keys([bob_subject])[bob_subject][0]}
    ana_kids = {_kid(env, e) for e in people.ana}

    env.clock.now = _at(60)
    request = request_erasure(env.log, ana, now=_at(60))
    env.append([request])  # the same request twice in one batch
    env.settle()
    env.append([request])  # and redelivered in a later one
    assert env.settle() >= 1
    assert env.settle() == 0
    env.store.apply_batch(TOPIC, list(env.raw.read()))  # every record again: checkpoints

    erased = env.rows(timeline, timeline.c.type == "customer.erased")
    assert len(erased) == 1 and erased[0]["customer_id"] == ana
    assert len(calls) == 1, calls
    kids, destroyed = calls[0]
    assert destroyed == parse_event(erased[0]["event"]).payload.keys_destroyed  # type: ignore[attr-defined]
    assert kids == ana_kids and destroyed == len(ana_kids) >= 3
    assert not bob_kids & kids
    assert keystore.keys([bob_kid]) != {}
    requests = env.rows(timeline, timeline.c.type == "customer.erasure_requested")
    assert len(requests) == 1
    assert _member(env, bob) is True


def test_an_event_arriving_after_the_erasure_has_its_key_destroyed(
    make_env: Callable[..., Env],
) -> None:
    env = make_env()
    assert env.protector is not None
    keystore = env.protector.keystore
    people = _populate(env)
    ana = env.owner(people.ana[-1])
    _erase(env, ana)
    erased_kids = {_kid(env, e) for e in people.ana}
    assert keystore.keys(erased_kids) == {}
    erased_at = _customer(env, ana)["erased_at"]

    # live, after the erasure: an order naming her email only (a subject whose key the
    # erasure destroyed: sealed under a new key) and a ticket naming her email and
    # phone (a subject never seen before)
    order = _order(Identifiers(email="Ana.Silva@Example.com"), 120, "o-3", "7.50")
    ticket = _event(
        "ticket.opened",
        Identifiers(email=ANA_EMAIL, phone=ANA_PHONE),
        121,
        ticket_id="t-9",
        subject="Broken zipper on the red jacket, again",
    )
    env.append([order, ticket])
    late_kids = {_kid(env, e) for e in (order, ticket)}
    assert len(late_kids) == 2 and not late_kids & erased_kids
    assert keystore.keys(late_kids).keys() == late_kids  # readable until processed
    assert _opened_from_log(env, ticket)["payload"]["subject"].endswith(", again")
    env.settle()

    assert {env.owner(e) for e in (order, ticket)} == {ana}
    assert keystore.keys(late_kids) == {}
    email_hash = env.protector.hasher.lookup("email", ANA_EMAIL)
    for event in (order, ticket):
        opened = _opened_from_log(env, event)  # the sealed form: hashes and placeholders
        assert "pii" not in opened
        assert not [s for s in ANA_SECRETS if s in orjson.dumps(opened).decode()]
        sealed = parse_event(opened)
        assert sealed.event_id == event.event_id and sealed.pii is None
        assert sealed.identifiers is not None and sealed.identifiers.email == email_hash
    assert _opened_from_log(env, ticket)["payload"]["subject"] == REDACTED

    # the order still counts; the customer stays erased, once, with nothing personal
    after = _customer(env, ana)
    assert (after["order_count"], after["revenue_by_currency"]) == (3, {"EUR": "50.00"})
    assert after["erased_at"] == erased_at
    assert _member(env, ana) is False
    assert len(env.rows(timeline, timeline.c.type == "customer.erased")) == 1
    assert _leaks(env.store, ANA_SECRETS) == {}
    _assert_bob_openable(env, people)


def test_erasure_through_a_merged_id_reaches_the_person(make_env: Callable[..., Env]) -> None:
    """Ana is first a device, then in ONE batch her registration (email + device: the
    device customer merges into a new email customer) and an order (account + email: the
    new email customer merges into a new account customer)."""
    env = make_env()  # one partition: a batch keeps the append order
    browse = _event(
        "web.page_viewed", Identifiers(device_id=ANA_DEVICE), 1, url="https://shop.example/"
    )
    env.append([browse])
    env.settle()
    device_customer = env.owner(browse)
    assert device_customer == customer_id_for(protector_node(env, "device_id", ANA_DEVICE))
    registered = _event(
        "customer.registered",
        Identifiers(email=ANA_EMAIL, device_id=ANA_DEVICE),
        2,
        first_name="Anabela",
    )
    order = _order(Identifiers(account_id=ANA_ACCOUNT, email=ANA_EMAIL), 3, "o-1", "40.00")
    env.append([registered, order])
    env.settle()
    ana = env.owner(order)
    assert {env.owner(e) for e in (browse, registered)} == {ana}
    assert ana == customer_id_for(f"account_id:{ANA_ACCOUNT}")
    # the device customer's identity.merged names the email customer as survivor, new
    # in the batch and merged on into the account customer: that second merge is told
    # too, so the device customer's id keeps resolving to Ana.
    aliases = {r["alias"]: r["customer_id"] for r in env.rows(customer_aliases)}
    assert env.store.resolve(device_customer) == ana, (
        f"the merged id {device_customer} no longer resolves to {ana}; aliases: {aliases}"
    )
    _erase(env, device_customer)
    assert _customer(env, ana)["erased_at"] is not None, "the erasure missed Ana"
    assert not env.rows(customers, customers.c.customer_id == device_customer)
    assert _leaks(env.store, ANA_SECRETS) == {}


# --- erasure and shared identifiers (the key subject is the event's identifier *set*) ---


def _family_and_ana(env: Env) -> tuple[Envelope, Envelope]:
    family = [
        _event(
            "customer.registered",
            Identifiers(email=f"member{i}@example.com", phone="+14155550199"),
            i,
            first_name=f"Member{i}",
        )
        for i in range(4)
    ]
    for event in family:  # one batch each: merged, then split by the guard
        env.append([event])
        env.settle()
    registered = _event(
        "customer.registered",
        Identifiers(email=ANA_EMAIL, device_id=ANA_DEVICE),
        10,
        first_name="Anabela",
    )
    # Ana calls from the family phone: the event is hers (through her device), and its
    # first identifier is the shared phone (once the subject of its data key).
    ticket = _event(
        "ticket.opened",
        Identifiers(phone="+14155550199", device_id=ANA_DEVICE),
        11,
        ticket_id="t-7",
        subject="Broken zipper on the red jacket",
    )
    env.append([registered, ticket])
    env.settle()
    return registered, ticket


def _opened_from_log(env: Env, event: Envelope) -> dict[str, Any]:
    assert env.protector is not None
    [record] = [
        r for r in env.raw.read() if orjson.loads(r.value)["event_id"] == str(event.event_id)
    ]
    [opened] = env.protector.open_all([orjson.loads(record.value)])
    return opened


def test_erasure_shreds_events_whose_key_subject_is_a_shared_identifier(
    make_env: Callable[..., Env],
) -> None:
    env = make_env()
    registered, ticket = _family_and_ana(env)
    ana = env.owner(registered)
    assert env.owner(ticket) == ana
    phone_owner = env.store.customer_for("phone", "+14155550199")
    assert phone_owner is not None and phone_owner != ana
    _erase(env, ana)
    assert _leaks(env.store, ANA_SECRETS) == {}  # the projections are clean
    opened = _opened_from_log(env, ticket)
    # the ticket's key (subject: phone + device) sealed only Ana's event and went with
    # her erasure, although the shared phone is not one of Ana's identity nodes
    assert opened["payload"]["subject"] == REDACTED, (
        "Ana's erased ticket subject is still recoverable from the log: "
        f"{opened['payload']['subject']!r}"
    )
    assert env.protector is not None
    assert env.protector.keystore.keys([_kid(env, ticket)]) == {}
    # the family's events, sealed under keys of their own, are untouched
    for record in env.raw.read():
        data = orjson.loads(record.value)
        if data["type"] == "customer.registered" and data["event_id"] != str(registered.event_id):
            [member] = env.protector.open_all([data])
            assert member["payload"]["first_name"].startswith("Member")


def test_erasing_a_shared_identifiers_customer_keeps_other_peoples_data(
    make_env: Callable[..., Env],
) -> None:
    env = make_env()
    _, ticket = _family_and_ana(env)
    phone_owner = env.store.customer_for("phone", "+14155550199")
    assert phone_owner is not None
    # a call seen only through the shared phone: the phone's own customer's event
    call = _event(
        "call.logged",
        Identifiers(phone="+14155550199"),
        12,
        call_id="c-7",
        direction="inbound",
        duration_seconds=20,
        notes="Someone at the family phone asked for a catalogue",
    )
    env.append([call])
    env.settle()
    assert env.owner(call) == phone_owner
    assert _opened_from_log(env, call)["payload"]["notes"].endswith("catalogue")
    _erase(env, phone_owner)
    [erased] = env.rows(timeline, timeline.c.type == "customer.erased")
    assert parse_event(erased["event"]).payload.keys_destroyed == 1  # type: ignore[attr-defined]
    shredded = _opened_from_log(env, call)  # optional personal fields are left out
    assert "notes" not in shredded["payload"] and b"catalogue" not in orjson.dumps(shredded)
    opened = _opened_from_log(env, ticket)
    # erasing the customer of the shared phone destroys the keys of its own events
    # only: Ana's ticket (first identifier the shared phone) stays readable
    assert opened["payload"]["subject"] == "Broken zipper on the red jacket", (
        "erasing the shared phone's customer shredded an event of another customer"
    )


def test_erasure_shreds_a_customer_merged_in_by_the_same_batch(
    make_env: Callable[..., Env],
) -> None:
    """The merge and the erasure request in one batch: the merged customer's stored
    events are still under its old id when the keys are collected."""
    env = make_env(protect=True, partitions=1)
    browse = _event(
        "ticket.opened", Identifiers(device_id=ANA_DEVICE), 1,
        ticket_id="t-0", subject="Broken zipper on the red jacket",
    )  # fmt: skip
    order = _order(Identifiers(account_id=ANA_ACCOUNT, email=ANA_EMAIL), 2, "o-1", "40.00")
    env.append([browse])
    env.settle()
    env.append([order])
    env.settle()
    account_customer = env.owner(order)
    assert env.owner(browse) != account_customer
    link = _event(
        "web.page_viewed", Identifiers(account_id=ANA_ACCOUNT, device_id=ANA_DEVICE), 3,
        url="https://shop.example/",
    )  # fmt: skip
    request = new_event(
        CustomerErasureRequested(reason="art. 17"),
        source=PRIVACY_SOURCE,
        identifiers=Identifiers(customer_id=account_customer),
        occurred_at=_at(4),
    )
    env.clock.now = _at(60)
    env.append([link, request])
    env.settle()
    assert env.owner(browse) == account_customer
    assert _customer(env, account_customer)["erased_at"] is not None
    assert _opened_from_log(env, browse)["payload"]["subject"] == REDACTED
    assert not _leaks(env.store, ["Broken zipper", ANA_EMAIL])


def test_a_merge_after_the_erasure_shreds_the_customer_it_pulls_in(
    make_env: Callable[..., Env],
) -> None:
    """Erasure wins a merge: the other customer's events lose their keys too."""
    env = make_env(protect=True, partitions=1)
    order = _order(Identifiers(account_id=ANA_ACCOUNT, email=ANA_EMAIL), 2, "o-1", "40.00")
    work = _event(
        "ticket.opened", Identifiers(email="ana.work@example.com"), 3,
        ticket_id="t-w", subject="Work laptop stolen from car",
    )  # fmt: skip
    env.append([order, work])
    env.settle()
    erased = env.owner(order)
    assert env.owner(work) != erased
    _erase(env, erased)
    assert _opened_from_log(env, work)["payload"]["subject"] == "Work laptop stolen from car"
    links = [
        _event("web.page_viewed", Identifiers(email=ANA_EMAIL, phone=ANA_PHONE), 70, url="https://x/"),
        _event("web.page_viewed", Identifiers(phone=ANA_PHONE, email="ana.work@example.com"), 71,
               url="https://x/"),
    ]  # fmt: skip
    env.append(links)
    env.settle()
    survivor = env.owner(work)
    assert survivor == env.owner(order)
    assert _customer(env, survivor)["erased_at"] is not None
    assert _opened_from_log(env, work)["payload"]["subject"] == REDACTED
    assert not _leaks(env.store, ["Work laptop", "ana.work@example.com"])
