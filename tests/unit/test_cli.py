"""The crm command line on the embedded log: schemas, log append/read, smoke."""

from __future__ import annotations

import json
from pathlib import Path

import orjson
import pytest
from typer.testing import CliRunner

from crm.cli import app
from events.codec import encode_event
from producers.synthetic import SyntheticTouchpoints
from schemas import CATALOG

runner = CliRunner()


@pytest.fixture(autouse=True)
def embedded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.delenv("CRM_KAFKA_BOOTSTRAP", raising=False)
    monkeypatch.delenv("CRM_DATABASE_URL", raising=False)
    monkeypatch.setenv("CRM_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.chdir(tmp_path)
    return tmp_path


def _events_file(path: Path, n: int) -> Path:
    events = SyntheticTouchpoints(customers=10, seed=3).events(n)
    path.write_bytes(b"\n".join(encode_event(e) for e in events) + b"\n")
    return path


def test_schemas_export_writes_one_schema_per_type(tmp_path: Path) -> None:
    result = runner.invoke(app, ["schemas", "export", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    index = json.loads((tmp_path / "out" / "index.json").read_text())
    assert set(index) >= set(CATALOG)
    for name, entry in CATALOG.items():
        schema = json.loads((tmp_path / "out" / f"{name}.v{entry.version}.schema.json").read_text())
        assert schema["properties"]["type"]["const"] == name


def test_schemas_validate_names_the_bad_field(tmp_path: Path) -> None:
    path = _events_file(tmp_path / "events.jsonl", 3)
    bad = orjson.loads(path.read_bytes().splitlines()[1])
    bad["occurred_at"] = "yesterday"
    with path.open("ab") as f:
        f.write(orjson.dumps(bad) + b"\n{not json\n")
    result = runner.invoke(app, ["schemas", "validate", str(path)])
    assert result.exit_code == 1
    assert "line 4: occurred_at:" in result.output
    assert "line 5: <event>: malformed JSON" in result.output
    assert "3 valid, 2 invalid" in result.output


def test_log_append_then_read_round_trips(tmp_path: Path) -> None:
    path = _events_file(tmp_path / "events.jsonl", 40)
    result = runner.invoke(app, ["log", "append", str(path), "--batch", "7"])
    assert result.exit_code == 0, result.output
    assert "appended 40 events" in result.output
    result = runner.invoke(app, ["log", "read"])
    assert result.exit_code == 0, result.output
    lines = [orjson.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    sent = {orjson.loads(line)["event_id"] for line in path.read_bytes().splitlines()}
    assert {line["event"]["event_id"] for line in lines} == sent
    one = runner.invoke(app, ["log", "read", "--partition", "0", "--limit", "2"])
    assert len([x for x in one.stdout.splitlines() if x.startswith("{")]) <= 2
    bad = runner.invoke(app, ["log", "read", "--from-offset", "zero"])
    assert bad.exit_code != 0 and "PARTITION:OFFSET" in bad.output


def test_log_append_stops_at_an_invalid_line_and_says_which(tmp_path: Path) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text('{"type": "order.placed"}\n')
    result = runner.invoke(app, ["log", "append", str(path)])
    assert result.exit_code == 1
    assert "line 1 is invalid" in result.output


def test_smoke_on_the_embedded_log_reads_back_everything() -> None:
    result = runner.invoke(app, ["smoke", "--events", "600", "--customers", "50", "--batch", "100"])
    assert result.exit_code == 0, result.output
    assert "every acknowledged event was read back" in result.output
