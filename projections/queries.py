"""Queries on the projection tables shared by their writer and their readers.

No projection logic here: ``read_api`` imports this module and ``projections.tables``
(definitions only), never the reducers.
"""

from __future__ import annotations

from collections.abc import Container

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from projections.tables import customer_aliases, customers

MAX_ALIAS_HOPS = 64


def live_customer(conn: Connection, customer_id: str, unwritten: Container[str] = ()) -> str | None:
    """Follow aliases from ``customer_id`` to a customer that exists (None if none):
    a row, or one of ``unwritten`` (customers a rebuild holds in memory)."""
    current = customer_id
    for _ in range(MAX_ALIAS_HOPS):
        if (
            current in unwritten
            or conn.execute(
                sa.select(customers.c.customer_id).where(customers.c.customer_id == current)
            ).first()
        ):
            return current
        target = conn.execute(
            sa.select(customer_aliases.c.customer_id).where(customer_aliases.c.alias == current)
        ).scalar_one_or_none()
        if target is None or target == current:
            return None
        current = target
    return None
