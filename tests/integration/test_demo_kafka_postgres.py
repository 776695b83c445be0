"""``crm demo`` on real Kafka and PostgreSQL: its own topic and schema, the same figures
as on the embedded backends, and the user's topic and schema untouched."""

from __future__ import annotations

from pathlib import Path

import pytest
import sqlalchemy as sa

from auth import Scope
from crm.demo import create_demo_keys, demo_key_store
from crm.devservices.testing import TestServices
from crm.settings import Settings
from projections.sql import create_engine_for
from tests.unit.test_demo import check_report, run_cli

pytestmark = pytest.mark.integration


def test_demo_on_kafka_and_postgres(
    services: TestServices, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CRM_KAFKA_BOOTSTRAP", services.kafka_bootstrap)
    monkeypatch.setenv("CRM_DATABASE_URL", services.database_url)
    monkeypatch.setenv("CRM_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.chdir(tmp_path)
    engine = create_engine_for(services.database_url, None)  # type: ignore[arg-type]
    schemas: list[str] = []
    try:
        _, report = run_cli(tmp_path / "out")
        backend = report["backend"]
        schema = backend["projection_schema"]
        schemas += [schema, f"{schema}_auth"]
        assert backend["log"] == "kafka" and backend["projections"] == "postgresql"
        assert backend["topic"].startswith("crm.demo.") and schema.startswith("demo_")
        check_report(report)
        with engine.connect() as conn:
            count = conn.execute(sa.text(f'SELECT count(*) FROM "{schema}".customers')).scalar()
        assert count == report["projection"]["final"]["customers"]

        cfg = Settings().model_copy(update={"projection_schema": schema, "topic": backend["topic"]})
        keys = create_demo_keys(cfg)
        assert demo_key_store(cfg).verify(keys["read"], Scope.READ)
    finally:
        with engine.begin() as conn:
            for name in schemas:
                conn.execute(sa.text(f'DROP SCHEMA IF EXISTS "{name}" CASCADE'))
        engine.dispose()
