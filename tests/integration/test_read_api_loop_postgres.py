"""The read API's closed-loop endpoints over projections in real PostgreSQL (a unique
schema), built by the projection store from a small run of the loop on the embedded log."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from auth import Scope, SqlApiKeyStore
from crm.devservices.testing import TestServices
from events.sqlite import SqliteEventLog
from projections import planning
from projections.sql import create_engine_for
from projections.store import SqlProjectionStore, outbox_publisher
from projections.tables import customer_segments
from read_api import create_app, create_read_engine
from tests.closed_loop import Clock
from tests.unit.test_read_api_loop import TOPIC, Loop, _approx, build_loop

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def loop(services: TestServices, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Loop]:
    tmp: Path = tmp_path_factory.mktemp("read_api_loop_pg")
    suffix = uuid.uuid4().hex[:8]
    schema, auth_schema = f"readloop_{suffix}", f"readloop_auth_{suffix}"
    event_log = SqliteEventLog(tmp / "log.sqlite3", TOPIC, partitions=4)
    dead = SqliteEventLog(tmp / "log.sqlite3", "crm.deadletters", partitions=1)
    clock = Clock()
    writer = create_engine_for(services.database_url, None)  # type: ignore[arg-type]
    store = SqlProjectionStore(
        writer, schema=schema, publish=outbox_publisher(event_log, dead), clock=clock
    )
    store.create()
    reader = create_read_engine(services.database_url, None)  # type: ignore[arg-type]
    try:
        build_loop(event_log, store, clock, customers_n=80)
        key_store = SqlApiKeyStore(writer, schema=auth_schema)
        keys = {s: key_store.create(f"t-{s}", [Scope(s)]).plaintext for s in ("read", "analyst")}
        app = create_app(reader, key_store, topic=TOPIC, schema=schema)
        yield Loop(store, TestClient(app), keys)
    finally:
        reader.dispose()
        with writer.begin() as conn:
            for name in (schema, auth_schema):
                conn.execute(sa.text(f'DROP SCHEMA IF EXISTS "{name}" CASCADE'))
        writer.dispose()


def test_segments_and_members_on_postgres(loop: Loop) -> None:
    body = loop.get("/v1/segments").json()
    by_id = {s["segment_id"]: s for s in body["data"]}
    assert (by_id["buyers"]["version"], by_id["loyal"]["status"]) == (2, "retired")
    cs = customer_segments
    expected = sorted(
        loop.scalars(
            sa.select(cs.c.customer_id).where(
                cs.c.segment_id == "buyers", cs.c.version == 2, cs.c.member
            )
        )
    )
    assert by_id["buyers"]["member_count"] == len(expected) > 0
    walked = loop.walk("/v1/segments/buyers/members", limit=5)
    assert [m["customer_id"] for m in walked] == expected
    history = loop.walk("/v1/segments/buyers/history", limit=25)
    stamps = [(h["occurred_at"], h["event_id"]) for h in history]
    assert stamps == sorted(stamps, reverse=True) and len(set(stamps)) == len(stamps)
    found = loop.walk("/v1/customers", segment="buyers", limit=20)
    assert sorted(c["customer_id"] for c in found) == expected


def test_campaign_results_and_assessments_on_postgres(loop: Loop) -> None:
    assert loop.get("/v1/campaigns/spring/results", "read").status_code == 403
    body = loop.get("/v1/campaigns/spring/results", "analyst").json()
    expected = planning.campaign_results(loop.store, "spring")
    for name, funnel in expected.groups.items():
        assert body["groups"][name]["customers"] == funnel.customers
        assert body["groups"][name]["converted"] == funnel.converted
        assert body["groups"][name]["revenue"] == {k: str(v) for k, v in funnel.revenue.items()}
    assert body["conversion_uplift"] == _approx(asdict(expected.conversion_uplift))
    runs = loop.walk("/v1/assessments", "analyst", limit=1)
    assert [r["run_id"] for r in runs] == ["cycle-2", "cycle-1"]
    latest = loop.get("/v1/assessments/latest", "analyst").json()
    assert latest["run_id"] == "cycle-2" and latest["summary"]["rfm_segments"]
