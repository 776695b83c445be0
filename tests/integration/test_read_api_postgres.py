"""The read API served by uvicorn over projections in real PostgreSQL (a unique schema),
built by the projection store from synthetic events; prints 360-lookup latency figures."""

from __future__ import annotations

import asyncio
import statistics
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx2
import pytest
import sqlalchemy as sa

from auth import Scope, SqlApiKeyStore
from crm.devservices.testing import TestServices
from events.codec import decode_event
from producers.synthetic import SyntheticTouchpoints
from projections.sql import create_engine_for
from projections.store import SqlProjectionStore
from projections.tables import outbox
from read_api import create_app, create_read_engine
from read_api import notices as notices_module
from read_api.freshness import PositionWatch
from read_api.notices import PostgresCheckpointNotices
from read_api.store import ReadStore
from schemas import Channel, Identifiers
from tests.integration.test_gateway_kafka import served
from tests.projection_harness import TOPIC, as_records
from tests.unit.test_read_api import MERGED, SURVIVOR, _event, ana_events


@dataclass
class Served:
    store: SqlProjectionStore
    client: httpx2.Client
    keys: dict[str, str]
    ends: dict[int, int]

    def get(self, url: str, key: str = "read", **params: Any) -> httpx2.Response:
        return self.client.get(
            url, params=params, headers={"Authorization": f"Bearer {self.keys[key]}"}
        )


@pytest.fixture(scope="module")
def api(services: TestServices) -> Iterator[Served]:
    suffix = uuid.uuid4().hex[:8]
    schema, auth_schema = f"readapi_{suffix}", f"readapi_auth_{suffix}"
    writer = create_engine_for(services.database_url, None)  # type: ignore[arg-type]
    store = SqlProjectionStore(writer, schema=schema)
    store.create()
    for offset, event in enumerate(ana_events()):
        store.apply_batch(TOPIC, as_records([event], start=offset))
    with store.engine.connect() as conn:
        merges = [decode_event(v) for v in conn.execute(sa.select(outbox.c.value)).scalars()]
    store.apply_batch(TOPIC, as_records(merges, start=4))
    synthetic = list(SyntheticTouchpoints(customers=300, seed=11).events(4_000))
    records = as_records(synthetic, partition=1)
    for start in range(0, len(records), 500):
        store.apply_batch(TOPIC, records[start : start + 500])
    key_store = SqlApiKeyStore(writer, schema=auth_schema)
    keys = {s: key_store.create(f"t-{s}", [Scope(s)]).plaintext for s in ("read", "ingest")}
    # as `crm api serve` builds it: the schema through the connections' search_path
    reader = create_read_engine(services.database_url, None, schema=schema)  # type: ignore[arg-type]
    app = create_app(reader, key_store, topic=TOPIC, schema=schema)
    ends = {0: 4 + len(merges), 1: len(records)}
    try:
        with served(app) as url, httpx2.Client(base_url=url, timeout=30) as client:
            yield Served(store, client, keys, ends)
    finally:
        reader.dispose()
        with writer.begin() as conn:
            for name in (schema, auth_schema):
                conn.execute(sa.text(f'DROP SCHEMA IF EXISTS "{name}" CASCADE'))
        writer.dispose()


def test_search_360_aliases_and_timeline(api: Served) -> None:
    for identifier in ("email: Ana.Silva@EXAMPLE.com", "phone:(415) 555-0123", "account_id:ACC-1"):
        body = api.get("/v1/customers", identifier=identifier).json()
        assert [c["customer_id"] for c in body["data"]] == [SURVIVOR]
        assert body["freshness"]["positions"] == {str(p): o for p, o in api.ends.items()}
    alias = next(iter(MERGED - {SURVIVOR}))
    body = api.get(f"/v1/customers/{alias}").json()
    assert body["customer_id"] == SURVIVOR and body["resolved_from"] == alias
    assert body["display_name"] == "Ana Silva" and body["revenue"] == {"EUR": "10.00"}
    timeline = api.get(f"/v1/customers/{alias}/timeline", limit=3).json()
    assert [e["type"] for e in timeline["data"]] == [
        "order.placed",
        "call.logged",
        "customer.registered",
    ]
    rest = api.get(f"/v1/customers/{alias}/timeline", cursor=timeline["next_cursor"]).json()
    assert [e["type"] for e in rest["data"]] == ["web.page_viewed"] and not rest["next_cursor"]
    assert api.get("/v1/customers/cus_nobody").status_code == 404


