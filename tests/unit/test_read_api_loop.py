"""The read API's closed-loop endpoints (segments, campaigns, assessments) over HTTP
(TestClient) on embedded SQLite projections built by the real projection store from a
small run of the loop: assess, define segments, evaluate, launch, respond, reassess."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import asdict, dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from auth import Scope, SqlApiKeyStore
from crm.demo import campaign_targets
from events.log import EventLog
from events.sqlite import SqliteEventLog
from producers.campaign_responses import Campaign, ResponseKnobs, simulate_responses
from projections import planning
from projections.assessment import run_assessment
from projections.queries import live_customer
from projections.sql import create_engine_for
from projections.store import SqlProjectionStore, outbox_publisher
from projections.tables import (
    assessment_runs,
    customer_aliases,
    customer_segments,
    customers,
    segment_history,
)
from read_api import create_app, create_read_engine
from schemas import Channel
from tests.closed_loop import FX, T1, T2, Clock, populate
from tests.unit.test_read_api import SURVIVOR, ana_events

TOPIC = "crm.events"


@dataclass
class Loop:
    store: SqlProjectionStore
    client: TestClient
    keys: dict[str, str]

    def get(self, url: str, key: str | None = "read", **params: Any) -> Any:
        headers = {} if key is None else {"Authorization": f"Bearer {self.keys[key]}"}
        return self.client.get(url, params=params, headers=headers)

    def walk(self, url: str, key: str = "read", **params: Any) -> list[dict[str, Any]]:
        """Every row of a paginated listing, following ``next_cursor``."""
        rows: list[dict[str, Any]] = []
        cursor = None
        for _ in range(10_000):
            extra: dict[str, str] = {} if cursor is None else {"cursor": cursor}
            answer = self.get(url, key, **params, **extra)
            assert answer.status_code == 200, answer.text
            body = answer.json()
            assert "freshness" in body
            rows += body["data"]
            cursor = body["next_cursor"]
            if cursor is None:
                return rows
        raise AssertionError("the cursor never ended")

    def scalars(self, query: sa.Select[Any]) -> list[Any]:
        with self.store.engine.connect() as conn:
            return list(conn.execute(query).scalars())


def build_loop(
    event_log: EventLog, store: SqlProjectionStore, clock: Clock, customers_n: int = 150
) -> None:
    """A small run of the loop: two assessments, three segments (one redefined, one
    retired), one campaign with responses."""
    populate(event_log, customers_n, customers_n * 14)
    planning.settle(event_log, store)
    for event in ana_events():  # one person under several ids, seen one batch at a time:
        event_log.append([event])  # stored customers merge, so old ids become aliases
        planning.settle(event_log, store)
    clock.now = T1
    run_assessment(event_log, store, now=T1, run_id="cycle-1", fx_rates=FX)
    planning.settle(event_log, store)
    for segment_id, rule in (
        ("buyers", {"field": "order_count", "op": "ge", "value": 1}),
        ("loyal", {"field": "order_count", "op": "ge", "value": 3}),
    ):
        planning.define_segment(
            event_log, store, segment_id=segment_id, name=segment_id.title(), rule=rule, now=T1
        )
    planning.settle(event_log, store)
    planning.evaluate_segments(event_log, store, now=T1)
    planning.settle(event_log, store)
    planning.launch_campaign(
        event_log,
        store,
        campaign_id="spring",
        name="Spring offer",
        segment_id="buyers",
        channel=Channel.EMAIL,
        now=T1,
        control_share=0.3,
    )
    planning.settle(event_log, store)
    knobs = ResponseKnobs(base_open_rate=0.5, conversion_base_rate=0.2, treatment_lift=2.0)
    targets = campaign_targets(store, "spring")
    campaign = Campaign("spring", Channel.EMAIL, T1, 14)
    event_log.append(list(simulate_responses(campaign, targets, seed=5, knobs=knobs)))
    clock.now = T2
    planning.settle(event_log, store)
    run_assessment(event_log, store, now=T2, run_id="cycle-2", fx_rates=FX)
    planning.settle(event_log, store)
    planning.define_segment(
        event_log,
        store,
        segment_id="buyers",
        name="Repeat buyers",
        rule={"field": "order_count", "op": "ge", "value": 2},
        now=T2,
    )
    planning.retire_segment(event_log, store, segment_id="loyal", now=T2 + timedelta(hours=1))
    planning.settle(event_log, store)
    planning.evaluate_segments(event_log, store, now=T2 + timedelta(hours=2))
    planning.settle(event_log, store)


@pytest.fixture(scope="module")
def loop(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Loop]:
    tmp: Path = tmp_path_factory.mktemp("read_api_loop")
    event_log = SqliteEventLog(tmp / "log.sqlite3", TOPIC, partitions=4)
    dead = SqliteEventLog(tmp / "log.sqlite3", "crm.deadletters", partitions=1)
    clock = Clock()
    store = SqlProjectionStore(
        create_engine_for(None, tmp / "projections.sqlite3"),
        publish=outbox_publisher(event_log, dead),
        clock=clock,
    )
    store.create()
    build_loop(event_log, store, clock)
    key_store = SqlApiKeyStore(create_engine_for(None, tmp / "auth.sqlite3"))
    keys = {
        scope: key_store.create(f"test-{scope}", [Scope(scope)]).plaintext
        for scope in ("read", "analyst", "admin")
    }
    engine = create_read_engine(None, tmp / "projections.sqlite3")
    yield Loop(store, TestClient(create_app(engine, key_store, topic=TOPIC)), keys)
    engine.dispose()
    store.engine.dispose()


def _members(loop: Loop, segment_id: str, version: int) -> list[str]:
    cs = customer_segments
    return sorted(
        loop.scalars(
            sa.select(cs.c.customer_id).where(
                cs.c.segment_id == segment_id, cs.c.version == version, cs.c.member
            )
        )
    )


# --- segments ---------------------------------------------------------------------------


def test_segments_list_latest_versions_with_status_and_member_counts(loop: Loop) -> None:
    answer = loop.get("/v1/segments")
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["freshness"]["topic"] == TOPIC and body["freshness"]["positions"]
    by_id = {s["segment_id"]: s for s in body["data"]}
    assert list(by_id) == ["buyers", "loyal"]
    buyers, loyal = by_id["buyers"], by_id["loyal"]
    assert (buyers["version"], buyers["versions"], buyers["status"]) == (2, 2, "active")
    assert buyers["name"] == "Repeat buyers" and buyers["retired_at"] is None
    assert buyers["rule"] == {"field": "order_count", "op": "ge", "value": 2}
    assert buyers["member_count"] == len(_members(loop, "buyers", 2)) > 0
    assert (loyal["status"], loyal["member_count"]) == ("retired", 0)
    assert loyal["retired_at"] is not None


def test_segment_definition_history_and_404(loop: Loop) -> None:
    body = loop.get("/v1/segments/buyers").json()
    assert [v["version"] for v in body["history"]] == [1, 2]
    assert [v["rule"]["value"] for v in body["history"]] == [1, 2]
    assert [v["name"] for v in body["history"]] == ["Buyers", "Repeat buyers"]
    assert body["history"][0]["defined_at"].startswith("2026-06-01")
    assert body["version"] == 2 and body["status"] == "active" and "freshness" in body
    for url in ("/v1/segments/nope", "/v1/segments/nope/members", "/v1/segments/nope/history"):
        answer = loop.get(url)
        assert answer.status_code == 404
        assert answer.json()["detail"] == "segment nope not found"


def test_segment_members_pages_and_cursors(loop: Loop) -> None:
    expected = _members(loop, "buyers", 2)
    first = loop.get("/v1/segments/buyers/members", limit=200).json()
    assert first["version"] == 2 and first["next_cursor"] is None
    assert [m["customer_id"] for m in first["data"]] == expected
    member = first["data"][0]
    assert set(member) == {"customer_id", "since", "display_name", "rfm_segment", "value_tier"}
    assert loop.walk("/v1/segments/buyers/members", limit=1) == first["data"]
    assert loop.walk("/v1/segments/buyers/members", limit=7) == first["data"]
    # the retired segment has no members left
    assert loop.get("/v1/segments/loyal/members").json()["data"] == []

    cursor = loop.get("/v1/segments/buyers/members", limit=1).json()["next_cursor"]
    for bad in ("garbage!", cursor[:-3] + "xyz"):
        assert loop.get("/v1/segments/buyers/members", cursor=bad).status_code == 422
    answer = loop.get("/v1/segments/loyal/members", cursor=cursor)
    assert answer.status_code == 422 and "another query" in answer.json()["detail"]
    for limit in (0, 201):
        assert loop.get("/v1/segments/buyers/members", limit=limit).status_code == 422


def test_segment_history_pages_newest_first(loop: Loop) -> None:
    sh = segment_history
    with loop.store.engine.connect() as conn:
        rows = conn.execute(
            sa.select(sh.c.event_id, sh.c.customer_id, sh.c.entered)
            .where(sh.c.segment_id == "buyers")
            .order_by(sh.c.occurred_at.desc(), sh.c.event_id.desc())
        ).all()
    full = loop.walk("/v1/segments/buyers/history", limit=200)
    assert [(h["event_id"], h["customer_id"], h["change"] == "entered") for h in full] == [
        tuple(r) for r in rows
    ]
    assert {h["change"] for h in full} == {"entered", "exited"}  # v2 is narrower
    stamps = [h["occurred_at"] for h in full]
    assert stamps == sorted(stamps, reverse=True)
    assert loop.walk("/v1/segments/buyers/history", limit=1) == full
    cursor = loop.get("/v1/segments/buyers/history", limit=1).json()["next_cursor"]
    assert loop.get("/v1/segments/loyal/history", cursor=cursor).status_code == 422
    assert loop.get("/v1/segments/buyers/history", cursor="AAAA").status_code == 422
    loyal = loop.walk("/v1/segments/loyal/history", limit=50)
    assert loyal and loyal[0]["change"] == "exited"  # retired: everyone left last


# --- customers --------------------------------------------------------------------------


def test_customer_segments_and_campaigns_resolve_merged_ids(loop: Loop) -> None:
    aliases = loop.scalars(sa.select(customer_aliases.c.alias).order_by(customer_aliases.c.alias))
    assert aliases, "Ana's ids were merged"
    with loop.store.engine.connect() as conn:
        cs = customer_segments
        for merged in aliases:  # a merged id whose survivor is in a segment
            survivor = live_customer(conn, merged)
            expected = [
                (r.segment_id, r.version, r.member)
                for r in conn.execute(
                    sa.select(cs.c.segment_id, cs.c.version, cs.c.member)
                    .where(cs.c.customer_id == survivor)
                    .order_by(cs.c.segment_id)
                )
            ]
            if expected:
                break
    assert survivor is not None and survivor != merged
    body = loop.get(f"/v1/customers/{merged}/segments").json()
    assert body["customer_id"] == survivor and body["resolved_from"] == merged
    assert [(m["segment_id"], m["version"], m["member"]) for m in body["data"]] == expected
    assert expected, "some merged customer ordered: it was a buyer"
    memberships = {m["segment_id"]: m for m in body["data"]}
    assert memberships["buyers"]["name"] == "Repeat buyers"
    assert memberships["buyers"]["segment_status"] == "active"

    direct = loop.get(f"/v1/customers/{survivor}/segments").json()
    assert direct["resolved_from"] is None and direct["data"] == body["data"]

    campaigns = loop.get(f"/v1/customers/{merged}/campaigns").json()
    assert campaigns["customer_id"] == survivor and campaigns["resolved_from"] == merged
    direct = loop.get(f"/v1/customers/{survivor}/campaigns").json()
    assert direct["data"] == campaigns["data"]
    for url in ("/v1/customers/cus_nobody/segments", "/v1/customers/cus_nobody/campaigns"):
        answer = loop.get(url)
        assert answer.status_code == 404 and "not found" in answer.json()["detail"]


def test_customer_campaigns_of_a_targeted_customer(loop: Loop) -> None:
    members = loop.get("/v1/segments/buyers/members", limit=200).json()["data"]
    results = planning.campaign_results(loop.store, "spring")
    assert results.groups["treatment"].customers > 0
    found = 0
    for member in members[:20]:
        body = loop.get(f"/v1/customers/{member['customer_id']}/campaigns").json()
        for c in body["data"]:
            assert all(isinstance(v, str) for v in c["revenue"].values())
            if c["campaign_id"] != "spring":  # the synthetic newsletters were not launched
                assert c["name"] is None and c["target_group"] is None
                continue
            assert c["name"] == "Spring offer" and c["channel"] == "email"
            assert c["target_group"] in ("treatment", "control")
            assert c["targeted_at"].startswith("2026-06-01")
            found += 1
    assert found > 0


def test_customer_search_filters(loop: Loop) -> None:
    expected = set(_members(loop, "buyers", 2))
    found = loop.walk("/v1/customers", segment="buyers", limit=30)
    assert {c["customer_id"] for c in found} == expected
    assert loop.get("/v1/customers", segment="nope").json()["data"] == []

    rfm = loop.scalars(
        sa.select(customers.c.rfm_segment).where(customers.c.rfm_segment.is_not(None)).limit(1)
    )[0]
    want = set(
        loop.scalars(
            sa.select(customers.c.customer_id).where(
                customers.c.rfm_segment == rfm, customers.c.event_count > 0
            )
        )
    )
    found = loop.walk("/v1/customers", rfm_segment=rfm, limit=50)
    assert {c["customer_id"] for c in found} == want and want

    for tier in ("A", "none"):
        want = set(
            loop.scalars(
                sa.select(customers.c.customer_id).where(
                    customers.c.value_tier == tier, customers.c.event_count > 0
                )
            )
        )
        found = loop.walk("/v1/customers", value_tier=tier, limit=200)
        assert {c["customer_id"] for c in found} == want
    assert loop.walk("/v1/customers", value_tier="A", segment="buyers", limit=200) == [
        c
        for c in loop.walk("/v1/customers", value_tier="A", limit=200)
        if c["customer_id"] in expected
    ]
    for params in ({"value_tier": "D"}, {"rfm_segment": "Bad Name"}, {"segment": ""}):
        assert loop.get("/v1/customers", **params).status_code == 422


# --- campaigns --------------------------------------------------------------------------


def test_campaigns_list(loop: Loop) -> None:
    body = loop.get("/v1/campaigns").json()
    assert "freshness" in body
    [campaign] = body["data"]
    assert campaign["campaign_id"] == "spring" and campaign["segment_id"] == "buyers"
    assert campaign["segment_version"] == 1 and campaign["control_share"] == 0.3
    assert campaign["audience_size"] > 0 and campaign["launched_at"].startswith("2026-06-01")


def _approx(d: dict[str, Any]) -> dict[str, Any]:
    return {k: (pytest.approx(v) if isinstance(v, float) else v) for k, v in d.items()}


def test_campaign_results_agree_with_planning(loop: Loop) -> None:
    answer = loop.get("/v1/campaigns/spring/results", "analyst")
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["freshness"]["topic"] == TOPIC
    expected = planning.campaign_results(loop.store, "spring")
    assert body["campaign"]["campaign_id"] == "spring"
    assert set(body["groups"]) == {"treatment", "control"}
    for name, funnel in expected.groups.items():
        got = body["groups"][name]
        for field in ("customers", "sent", "delivered", "opened", "clicked", "bounced"):
            assert got[field] == getattr(funnel, field), (name, field)
        assert (got["converted"], got["conversions"]) == (funnel.converted, funnel.conversions)
        assert got["unsubscribed"] == funnel.unsubscribed
        assert got["revenue"] == {k: str(v) for k, v in funnel.revenue.items()}
        assert got["rates"] == _approx(funnel.rates())
    assert body["groups"]["treatment"]["converted"] > 0
    assert body["conversion_uplift"] == _approx(asdict(expected.conversion_uplift))
    assert body["conversion_uplift"]["method"] == "newcombe-hybrid-score"
    assert body["revenue_uplift"] == _approx(asdict(expected.revenue_uplift))
    assert body["revenue_currency"] == expected.currency
    assert [r["rfm_segment"] for r in body["by_rfm_segment"]] == list(expected.by_rfm_segment)
    for item in body["by_rfm_segment"]:
        funnels, uplift = expected.by_rfm_segment[item["rfm_segment"]]
        assert item["conversion_uplift"] == _approx(asdict(uplift))
        for name, funnel in funnels.items():
            assert item["groups"][name]["customers"] == funnel.customers
            assert item["groups"][name]["converted"] == funnel.converted


def test_campaign_results_scope_and_404(loop: Loop) -> None:
    assert loop.get("/v1/campaigns/spring/results", None).status_code == 401
    assert loop.get("/v1/campaigns/spring/results", "read").status_code == 403
    assert loop.get("/v1/campaigns/spring/results", "admin").status_code == 200
    answer = loop.get("/v1/campaigns/nope/results", "analyst")
    assert answer.status_code == 404 and answer.json()["detail"] == "campaign nope not found"


# --- assessments ------------------------------------------------------------------------


def test_assessments_list_newest_first_and_pages(loop: Loop) -> None:
    body = loop.get("/v1/assessments", "analyst").json()
    assert [r["run_id"] for r in body["data"]] == ["cycle-2", "cycle-1"]
    assert body["next_cursor"] is None and "freshness" in body
    assert set(body["data"][0]) == {"run_id", "as_of", "completed_at", "customers"}
    assert body["data"][0]["as_of"].startswith("2026-06-21")
    assert loop.walk("/v1/assessments", "analyst", limit=1) == body["data"]
    assert loop.get("/v1/assessments", "analyst", cursor="not-a-cursor").status_code == 422
    members_cursor = loop.get("/v1/segments/buyers/members", limit=1).json()["next_cursor"]
    assert loop.get("/v1/assessments", "analyst", cursor=members_cursor).status_code == 422


def test_assessment_runs_with_summary(loop: Loop) -> None:
    with loop.store.engine.connect() as conn:
        summaries = dict(
            conn.execute(sa.select(assessment_runs.c.run_id, assessment_runs.c.summary)).all()
        )
    latest = loop.get("/v1/assessments/latest", "analyst").json()
    assert latest["run_id"] == "cycle-2" and latest["summary"] == summaries["cycle-2"]
    assert sum(latest["summary"]["rfm_segments"].values()) == latest["customers"]
    assert "freshness" in latest
    first = loop.get("/v1/assessments/cycle-1", "analyst").json()
    assert first["run_id"] == "cycle-1" and first["summary"] == summaries["cycle-1"]
    answer = loop.get("/v1/assessments/nope", "analyst")
    assert answer.status_code == 404 and "nope" in answer.json()["detail"]


@pytest.mark.parametrize(
    "url", ["/v1/assessments", "/v1/assessments/latest", "/v1/assessments/cycle-1"]
)
def test_assessments_need_the_analyst_scope(loop: Loop, url: str) -> None:
    assert loop.get(url, None).status_code == 401
    assert loop.get(url, "read").status_code == 403
    assert loop.get(url, "admin").status_code == 200


@pytest.mark.parametrize(
    "url",
    [
        "/v1/segments",
        "/v1/segments/buyers",
        "/v1/segments/buyers/members",
        "/v1/segments/buyers/history",
        "/v1/campaigns",
        f"/v1/customers/{SURVIVOR}/segments",
        f"/v1/customers/{SURVIVOR}/campaigns",
    ],
)
def test_read_endpoints_need_a_key_and_report_freshness(loop: Loop, url: str) -> None:
    assert loop.get(url, None).status_code == 401
    answer = loop.get(url, "read", min_position="0:999999999", wait_ms=0)
    assert answer.status_code == 200
    assert answer.json()["freshness"]["caught_up"] is False
    assert loop.get(url, "read").json()["freshness"]["caught_up"] is True
