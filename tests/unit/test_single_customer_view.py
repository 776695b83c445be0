"""The single customer view on the embedded SQLite store: order-insensitivity against the
specification, duplicates, identity scenarios (merges, aliases, the shared guard)."""

from __future__ import annotations

import random
import tempfile
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from events.codec import decode_event
from producers.synthetic import SyntheticTouchpoints
from projections.identity import customer_id_for
from projections.sql import create_engine_for
from projections.store import SqlProjectionStore
from projections.tables import customers, identity_nodes, outbox
from schemas import CATALOG, Channel, Identifiers, Source, new_event
from tests.projection_harness import (
    TOPIC,
    apply_in_batches,
    as_records,
    expected,
    membership_rows,
    projected,
)


def _store(path: Path, threshold: int = 3) -> SqlProjectionStore:
    store = SqlProjectionStore(
        create_engine_for(None, path / "p.sqlite3"), shared_threshold=threshold
    )
    store.create()
    return store


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SqlProjectionStore]:
    s = _store(tmp_path)
    yield s
    s.engine.dispose()


# a history, its order and batching, and the shared-identifier threshold
HISTORIES = {
    "seed": st.integers(0, 10_000),
    "people": st.integers(3, 60),
    "count": st.integers(20, 250),
    "shuffle": st.randoms(use_true_random=False),
    "batch": st.integers(1, 120),
    "threshold": st.sampled_from([1, 2, 3]),
}
examples = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@examples
@given(**HISTORIES, duplicates=st.floats(0, 0.3))
def test_any_order_batching_and_duplicates_give_the_specified_view(
    seed: int,
    people: int,
    count: int,
    shuffle: random.Random,
    duplicates: float,
    batch: int,
    threshold: int,
) -> None:
    events = list(SyntheticTouchpoints(customers=people, seed=seed).events(count))
    stream = events + [e for e in events if shuffle.random() < duplicates]
    shuffle.shuffle(stream)
    with tempfile.TemporaryDirectory() as tmp:
        store = _store(Path(tmp), threshold)
        records = as_records(stream)
        apply_in_batches(store, records, (shuffle.randint(1, batch) for _ in records))
        # Redelivery of everything changes nothing (checkpoints), nor does a replay of
        # the same events at new offsets (timeline dedupe).
        store.apply_batch(TOPIC, records)
        store.apply_batch(TOPIC, as_records(stream, start=len(records)))
        got = projected(store)
        rows, rows_wanted = membership_rows(store)
        store.engine.dispose()
    want = expected(events, threshold)
    assert got[0] == want[0], "event -> customer assignment differs from the specification"
    assert got[1] == want[1], "customer 360 differs from the fold of the customer's events"
    assert rows == rows_wanted, "segment and campaign rows differ from the customers' states"


@examples
@given(**HISTORIES, retain=st.integers(1, 80))
def test_a_rebuild_keeping_customers_in_memory_gives_the_same_view(
    seed: int,
    people: int,
    count: int,
    shuffle: random.Random,
    batch: int,
    threshold: int,
    retain: int,
) -> None:
    """Customers retained between batches (written when more than ``retain`` are kept,
    and at the end) give the rows of a rebuild that writes every batch, identity nodes
    and their neighbour counts included."""
    events = list(SyntheticTouchpoints(customers=people, seed=seed).events(count))
    shuffle.shuffle(events)
    records = as_records(events)
    sizes = [shuffle.randint(1, batch) for _ in records]
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for kept in (0, retain):
            engine = create_engine_for(None, Path(tmp) / f"p{kept}.sqlite3")
            store = SqlProjectionStore(engine, shared_threshold=threshold, live=False, retain=kept)
            store.create()
            apply_in_batches(store, records, sizes)
            store.write_retained()
            with engine.connect() as conn:
                nodes = sorted(tuple(row) for row in conn.execute(sa.select(identity_nodes)))
            rows, rows_wanted = membership_rows(store)
            assert rows == rows_wanted, "segment and campaign rows differ from the states"
            results.append((projected(store), nodes))
            engine.dispose()
    assert results[1] == results[0]
    assert results[0][0] == expected(events, threshold)


def _at(minutes: int) -> datetime:
    return datetime(2026, 5, 1, 9, 0, tzinfo=UTC) + timedelta(minutes=minutes)


def _event(type_: str, channel: Channel, when: int, ids: Identifiers, **payload: object):  # type: ignore[no-untyped-def]
    return new_event(
        CATALOG[type_].payload(**payload),
        source=Source(system="test", channel=channel),
        identifiers=ids,
        occurred_at=_at(when),
    )


