"""The read API's default customer list (newest activity first) is an index scan on
PostgreSQL, also on a schema created before the index existed."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa

from projections.store import SqlProjectionStore
from projections.tables import customers
from read_api.store import CustomerSort, Page, ReadStore

pytestmark = pytest.mark.integration

INDEX = "customers_by_last_seen"


def _indexes(engine: sa.Engine, schema: str) -> set[str | None]:
    return {i["name"] for i in sa.inspect(engine).get_indexes("customers", schema=schema)}


def _newest_first(reader: ReadStore, after: str | None) -> Page:
    """A page of the read API's default customer list (``sort=-last_seen``)."""
    return reader.search(
        node=None,
        name_prefix=None,
        sort=CustomerSort.LAST_SEEN,
        descending=True,
        limit=3,
        after=after,
    )


def test_default_customer_list_uses_the_last_seen_index(engine: sa.Engine, schema: str) -> None:
    store = SqlProjectionStore(engine, schema=schema)
    store.create()
    with engine.begin() as conn:  # a schema from before the index: create() adds it
        conn.execute(sa.text(f'DROP INDEX "{schema}"."{INDEX}"'))
    assert INDEX not in _indexes(engine, schema)
    store.create()
    assert INDEX in _indexes(engine, schema)

    start = datetime(2026, 1, 1, tzinfo=UTC)
    rows = [
        {
            "customer_id": f"c{i:05d}",
            "anchor": f"account_id:{i}",
            "revenue_by_currency": {},
            "state": {},
            "last_seen": start + timedelta(minutes=i % 7_000),
            "event_count": 1,
        }
        for i in range(20_000)
    ]
    with store.engine.begin() as conn:
        conn.execute(sa.insert(customers), rows)
        conn.execute(sa.text(f'ANALYZE "{schema}".customers'))

    statements: list[tuple[str, Any]] = []

    def capture(conn: Any, cursor: Any, statement: str, params: Any, *args: Any) -> None:
        if "ORDER BY" in statement:
            statements.append((statement, params))

    reader = ReadStore(engine, "t", schema=schema)
    sa.event.listen(engine, "before_cursor_execute", capture)
    try:
        first = _newest_first(reader, after=None)
        second = _newest_first(reader, after=first.next_cursor)
    finally:
        sa.event.remove(engine, "before_cursor_execute", capture)
    ids = [r["customer_id"] for r in first.rows + second.rows]
    newest = sorted(rows, key=lambda r: (r["last_seen"], r["customer_id"]), reverse=True)
    assert ids == [r["customer_id"] for r in newest[:6]]

    assert len(statements) == 2
    with engine.connect() as conn:
        cursor = conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
        for statement, params in statements:  # the first page and a keyset page
            cursor.execute("EXPLAIN " + statement, params)
            plan = "\n".join(row[0] for row in cursor.fetchall())
            assert INDEX in plan, plan
            assert "Seq Scan" not in plan, plan
