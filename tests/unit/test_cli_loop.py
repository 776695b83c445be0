"""crm assess / segments / campaigns on the embedded log and SQLite projections."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from typer.testing import CliRunner

from crm.bootstrap import build_event_log
from crm.cli import app
from crm.settings import Settings
from producers.synthetic import SyntheticTouchpoints

runner = CliRunner()


@pytest.fixture(autouse=True)
def population(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.delenv("CRM_KAFKA_BOOTSTRAP", raising=False)
    monkeypatch.delenv("CRM_DATABASE_URL", raising=False)
    monkeypatch.setenv("CRM_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.chdir(tmp_path)
    start = datetime.now(UTC) - timedelta(days=366)
    events = list(SyntheticTouchpoints(customers=200, seed=11, start=start, days=365).events(4_000))
    event_log = build_event_log(Settings())
    try:
        event_log.append(events)
    finally:
        event_log.close()
    return tmp_path


def _ok(args: list[str]) -> str:
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    return result.stdout


def test_a_loop_from_the_shell(tmp_path: Path) -> None:
    summary = json.loads(_ok(["assess", "--run-id", "first", "--json", "--charts", "charts"]))
    assert summary["run_id"] == "first" and summary["customers"] > 0
    assert sum(summary["rfm_segments"].values()) == summary["customers"]
    assert (tmp_path / "charts" / "first.png").stat().st_size > 10_000

    rule = json.dumps({"field": "order_count", "op": "ge", "value": 1})
    defined = _ok(["segments", "define", "buyers", "--rule", rule])
    assert "buyers" in defined and f"{summary['buyers']}" in defined
    listed = _ok(["segments", "list"])
    assert "buyers" in listed and str(summary["buyers"]) in listed

    _ok(["campaigns", "launch", "c1", "--segment", "buyers", "--channel", "email"])
    results = json.loads(_ok(["campaigns", "results", "c1", "--json"]))
    groups = results["groups"]
    audience = groups["treatment"]["customers"] + groups["control"]["customers"]
    assert audience == results["campaign"]["audience_size"] > 0
    assert results["campaign"]["segment_id"] == "buyers"
    assert results["campaign"]["segment_version"] == 1


def _error(args: list[str]) -> str:
    """The error text of a failed command, unwrapped from rich's box."""
    result = runner.invoke(app, args)
    assert result.exit_code != 0
    return " ".join(result.output.replace("│", " ").split())


def test_bad_input_gets_a_clear_error() -> None:
    bad_field = json.dumps({"field": "revnue", "op": "gt", "value": 1})
    assert "did you mean 'revenue'" in _error(["segments", "define", "x", "--rule", bad_field])
    assert "not valid JSON" in _error(["segments", "define", "x", "--rule", "{not json"])
    launch = ["campaigns", "launch", "c9", "--segment", "nope", "--channel", "email"]
    assert "no active segment 'nope'" in _error(launch)
    assert "no campaign 'missing'" in _error(["campaigns", "results", "missing"])