def test_keyset_pages_cover_everyone_once(api: Served) -> None:
    for sort in ("-last_seen", "order_count"):
        seen, cursor = [], None
        while True:
            params: dict[str, Any] = {"limit": 37, "sort": sort}
            if cursor:
                params["cursor"] = cursor
            body = api.get("/v1/customers", **params).json()
            seen += [c["customer_id"] for c in body["data"]]
            cursor = body["next_cursor"]
            if not cursor:
                break
        assert len(seen) == len(set(seen)) > 100


def test_scopes_and_bad_parameters(api: Served) -> None:
    assert api.client.get(f"/v1/customers/{SURVIVOR}").status_code == 401
    assert api.get(f"/v1/customers/{SURVIVOR}", key="ingest").status_code == 403
    assert api.get("/v1/customers", cursor="garbage").status_code == 422
    assert api.get("/v1/customers", identifier="fax:1").status_code == 422
    assert api.get("/v1/customers", limit=500).status_code == 422


def test_min_position_waits_for_a_concurrent_batch(api: Served) -> None:
    late = _event(
        "customer.registered",
        Channel.STORE,
        90,
        Identifiers(email="late@example.com"),
        first_name="Late",
    )
    target = api.ends[0] + 1

    def apply_later() -> None:
        time.sleep(0.3)
        api.store.apply_batch(TOPIC, as_records([late], start=api.ends[0]))

    thread = threading.Thread(target=apply_later)
    thread.start()
    body = api.get(
        "/v1/customers",
        identifier="email:late@example.com",
        min_position=f"0:{target}",
        wait_ms=5_000,
    ).json()
    thread.join()
    api.ends[0] = target
    assert body["freshness"]["caught_up"] is True and len(body["data"]) == 1
    assert api.client.get("/readyz").status_code == 200
    assert f'partition="0"}} {target}' in api.client.get("/metrics").text


def test_a_waiting_read_wakes_on_the_commit_notice_not_a_poll(
    api: Served, services: TestServices, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The checkpoints trigger notifies; with polls 30 s apart only a notice can wake
    the waiter before its 5 s are up."""
    monkeypatch.setattr(notices_module, "FALLBACK_S", 30.0)
    reader = create_read_engine(services.database_url, None, schema=api.store.schema)  # type: ignore[arg-type]
    read = ReadStore(reader, TOPIC, schema=api.store.schema)
    notices = PostgresCheckpointNotices(reader, api.store.schema)
    watch = PositionWatch(read.positions, poll_s=30.0, notices=notices)
    late = _event(
        "customer.registered", Channel.WEB, 91, Identifiers(email="n@example.com"), first_name="N"
    )
    target = api.ends[0] + 1

    async def scenario() -> tuple[bool, float]:
        waiting = asyncio.create_task(watch.wait({0: target}, 10_000))
        for _ in range(100):  # the first read done, the watch starts listening
            if notices.listening:
                break
            await asyncio.sleep(0.05)
        assert notices.listening
        started = time.monotonic()
        await asyncio.to_thread(api.store.apply_batch, TOPIC, as_records([late], start=api.ends[0]))
        return await waiting, time.monotonic() - started

    try:
        reached, seconds = asyncio.run(scenario())
    finally:
        notices.close()
        reader.dispose()
    api.ends[0] = target
    assert reached and seconds < 4.0


def test_customer_360_latency_figures(api: Served) -> None:
    ids = [c["customer_id"] for c in api.get("/v1/customers", limit=200).json()["data"]]
    headers = {"Authorization": f"Bearer {api.keys['read']}"}
    timings = []
    for i in range(500):
        started = time.perf_counter()
        r = api.client.get(f"/v1/customers/{ids[i % len(ids)]}", headers=headers)
        timings.append((time.perf_counter() - started) * 1e3)
        assert r.status_code == 200
    timings.sort()
    p50, p99 = statistics.median(timings), timings[int(len(timings) * 0.99) - 1]
    print(
        f"\n[figures] read API customer 360 over uvicorn (127.0.0.1, PostgreSQL): "
        f"{len(timings)} sequential requests, p50 {p50:.2f} ms, p99 {p99:.2f} ms"
    )
    assert p50 < 200
