"""Following merge aliases to the customer that survives, for one id or many at once."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from projections.queries import MAX_ALIAS_HOPS, live_customer, live_customers
from projections.sql import create_engine_for
from projections.store import SqlProjectionStore
from projections.tables import customer_aliases, customers

AT = datetime(2026, 3, 1, tzinfo=UTC)
# a <- b <- c (c merged into b, b into a); d is alone; e -> f, a merge into a customer
# that is gone (erased and deleted); g <-> h a loop no live customer ends; long -> ... -> a
ALIASES = {"b": "a", "c": "b", "e": "f", "g": "h", "h": "g"}
CHAIN = [f"long{i}" for i in range(MAX_ALIAS_HOPS + 1)]
WANTED = {"a": "a", "b": "a", "c": "a", "d": "d", "e": None, "g": None, "nobody": None}


def check_live_customers(store: SqlProjectionStore) -> None:
    """The scenario above on ``store``'s tables (shared with the PostgreSQL test)."""
    aliases = ALIASES | {c: n for c, n in zip(CHAIN, [*CHAIN[1:], "a"], strict=True)}
    with store.engine.begin() as conn:
        conn.execute(
            customers.insert(),
            [
                {"customer_id": c, "anchor": f"email:{c}", "revenue_by_currency": {}, "state": {}}
                for c in ("a", "d")
            ],
        )
        conn.execute(
            customer_aliases.insert(),
            [
                {"alias": k, "customer_id": v, "occurred_at": AT, "event_id": f"e-{k}"}
                for k, v in aliases.items()
            ],
        )
    with store.engine.connect() as conn:
        assert live_customers(conn, WANTED) == WANTED
        assert {c: live_customer(conn, c) for c in WANTED} == WANTED
        # the hop limit ends a walk, whatever the rest of the batch does
        assert live_customers(conn, [CHAIN[0], CHAIN[-1], "c"]) == {
            CHAIN[0]: None,
            CHAIN[-1]: "a",
            "c": "a",
        }
        # customers a rebuild holds in memory count as live where the walk meets them
        assert live_customers(conn, ["c", "e", "x"], unwritten={"b", "f"}) == {
            "c": "b",
            "e": "f",
            "x": None,
        }
        assert live_customers(conn, []) == {}


def test_aliases_lead_to_the_live_customer_on_sqlite(tmp_path: Path) -> None:
    engine = create_engine_for("", tmp_path / "crm.sqlite3")
    store = SqlProjectionStore(engine)
    store.create()
    check_live_customers(store)
