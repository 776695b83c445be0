"""PostgreSQL is real and answers (projections arrive with the single customer view)."""

from __future__ import annotations

import sqlalchemy as sa

from crm.devservices.testing import TestServices


def test_postgres_answers_and_is_writable(services: TestServices) -> None:
    engine = sa.create_engine(services.database_url)
    try:
        with engine.begin() as conn:
            version = conn.execute(sa.text("SHOW server_version")).scalar_one()
            conn.execute(sa.text("CREATE TEMP TABLE probe (id int primary key)"))
            conn.execute(sa.text("INSERT INTO probe VALUES (1), (2)"))
            assert conn.execute(sa.text("SELECT count(*) FROM probe")).scalar_one() == 2
    finally:
        engine.dispose()
    assert int(version.split(".")[0]) >= 13
