"""The read API's engine: PostgreSQL (pooled) or the embedded SQLite file, read-only.

Not ``projections.sql.create_engine_for``: that one begins every SQLite transaction
with ``BEGIN IMMEDIATE`` (a write lock), which readers must not take.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import sqlalchemy as sa


def create_read_engine(url: str | None, sqlite_path: Path) -> sa.Engine:
    """PostgreSQL when ``url`` is set, else ``sqlite_path`` (WAL readers, query_only)."""
    if url:
        return sa.create_engine(url, pool_pre_ping=True, pool_size=10, max_overflow=10)
    engine = sa.create_engine(f"sqlite:///{sqlite_path}")

    @sa.event.listens_for(engine, "connect")
    def _pragmas(dbapi_conn: Any, _record: Any) -> None:
        cursor = dbapi_conn.cursor()
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.execute("PRAGMA query_only=ON")
        cursor.close()

    return engine
