"""``crm demo`` on the embedded log and SQLite: both cycles run, the files are written,
and cycle 2 differs from cycle 1 exactly as the simulated responses dictate."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from auth import Scope
from crm.cli import app
from crm.demo import build_demo_api, create_demo_keys, demo_key_store
from crm.settings import Settings

runner = CliRunner()
ARGS = ["demo", "--customers", "300", "--events", "5000", "--seed", "7"]
FILES = (
    "assessment-cycle-1.png",
    "assessment-cycle-2.png",
    "campaign-win-back.png",
    "campaign-thank-you.png",
    "report.json",
)


def run_cli(out: Path) -> tuple[str, dict[str, Any]]:
    result = runner.invoke(app, [*ARGS, "--out", str(out)])
    assert result.exit_code == 0, result.output + repr(result.exception)
    for name in FILES:
        assert (out / name).stat().st_size > 0, name
    return result.output, json.loads((out / "report.json").read_text())


def check_report(report: dict[str, Any]) -> None:
    """What the responses to campaign 1 dictate for cycle 2, figure by figure."""
    cycles, campaigns, changes = report["cycles"], report["campaigns"], report["changes"]
    assert report["population"]["events_generated"] == 5_000
    overview = report["projection"]["after_history"]
    assert overview["timeline events"] == 5_000 and overview["customers"] > 200

    # cycle 1: the win-back campaign reaches the at-risk segment (less withdrawn consent)
    win_back = campaigns["win-back"]
    launch1 = win_back["launch"]
    assert (
        launch1["audience"] + launch1["excluded_no_consent"] == cycles["1"]["segments"]["at-risk"]
    )
    assert launch1["audience"] == changes["campaign_1_targets"] > 0
    simulated = win_back["simulated"]
    groups = win_back["results"]["groups"]
    for group in ("treatment", "control"):
        assert groups[group]["customers"] == simulated[group]["targets"]
        assert groups[group]["converted"] == simulated[group].get("order.placed", 0)
    assert groups["treatment"]["opened"] == simulated["treatment"]["message.opened"]
    assert groups["control"]["sent"] == 0

    # cycle 2: the responders segment is exactly the customers who opened (clicks follow
    # opens) campaign 1; those who ignored it form their own segment
    responders = simulated["treatment"]["message.opened"]
    assert responders == changes["responders"] > 0
    assert cycles["2"]["segments"]["email-responders"] == responders
    assert (
        cycles["2"]["segments"]["ignored-last-campaign"]
        == changes["expected"]["ignored-last-campaign"]
    )
    unsubscribed = simulated["treatment"].get("message.unsubscribed", 0)
    assert unsubscribed == changes["unsubscribed"]
    launch2 = campaigns["thank-you"]["launch"]
    assert launch2["audience"] == responders - unsubscribed
    assert launch2["excluded_no_consent"] == unsubscribed
    assert (
        campaigns["thank-you"]["results"]["groups"]["treatment"]["customers"]
        == (launch2["treatment"])
    )

    # the reassessment saw the converters' orders: they are recent now
    assert changes["converters"] == sum(s.get("order.placed", 0) for s in simulated.values()) > 0
    recency = changes["converters_mean_recency"]
    assert recency["cycle_2"] > recency["cycle_1"]
    assert recency["cycle_2"] == 5.0
    r1 = cycles["1"]["assessment"]["rfm_segments"]
    r2 = cycles["2"]["assessment"]["rfm_segments"]
    assert r1 != r2 and sum(r1.values()) == sum(r2.values())
    assert changes["rfm_segment_moved"] > 0
    assert set(report["timings_s"]) >= {"project history", "cycle-1: assess", "cycle-2: assess"}


@pytest.fixture(scope="module")
def demo_run(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[Path, str, dict[str, Any]]]:
    tmp = tmp_path_factory.mktemp("demo")
    with pytest.MonkeyPatch.context() as mp:
        mp.delenv("CRM_KAFKA_BOOTSTRAP", raising=False)
        mp.delenv("CRM_DATABASE_URL", raising=False)
        mp.setenv("CRM_DATA_DIR", str(tmp / "data"))
        mp.chdir(tmp)
        output, report = run_cli(tmp / "out")
        yield tmp, output, report


def test_demo_runs_both_cycles_and_cycle_2_follows_from_the_responses(
    demo_run: tuple[Path, str, dict[str, Any]],
) -> None:
    tmp, output, report = demo_run
    check_report(report)
    assert report["backend"]["log"] == "embedded"
    assert report["backend"]["data_dir"] == str(tmp / "data" / "demo")
    for title in ("assessments: RFM segments", "campaigns: funnel", "what changed", "timings"):
        assert title in output
    assert "conversion uplift" in output and "95% CI" in output
    assert str(tmp / "out" / "report.json") in output


def test_a_rerun_starts_clean(demo_run: tuple[Path, str, dict[str, Any]]) -> None:
    tmp, _, first = demo_run
    with pytest.MonkeyPatch.context() as mp:
        mp.delenv("CRM_KAFKA_BOOTSTRAP", raising=False)
        mp.delenv("CRM_DATABASE_URL", raising=False)
        mp.setenv("CRM_DATA_DIR", str(tmp / "data"))
        (tmp / "data" / "demo" / "stale.txt").write_text("from an earlier run")
        _, second = run_cli(tmp / "out2")
    assert not (tmp / "data" / "demo" / "stale.txt").exists()
    assert second["projection"] == first["projection"]
    assert second["changes"]["segments"] == first["changes"]["segments"]


def test_demo_keys_open_the_read_api_on_the_demo_projections(
    demo_run: tuple[Path, str, dict[str, Any]],
) -> None:
    _, _, report = demo_run
    cfg = Settings(data_dir=Path(report["backend"]["data_dir"]))
    keys = create_demo_keys(cfg)
    store = demo_key_store(cfg)
    assert store.verify(keys["read"], Scope.READ).scopes == frozenset({Scope.READ})
    assert store.verify(keys["analyst"], Scope.ANALYST)
    with TestClient(build_demo_api(cfg)) as client:
        headers = {"Authorization": f"Bearer {keys['read']}"}
        answer = client.get("/v1/customers", params={"limit": 5}, headers=headers)
        assert answer.status_code == 200, answer.text
        assert len(answer.json()["data"]) == 5
        assert client.get("/v1/customers").status_code == 401


def test_demo_has_serve_and_port_options() -> None:
    result = runner.invoke(app, ["demo", "--help"])
    assert result.exit_code == 0
    assert "--serve" in result.output and "--port" in result.output
