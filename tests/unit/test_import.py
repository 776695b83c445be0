"""Bulk import of legacy files on the embedded log: mapping, rejects, re-runs, resume."""

from __future__ import annotations

import textwrap
from collections.abc import Iterator, Sequence
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson
import pytest
import yaml
from typer.testing import CliRunner

from crm.cli import app
from events import LogUnavailableError, Position, decode_event
from events.sqlite import SqliteEventLog
from producers.import_mapping import MappingError, load_mapping, parse_mapping
from producers.importer import ImportAborted, import_event_id, import_file
from schemas import CustomerRegistered, Envelope, OrderPlaced, OrderReturned

EXAMPLES = Path(__file__).parents[2] / "examples" / "import"
ORDERS, CUSTOMERS = EXAMPLES / "orders.jsonl", EXAMPLES / "customers.csv"
runner = CliRunner()


class FailingLog(SqliteEventLog):
    """Fails the appends numbered in ``fail_on`` (1-based), like a broker going away."""

    def __init__(self, path: Path, fail_on: set[int]) -> None:
        super().__init__(path, "crm.events")
        self.fail_on, self.calls = fail_on, 0

    def append(self, events: Sequence[Envelope]) -> list[Position]:
        self.calls += 1
        if self.calls in self.fail_on:
            raise LogUnavailableError("broker went away")
        return super().append(events)


@pytest.fixture
def log(tmp_path: Path) -> Iterator[SqliteEventLog]:
    event_log = SqliteEventLog(tmp_path / "log.sqlite3", "crm.events")
    yield event_log
    event_log.close()


def _events(log: SqliteEventLog) -> list[Envelope]:
    return [decode_event(r.value) for r in log.read()]


def _rejects(path: Path) -> list[dict[str, Any]]:
    return [orjson.loads(line) for line in path.read_bytes().splitlines()]


def test_orders_import_publishes_good_rows_and_rejects_bad_ones_with_their_lines(
    log: SqliteEventLog, tmp_path: Path
) -> None:
    rejects = tmp_path / "rejects.jsonl"
    stats = import_file(ORDERS, load_mapping(EXAMPLES / "orders.yaml"), log, rejects_path=rejects)
    assert (stats.rows_read, stats.published, stats.rejected) == (14, 10, 4)
    events = _events(log)
    assert len(events) == 10
    by_id = {e.event_id: e for e in events}
    placed = by_id[import_event_id("legacy-shop", "order.placed", ["W-5001", ""])]
    assert isinstance(placed.payload, OrderPlaced)
    assert placed.payload.total == Decimal("129.90")
    assert placed.identifiers is not None and placed.identifiers.account_id == "C-1001"
    returned = by_id[import_event_id("legacy-shop", "order.returned", ["W-5001", "R-9001"])]
    assert isinstance(returned.payload, OrderReturned)
    assert returned.payload.reason == "too small"
    numeric = by_id[import_event_id("legacy-shop", "order.placed", ["W-5002", ""])]
    assert isinstance(numeric.payload, OrderPlaced)
    assert numeric.payload.total == Decimal("45.5")  # a JSON number, read as a decimal
    assert numeric.source.system == "legacy-shop"

    bad = _rejects(rejects)
    assert [r["line"] for r in bad] == [7, 8, 9, 12]
    assert bad[0]["errors"] == [
        {"loc": "payload.lines.0.quantity", "msg": "Input should be greater than 0"}
    ]
    assert "exchange" in bad[1]["reason"]
    assert bad[2]["errors"][0]["loc"] == "identifiers"
    assert bad[3]["reason"].startswith("malformed JSON")
    assert bad[0]["row"]["order_no"] == "W-5006"


def test_customers_csv_maps_dates_zones_and_nested_fields(
    log: SqliteEventLog, tmp_path: Path
) -> None:
    rejects = tmp_path / "rejects.jsonl"
    mapping = load_mapping(EXAMPLES / "customers.yaml")
    stats = import_file(CUSTOMERS, mapping, log, rejects_path=rejects)
    assert (stats.published, stats.rejected) == (8, 4)
    bad = _rejects(rejects)
    assert [(r["line"], r["errors"][0]["loc"]) for r in bad] == [
        (7, "identifiers.email"),
        (8, "payload.birth_date"),
        (10, "payload.first_name"),
        (12, ""),
    ]
    assert bad[3]["reason"] == "row has 9 fields, the header has 10"
    assert bad[0]["row"]["customer_no"] == "C-1006"
    ana = next(e for e in _events(log) if e.identifiers and e.identifiers.account_id == "C-1001")
    assert isinstance(ana.payload, CustomerRegistered)
    assert ana.payload.birth_date == date(1985, 3, 14)
    assert ana.payload.address is not None and ana.payload.address.country == "PT"
    assert ana.occurred_at.isoformat() == "2024-01-02T09:15:00+00:00"  # Lisbon, winter
    assert ana.identifiers is not None and ana.identifiers.phone == "+351912345678"