def test_three_touchpoints_merge_into_one_customer_and_old_ids_resolve(
    store: SqlProjectionStore,
) -> None:
    web = _event(
        "web.page_viewed",
        Channel.WEB,
        1,
        Identifiers(device_id="dev-9"),
        url="https://shop.example.com/",
    )
    login = _event(
        "web.page_viewed",
        Channel.WEB,
        2,
        Identifiers(device_id="dev-9", email=" Ana.Silva@Example.COM "),
        url="https://shop.example.com/account",
    )
    call = _event(
        "call.logged",
        Channel.CALL_CENTRE,
        3,
        Identifiers(phone="(415) 555-0123", account_id="ACC-1"),
        call_id="c1",
        direction="inbound",
        duration_seconds=60,
    )
    order = _event(
        "order.placed",
        Channel.ECOMMERCE,
        4,
        Identifiers(account_id="ACC-1", email="ana.silva@example.com"),
        order_id="o1",
        currency="EUR",
        total="10.00",
        lines=[{"sku": "A", "quantity": 1, "unit_price": "10.00"}],
    )
    for offset, event in enumerate([web, call, login, order]):
        store.apply_batch(TOPIC, as_records([event], start=offset))

    survivor = customer_id_for("account_id:ACC-1")
    device_customer = customer_id_for("device_id:dev-9")
    email_customer = customer_id_for("email:ana.silva@example.com")
    for kind, value in [
        ("device_id", "dev-9"),
        ("email", "ana.silva@example.com"),
        ("phone", "+14155550123"),
        ("account_id", "ACC-1"),
    ]:
        assert store.customer_for(kind, value) == survivor
    owners, states = projected(store)
    assert set(owners.values()) == {survivor}
    assert states[survivor]["event_count"] == 4

    # The merges were appended to the log (via the outbox); reading them back is what
    # makes the old ids resolve, so a rebuild from the log resolves them the same way.
    with store.engine.connect() as conn:
        merges = [decode_event(v) for v in conn.execute(sa.select(outbox.c.value)).scalars()]
        assert conn.execute(sa.select(sa.func.count()).select_from(customers)).scalar() == 1
    assert all(m.type == "identity.merged" and m.identifiers.customer_id for m in merges)  # type: ignore[union-attr]
    merged_ids = {m.payload.merged_id for m in merges}  # type: ignore[attr-defined]
    assert device_customer in merged_ids or email_customer in merged_ids
    assert store.resolve(device_customer) is None  # not yet: the merge events are not read
    store.apply_batch(TOPIC, as_records(merges, start=10))
    assert store.resolve(device_customer) == survivor
    assert store.resolve(email_customer) == survivor
    assert store.resolve(survivor) == survivor
    assert store.resolve("cus_unknown") is None


def test_a_shared_phone_does_not_merge_a_household(store: SqlProjectionStore) -> None:
    family = [f"member{i}@example.com" for i in range(5)]
    events = [
        _event(
            "customer.registered",
            Channel.WEB,
            i,
            Identifiers(email=email, phone="+14155550199"),
            first_name=f"M{i}",
        )
        for i, email in enumerate(family)
    ]
    calls = [
        _event(
            "call.logged",
            Channel.CALL_CENTRE,
            10,
            Identifiers(phone="+14155550199"),
            call_id="c",
            direction="inbound",
            duration_seconds=5,
        )
    ]
    # One batch per event: the first three members ARE merged through the phone
    # before the fourth makes it shared; the guard must then split them again.
    for offset, event in enumerate(events + calls):
        store.apply_batch(TOPIC, as_records([event], start=offset))
    owners = {store.customer_for("email", email) for email in family}
    assert owners == {customer_id_for(f"email:{email}") for email in family}
    phone_owner = store.customer_for("phone", "+14155550199")
    assert phone_owner == customer_id_for("phone:+14155550199")
    assert phone_owner is not None
    _, states = projected(store)
    assert states[phone_owner]["event_count"] == 1  # the call, seen only through the phone
    assert all(o is not None and states[o]["event_count"] == 1 for o in owners)
    assert projected(store) == expected(events + calls, 3)


def test_guard_threshold_is_configurable(tmp_path: Path) -> None:
    store = _store(tmp_path, threshold=10)
    events = [
        _event(
            "customer.registered",
            Channel.WEB,
            i,
            Identifiers(email=f"m{i}@example.com", phone="+14155550199"),
            first_name="M",
        )
        for i in range(5)
    ]
    store.apply_batch(TOPIC, as_records(events))
    assert len({store.customer_for("email", f"m{i}@example.com") for i in range(5)}) == 1


def test_undecodable_records_become_dead_letters_and_the_batch_goes_on(
    store: SqlProjectionStore,
) -> None:
    good = list(SyntheticTouchpoints(customers=3, seed=1).events(5))
    records = as_records(good)
    bad = records[2].__class__(TOPIC, 0, 99, 0, b"k", b'{"type": "nope"}', ())
    assert store.apply_batch(TOPIC, [*records, bad]) == 6
    with store.engine.connect() as conn:
        letters = conn.execute(sa.select(outbox).where(outbox.c.target == "deadletters")).all()
    assert len(letters) == 1 and letters[0].value == b'{"type": "nope"}'
    assert any(k == "crm-error" and "unknown event type" in v for k, v in letters[0].headers)
    assert store.checkpoints(TOPIC) == {0: 100}
    assert len(projected(store)[0]) == 5
