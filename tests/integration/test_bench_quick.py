"""``python -m bench --quick`` runs end to end on real Kafka and PostgreSQL.

Only that it runs and reports: figures with their baselines and ratios, results.json,
the chart. No speed is asserted (the machine running CI is not the benchmark machine).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from crm.devservices.testing import TestServices

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
SECTIONS = ("ingest", "projection", "replay", "freshness", "read_api", "memory", "peer")


def test_quick_benchmarks_report_figures_with_baselines(
    services: TestServices, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CRM_BENCH_KAFKA_BOOTSTRAP", services.kafka_bootstrap)
    monkeypatch.setenv("CRM_BENCH_DATABASE_URL", services.database_url)
    monkeypatch.setenv("PYTHONPATH", str(REPO))
    out = tmp_path / "bench-results"

    command = [sys.executable, "-m", "bench", "--quick", "--only", ",".join(SECTIONS)]
    done = subprocess.run(
        [*command, "--out", str(out)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=1_500,
        check=False,
    )

    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    results = json.loads((out / "results.json").read_text())
    assert results["machine"]["cpus"] and results["sizes"]["events"] == 5_000
    assert results["versions"]["kafka"] and results["versions"]["postgresql"]
    assert results["started_at"] and results["finished_at"]
    statuses = {s["name"]: s["status"] for s in results["sections"]}
    assert statuses == dict.fromkeys(SECTIONS, "ok"), results["sections"]
    for section in SECTIONS:
        figures = [f for f in results["figures"] if f["section"] == section]
        assert figures, f"no figures for {section}"
        compared = [f for f in figures if f["baseline"] is not None]
        assert compared, f"no figure of {section} has a baseline"
        for figure in figures:
            assert figure["value"] > 0, figure
        for figure in compared:
            assert figure["baseline"] > 0, figure
            assert figure["ratio"] == pytest.approx(figure["value"] / figure["baseline"])
    names = [f["name"] for f in results["figures"]]
    assert "HTTP gateway, batch 1,000, 1 worker process" in names
    assert any(n.startswith("HTTP gateway, batch 1,000, ") and "processes" in n for n in names)
    assert any(n.startswith("customer 360, ") and "workers p99 at 500" in n for n in names)
    chart = out / "results.png"
    assert results["chart"] == "results.png"
    assert chart.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
