"""Queries on the projection tables shared by their writer and their readers.

No projection logic here: ``read_api`` imports this module and ``projections.tables``
(definitions only), never the reducers.
"""

from __future__ import annotations

from collections.abc import Container, Iterable

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from projections.sql import chunks, one_of
from projections.tables import customer_aliases, customers

MAX_ALIAS_HOPS = 64


def live_customer(conn: Connection, customer_id: str, unwritten: Container[str] = ()) -> str | None:
    """Follow aliases from ``customer_id`` to a customer that exists (None if none):
    a row, or one of ``unwritten`` (customers a rebuild holds in memory)."""
    return live_customers(conn, [customer_id], unwritten)[customer_id]


def live_customers(
    conn: Connection, customer_ids: Iterable[str], unwritten: Container[str] = ()
) -> dict[str, str | None]:
    """``live_customer`` for each of ``customer_ids``: two queries per alias hop for all
    of them together, not per id (a batch of events naming thousands of customers)."""
    live: dict[str, str | None] = {}
    current = {cid: cid for cid in customer_ids}  # asked for -> where the walk is
    for _ in range(MAX_ALIAS_HOPS):
        if not current:
            break
        stored = _present(conn, customers.c.customer_id, customers.c.customer_id, current.values())
        walking = {}
        for asked, at in current.items():
            if at in unwritten or at in stored:
                live[asked] = at
            else:
                walking[asked] = at
        targets = _present(
            conn, customer_aliases.c.alias, customer_aliases.c.customer_id, walking.values()
        )
        current = {}
        for asked, at in walking.items():
            target = targets.get(at)
            if target is None or target == at:
                live[asked] = None
            else:
                current[asked] = target
    return live | dict.fromkeys(current)


def _present(
    conn: Connection, key: sa.Column[str], value: sa.Column[str], keys: Iterable[str]
) -> dict[str, str]:
    """``{key: value}`` for the rows whose ``key`` is one of ``keys``."""
    found: dict[str, str] = {}
    for chunk in chunks(sorted(set(keys))):
        rows = conn.execute(sa.select(key, value).where(one_of(conn, key, chunk)))
        found.update((k, v) for k, v in rows)
    return found