def test_a_second_run_publishes_no_new_event_ids(log: SqliteEventLog) -> None:
    mapping = load_mapping(EXAMPLES / "orders.yaml")
    first = import_file(ORDERS, mapping, log)
    again = import_file(ORDERS, mapping, log)
    events = _events(log)
    assert len(events) == first.published + again.published == 20
    assert len({e.event_id for e in events}) == first.published == 10


def test_resume_from_line_skips_earlier_rows(log: SqliteEventLog, tmp_path: Path) -> None:
    mapping = load_mapping(EXAMPLES / "orders.yaml")
    stats = import_file(ORDERS, mapping, log, resume_from_line=9)
    assert (stats.skipped, stats.rows_read, stats.published, stats.rejected) == (8, 6, 4, 2)
    full = SqliteEventLog(tmp_path / "full.sqlite3", "crm.events")
    import_file(ORDERS, mapping, full)
    assert {e.event_id for e in _events(log)} < {e.event_id for e in _events(full)}
    full.close()


def test_a_failing_log_aborts_with_the_line_to_resume_from(tmp_path: Path) -> None:
    mapping = load_mapping(EXAMPLES / "orders.yaml")
    log = FailingLog(tmp_path / "log.sqlite3", fail_on={2})
    with pytest.raises(ImportAborted) as caught:
        import_file(ORDERS, mapping, log, batch_size=3)
    assert caught.value.stats.published == 3
    resume = caught.value.resume_line
    assert resume == 4  # lines 1-3 were the first batch; the second started at line 4
    import_file(ORDERS, mapping, log, batch_size=3, resume_from_line=resume)
    assert len({e.event_id for e in _events(log)}) == 10
    log.close()


def test_single_line_orders_from_csv_columns(log: SqliteEventLog, tmp_path: Path) -> None:
    path = tmp_path / "till.csv"
    path.write_text(
        "receipt;when;card;sku;qty;price\n"
        "R1;2024-03-01 10:00;CARD-1;SKU-1;2;4,50\n"
        "R2;2024-03-01 11:00;CARD-2;SKU-2;1;3.00\n"
    )
    mapping = parse_mapping(
        {
            "source": "till",
            "event_type": "order.placed",
            "channel": "store",
            "csv": {"delimiter": ";"},
            "occurred_at": {
                "column": "when",
                "format": "%Y-%m-%d %H:%M",
                "timezone": "Europe/Berlin",
            },
            "identifiers": {"account_id": "card"},
            "natural_key": ["receipt"],
            "payload": {"order_id": "receipt", "currency": {"default": "EUR"}, "total": "price"},
            "line": {"sku": "sku", "quantity": "qty", "unit_price": "price"},
        }
    )
    stats = import_file(path, mapping, log, rejects_path=tmp_path / "r.jsonl")
    assert (stats.published, stats.rejected) == (1, 1)
    (event,) = _events(log)
    assert isinstance(event.payload, OrderPlaced)
    assert event.payload.lines[0].quantity == 1
    assert event.occurred_at == datetime(2024, 3, 1, 10, 0, tzinfo=UTC)
    (reject,) = _rejects(tmp_path / "r.jsonl")
    assert {e["loc"] for e in reject["errors"]} == {"payload.total", "payload.lines.0.unit_price"}
    assert "cannot read '4,50' as a decimal number" in reject["reason"]


BASE = {
    "source": "x",
    "event_type": "order.placed",
    "channel": "ecommerce",
    "occurred_at": {"column": "at"},
    "identifiers": {"email": "email"},
}


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"event_type": "order.plced"}, "unknown event type 'order.plced' (did you mean"),
        ({"payload": {"totl": "t"}}, "payload.totl: not a field of order.placed"),
        ({"payload": {"address.cuntry": "c"}, "event_type": "customer.registered"}, "address"),
        ({"event_type_column": "kind"}, "give either event_type, or event_type_column"),
        ({"occurred_at": {"column": "at", "timezone": "Mars/Base"}}, "unknown time zone"),
        ({"line": {"sku": "s", "qty": "q"}}, "line.qty: not a field of an order line"),
        ({"identifiers": {"fax": "f"}}, "identifiers.fax"),
        ({"channel": "pigeon"}, "channel"),
        ({"colour": "red"}, "colour"),
    ],
)
def test_mapping_errors_are_clear(change: dict[str, Any], message: str) -> None:
    with pytest.raises(MappingError) as caught:
        parse_mapping({**BASE, **change})
    assert any(message in problem for problem in caught.value.problems), caught.value.problems


