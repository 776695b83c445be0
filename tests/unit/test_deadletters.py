"""Dead letters on the embedded log: list, show, replay (idempotent, marked)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from uuid import UUID, uuid4

import orjson
import pytest
from typer.testing import CliRunner

from crm.cli import app
from events import decode_event
from events.codec import encode_event
from events.sqlite import SqliteEventLog
from producers.deadletters import (
    REPLAYED_FROM_HEADER,
    dead_letter_record,
    get_dead_letter,
    parse_position,
    pretty_value,
    read_dead_letters,
    replay,
)
from schemas import Channel, Identifiers, Source, WebPageViewed, new_event

runner = CliRunner()
NOW = datetime(2026, 3, 14, 10, 0, tzinfo=UTC)


def _view(n: int) -> bytes:
    event = new_event(
        WebPageViewed(url=f"https://shop.example/p/{n}"),
        source=Source(system="web", channel=Channel.WEB),
        occurred_at=NOW,
        identifiers=Identifiers(email=f"user{n}@example.com"),
    )
    return encode_event(event)


def _v1_registration() -> bytes:
    """A customer.registered v1 (``full_name``): valid today through its upcaster."""
    return orjson.dumps(
        {
            "event_id": str(uuid4()),
            "type": "customer.registered",
            "schema_version": 1,
            "occurred_at": "2025-01-01T00:00:00Z",
            "source": {"system": "old-crm", "channel": "store"},
            "identifiers": {"account_id": "A-1"},
            "payload": {"full_name": "Ana Maria Silva"},
        }
    )


def _bad_order() -> bytes:
    body = orjson.loads(_view(0))
    body["type"], body["payload"] = "order.placed", {"order_id": "O-1", "currency": "EUR"}
    return orjson.dumps(body)


@pytest.fixture
def data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.delenv("CRM_KAFKA_BOOTSTRAP", raising=False)
    monkeypatch.setenv("CRM_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.chdir(tmp_path)
    return tmp_path / "data"


@pytest.fixture
def logs(data_dir: Path) -> Iterator[tuple[SqliteEventLog, SqliteEventLog]]:
    path = data_dir / "log.sqlite3"
    dlq = SqliteEventLog(path, "crm.deadletters")
    events = SqliteEventLog(path, "crm.events")
    dlq.append_records(
        [
            dead_letter_record(_view(1), error="unknown event type", origin="crm.events/0/5"),
            dead_letter_record(_v1_registration(), error="no upcaster", origin="crm.events/1/9"),
            dead_letter_record(_bad_order(), error="payload.lines: Field required", origin="gw"),
            dead_letter_record(b"\x00garbage", error="malformed JSON\nat 0", origin="gw"),
            dead_letter_record(b"[" + _view(2) + b"," + _view(3) + b"]", error="x", origin="gw"),
        ]
    )
    yield dlq, events
    dlq.close()
    events.close()


def test_list_shows_error_origin_and_size(logs: tuple[SqliteEventLog, SqliteEventLog]) -> None:
    dlq, _ = logs
    letters = read_dead_letters(dlq)
    assert [letter.origin for letter in letters] == [
        "crm.events/0/5",
        "crm.events/1/9",
        "gw",
        "gw",
        "gw",
    ]
    assert letters[3].error == "malformed JSON\nat 0"
    assert letters[3].size == 8
    assert all(letter.replayed is None for letter in letters)
    assert read_dead_letters(dlq, since=datetime(2100, 1, 1, tzinfo=UTC)) == []


def test_show_returns_one_letter_pretty_printed(
    logs: tuple[SqliteEventLog, SqliteEventLog],
) -> None:
    dlq, _ = logs
    first = read_dead_letters(dlq)[0]
    letter = get_dead_letter(dlq, first.position)
    assert letter == first
    assert pretty_value(letter).startswith('{\n  "event_id"')
    garbage = read_dead_letters(dlq)[3]
    assert pretty_value(garbage) == "\x00garbage"
    assert get_dead_letter(dlq, parse_position("0:999")) is None
    assert get_dead_letter(dlq, parse_position("99:0")) is None


def test_replay_appends_valid_letters_with_their_ids_and_marks_them(
    logs: tuple[SqliteEventLog, SqliteEventLog],
) -> None:
    dlq, events = logs
    letters = read_dead_letters(dlq)
    outcomes = replay(dlq, events)
    assert [o.status for o in outcomes] == [
        "replayed",
        "replayed",
        "still invalid",
        "still invalid",
        "replayed",
    ]
    assert "payload.lines: Field required" in outcomes[2].errors
    assert outcomes[3].errors[0].startswith("malformed JSON")
    appended = [decode_event(r.value) for r in events.read()]
    original_ids = [orjson.loads(_) for _ in (letters[0].value, letters[1].value)]
    assert {e.event_id for e in appended} == {
        UUID(original_ids[0]["event_id"]),
        UUID(original_ids[1]["event_id"]),
        *outcomes[4].event_ids,
    }
    registered = next(e for e in appended if e.type == "customer.registered")
    assert registered.schema_version == 2  # appended as today's version
    after = read_dead_letters(dlq)
    assert [letter.replayed is not None for letter in after] == [True, True, False, False, True]
    markers = [r for r in dlq.read() if r.header(REPLAYED_FROM_HEADER)]
    assert len(markers) == 3

    again = replay(dlq, events)  # --all: only what is not replayed yet
    assert [o.status for o in again] == ["still invalid", "still invalid"]
    explicit = replay(dlq, events, [letters[0].position, parse_position("0:999")])
    assert [o.status for o in explicit] == ["already replayed", "not found"]
    assert len(list(events.read())) == 4


def test_dry_run_changes_nothing(logs: tuple[SqliteEventLog, SqliteEventLog]) -> None:
    dlq, events = logs
    outcomes = replay(dlq, events, dry_run=True)
    assert [o.status for o in outcomes].count("would replay") == 3
    assert list(events.read()) == []
    assert all(letter.replayed is None for letter in read_dead_letters(dlq))


def test_cli_list_show_replay(logs: tuple[SqliteEventLog, SqliteEventLog]) -> None:
    dlq, _ = logs
    first = read_dead_letters(dlq)[0].position
    where = f"{first.partition}:{first.offset}"
    listed = runner.invoke(app, ["deadletters", "list", "--limit", "3"])
    assert listed.exit_code == 0, listed.output
    assert "3 of 5 dead letters" in listed.output
    shown = runner.invoke(app, ["deadletters", "show", where])
    assert shown.exit_code == 0, shown.output
    assert "crm-origin" in shown.output and "crm.events/0/5" in shown.output
    assert '"url": "https://shop.example/p/1"' in shown.output
    assert runner.invoke(app, ["deadletters", "show", "0:999"]).exit_code == 1
    assert runner.invoke(app, ["deadletters", "replay"]).exit_code == 2

    replayed = runner.invoke(app, ["deadletters", "replay", where])
    assert replayed.exit_code == 0, replayed.output
    assert "1 replayed" in replayed.output
    everything = runner.invoke(app, ["deadletters", "replay", "--all"])
    assert everything.exit_code == 1  # two letters are still invalid
    assert "2 replayed, 2 still invalid" in everything.output
    pending = runner.invoke(app, ["deadletters", "list", "--pending"])
    assert "2 of 2 dead letters" in pending.output
    marked = runner.invoke(app, ["deadletters", "list"])
    assert marked.output.count("replayed") == 3
    shown = runner.invoke(app, ["deadletters", "show", where])
    assert "into crm.events at" in shown.output
