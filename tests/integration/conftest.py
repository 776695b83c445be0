"""Fixtures of the integration tests: an engine on the test PostgreSQL and a throwaway
schema in it."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
import sqlalchemy as sa

from crm.devservices.testing import TestServices
from projections.sql import create_engine_for


@pytest.fixture
def engine(services: TestServices) -> Iterator[sa.Engine]:
    engine = create_engine_for(services.database_url, None)  # type: ignore[arg-type]
    yield engine
    engine.dispose()


@pytest.fixture
def schema(engine: sa.Engine) -> Iterator[str]:
    """A fresh schema name, dropped (with whatever the test put in it) afterwards."""
    name = f"test_{uuid.uuid4().hex[:8]}"
    yield name
    with engine.begin() as conn:
        conn.execute(sa.text(f'DROP SCHEMA IF EXISTS "{name}" CASCADE'))