def test_a_column_missing_from_the_header_stops_before_any_row(
    log: SqliteEventLog, tmp_path: Path
) -> None:
    path = tmp_path / "orders.csv"
    path.write_text("order_no,email,at\nO-1,a@example.com,2024-01-01T00:00:00Z\n")
    mapping = parse_mapping({**BASE, "payload": {"order_id": "order_no", "total": "amount"}})
    with pytest.raises(MappingError, match=r"column 'amount' \(payload.total\) is not in"):
        import_file(path, mapping, log)
    assert _events(log) == []


@pytest.fixture
def embedded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.delenv("CRM_KAFKA_BOOTSTRAP", raising=False)
    monkeypatch.setenv("CRM_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_cli_import_then_rerun_and_dry_run(embedded: Path) -> None:
    args = ["import", str(ORDERS), "--mapping", str(EXAMPLES / "orders.yaml")]
    result = runner.invoke(app, [*args, "--rejects", "bad.jsonl", "--batch", "4"])
    assert result.exit_code == 0, result.output
    assert "published" in result.output and "rows/s" in result.output
    assert "line 7: payload.lines.0.quantity" in result.output
    assert len(_rejects(embedded / "bad.jsonl")) == 4
    dry = runner.invoke(app, [*args, "--dry-run"])
    assert dry.exit_code == 0, dry.output
    assert "dry run" in dry.output
    assert (embedded / "orders.jsonl.rejects.jsonl").exists()
    log = SqliteEventLog(embedded / "data" / "log.sqlite3", "crm.events")
    assert len(_events(log)) == 10
    log.close()


def test_cli_exit_codes(embedded: Path) -> None:
    bad = embedded / "bad.jsonl"
    bad.write_text('{"order_no": "1"}\nnot json\n')
    args = ["import", str(bad), "--mapping", str(EXAMPLES / "orders.yaml")]
    result = runner.invoke(app, args)
    assert result.exit_code == 1
    assert "every row was rejected" in result.output
    mapping = embedded / "broken.yaml"
    mapping.write_text(yaml.safe_dump({**BASE, "payload": {"totl": "t"}}))
    result = runner.invoke(app, ["import", str(ORDERS), "--mapping", str(mapping)])
    assert result.exit_code == 2
    assert "payload.totl: not a field of order.placed" in result.output
    assert "did you mean 'total'" in result.output


MEMORY_SCRIPT = textwrap.dedent(
    """
    import resource, sys, orjson
    from pathlib import Path
    from events.log import Position
    from producers.import_mapping import parse_mapping
    from producers.importer import import_file

    class CountingLog:  # an EventLog that keeps nothing, so only the importer's memory counts
        topic = "t"
        appended = 0
        def append(self, events):
            self.appended += len(events)
            return [Position(0, 0)] * len(events)

    path = Path(sys.argv[1])
    mapping = parse_mapping({
        "source": "old-web", "event_type": "web.page_viewed", "channel": "web",
        "occurred_at": {"column": "at"}, "identifiers": {"device_id": "visitor"},
        "natural_key": ["view_id"], "payload": {"url": "url", "duration_ms": "ms"},
    })
    log = CountingLog()
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    stats = import_file(path, mapping, log, batch_size=2000)
    grown = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
    print(orjson.dumps({"published": log.appended, "rejected": stats.rejected,
                        "grown_kb": grown, "rate": stats.rows_per_second}).decode())
    """
)


def test_a_200k_row_file_imports_in_bounded_memory(tmp_path: Path) -> None:
    import subprocess
    import sys

    rows = 200_000
    path = tmp_path / "views.csv"
    with path.open("w") as f:
        f.write("view_id,visitor,url,at,ms\n")
        for i in range(rows):
            f.write(
                f"{i},dev-{i % 5000},https://shop.example/p/{i % 977},"
                f"2024-01-02T09:15:{i % 60:02d}Z,{i % 9000}\n"
            )
    assert path.stat().st_size > 12_000_000
    done = subprocess.run(
        [sys.executable, "-c", MEMORY_SCRIPT, str(path)],
        capture_output=True,
        check=True,
        text=True,
        cwd=Path(__file__).parents[2],
        timeout=60,
    )
    result = orjson.loads(done.stdout.strip().splitlines()[-1])
    assert (result["published"], result["rejected"]) == (rows, 0)
    # 200k events held at once would take hundreds of MB; one batch takes a few.
    assert result["grown_kb"] < 40_000, result
