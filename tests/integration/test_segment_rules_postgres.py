"""Segment rules compiled to SQL select, on real PostgreSQL, exactly the rows the Python
predicate accepts (the property of tests/unit/test_segment_rules.py, on its own schema)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
import sqlalchemy as sa

from crm.devservices.testing import TestServices
from projections.sql import create_engine_for
from tests.unit.test_segment_rules import (
    NOW,
    NULL_FALSE_LEAVES,
    assert_sql_agrees,
    check_sql_agrees_with_python,
    facts_table,
    leaf,
)

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def postgres_facts(services: TestServices) -> Iterator[tuple[sa.Connection, sa.Table]]:
    """A facts table (``fact_columns``) in a schema of its own, dropped afterwards."""
    engine = create_engine_for(services.database_url, None)  # type: ignore[arg-type]
    schema = f"segrules_{uuid.uuid4().hex[:8]}"
    table = facts_table(sa.MetaData(), schema=schema)
    try:
        with engine.begin() as conn:
            conn.execute(sa.schema.CreateSchema(schema))
            table.metadata.create_all(conn)
        with engine.connect() as conn:
            yield conn, table
    finally:
        with engine.begin() as conn:
            conn.execute(sa.schema.DropSchema(schema, cascade=True, if_exists=True))
        engine.dispose()


def test_null_facts_make_conditions_false_and_not_true_on_postgres(
    postgres_facts: tuple[sa.Connection, sa.Table],
) -> None:
    rows = [{}, {"nps": 1, "country": "FR", "email_marketing_consent": False}]
    for rule in [*NULL_FALSE_LEAVES, leaf("gender", "is_null")]:
        for negate in (False, True):
            assert_sql_agrees(*postgres_facts, {"not": rule} if negate else rule, NOW, rows)


def test_sql_agrees_with_python_on_postgres(
    postgres_facts: tuple[sa.Connection, sa.Table],
) -> None:
    check_sql_agrees_with_python(*postgres_facts, examples=150)


def test_integers_at_the_64_bit_limits_compare_on_postgres(
    postgres_facts: tuple[sa.Connection, sa.Table],
) -> None:
    rows = [{"order_count": 2**63 - 1}, {"order_count": -(2**63)}, {"order_count": 2**31}, {}]
    for op in ("eq", "ne", "lt", "ge"):
        for value in (2**40, -(2**63), 2**63 - 1):
            assert_sql_agrees(*postgres_facts, leaf("order_count", op, value), NOW, rows)
    wide = [-(2**63), 2**63 - 1]
    assert_sql_agrees(*postgres_facts, leaf("order_count", "between", wide), NOW, rows)
    assert_sql_agrees(*postgres_facts, leaf("order_count", "not_in", wide), NOW, rows)
