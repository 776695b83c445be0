"""The read API's engine: PostgreSQL (pooled) or the embedded SQLite file, read-only.

Not ``projections.sql.create_engine_for``: that one begins every SQLite transaction
with ``BEGIN IMMEDIATE`` (a write lock), which readers must not take.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import sqlalchemy as sa


def create_read_engine(
    url: str | None, sqlite_path: Path, *, schema: str | None = None
) -> sa.Engine:
    """PostgreSQL when ``url`` is set, else ``sqlite_path`` (WAL readers, query_only).

    With ``schema`` (PostgreSQL), connections read it through their ``search_path``,
    so statements need no per-execution schema translation (``ReadStore`` sees the
    ``search_path`` execution option and skips it).
    """
    if url:
        # autocommit: reads need no transaction (no BEGIN/ROLLBACK round trips); no
        # pre-ping (a round trip per request): connections are recycled instead
        engine = sa.create_engine(
            url,
            isolation_level="AUTOCOMMIT",
            pool_size=10,
            max_overflow=10,
            pool_recycle=300,
            json_deserializer=orjson.loads,
            connect_args={"options": f"-csearch_path={schema}"} if schema else {},
        )
        return engine.execution_options(search_path=schema) if schema else engine
    engine = sa.create_engine(f"sqlite:///{sqlite_path}", json_deserializer=orjson.loads)

    @sa.event.listens_for(engine, "connect")
    def _pragmas(dbapi_conn: Any, _record: Any) -> None:
        cursor = dbapi_conn.cursor()
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.execute("PRAGMA query_only=ON")
        cursor.close()

    return engine
