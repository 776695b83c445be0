"""The README's quick start, followed literally on a copy of the repository with a
fresh virtual environment: ``make demo`` must install what it needs and run the main
job (at a small size, through the Makefile's ``DEMO_ARGS``)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]


def _copy_of_the_repository(into: Path) -> Path:
    files = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        check=True,
        capture_output=True,
        text=True,
    ).stdout.splitlines()
    for name in files:
        source = ROOT / name
        if source.is_file():
            target = into / name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target)
    return into


def test_make_demo_in_a_fresh_virtual_environment(tmp_path: Path) -> None:
    readme = (ROOT / "README.md").read_text()
    assert "make demo" in readme and "make test" in readme
    repo = _copy_of_the_repository(tmp_path / "loopcrm")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CRM_", "VIRTUAL_ENV"))}
    result = subprocess.run(
        ["make", "demo", "DEMO_ARGS=--customers 300 --events 5000 --out demo-output"],
        cwd=repo,
        env=env,
        capture_output=True,
        text=True,
        timeout=1_200,
    )
    assert result.returncode == 0, result.stdout[-3_000:] + result.stderr[-3_000:]
    assert (repo / ".venv" / "bin" / "crm").exists(), "make demo created its virtualenv"
    report = json.loads((repo / "demo-output" / "report.json").read_text())
    assert report["campaigns"], report.keys()
    assert sorted(p.name for p in (repo / "demo-output").glob("*.png"))
