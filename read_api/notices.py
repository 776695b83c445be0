"""Checkpoint notices from PostgreSQL, so waiting requests wake when a batch commits.

The projection store's trigger sends ``NOTIFY loopcrm_checkpoints, '<schema>'`` with
every transaction that moves checkpoints (``projections.tables.notify_on_checkpoints``).
``PostgresCheckpointNotices`` listens on one connection of its own per process, read by
the event loop (no thread), and ``PositionWatch`` re-reads the checkpoints on each
notice instead of every 20 ms. Should listening fail (the database restarting, a
connection limit), it says so once and the watch polls as before until a retry works.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any

import sqlalchemy as sa

from projections.tables import CHECKPOINT_CHANNEL

log = logging.getLogger(__name__)

FALLBACK_S = 1.0
"""While listening, the checkpoints are also read this often (a notice can be missed
when the connection drops between a commit and its delivery)."""
RETRY_S = 5.0


class PostgresCheckpointNotices:
    """``next(poll_s)`` returns at the next notice for ``schema`` since the last call,
    or after ``FALLBACK_S``; after ``poll_s`` when it cannot listen."""

    def __init__(self, engine: sa.Engine, schema: str | None) -> None:
        self._engine = engine
        self._schema = schema
        self._conn: Any = None  # the psycopg2 connection, out of the engine's pool
        self._fd = -1
        self._loop: asyncio.AbstractEventLoop | None = None
        self._noticed = asyncio.Event()
        self._retry_at = 0.0

    @property
    def listening(self) -> bool:
        return self._conn is not None

    async def next(self, poll_s: float) -> None:
        if not await self._listen():
            await asyncio.sleep(poll_s)
            return
        if not self._noticed.is_set():
            try:
                await asyncio.wait_for(self._noticed.wait(), FALLBACK_S)
            except TimeoutError:
                return
        self._noticed.clear()

    async def _listen(self) -> bool:
        loop = asyncio.get_running_loop()
        if self._loop is not loop:  # e.g. a new test client's loop
            self.close()
            self._loop, self._noticed = loop, asyncio.Event()
        if self._conn is not None:
            return True
        if time.monotonic() < self._retry_at:
            return False
        try:
            conn = await asyncio.to_thread(self._connect)
        except Exception as exc:  # any failure means: poll, retry later
            self._retry_at = time.monotonic() + RETRY_S
            log.warning(
                "cannot listen for checkpoint notices (%s); polling, retrying in %.0f s",
                type(exc).__name__,  # never the message: it may hold the URL
                RETRY_S,
            )
            return False
        self._conn, self._fd = conn, conn.fileno()
        loop.add_reader(self._fd, self._readable)
        self._noticed.set()  # commits before LISTEN were not noticed: read once more
        return True

    def _connect(self) -> Any:
        pooled = self._engine.raw_connection()
        pooled.detach()  # held for the process's life, never returned to the pool
        conn: Any = pooled.dbapi_connection
        conn.autocommit = True
        with conn.cursor() as cursor:
            cursor.execute(f"LISTEN {CHECKPOINT_CHANNEL}")
        return conn

    def _readable(self) -> None:
        conn = self._conn
        try:
            conn.poll()
        except Exception as exc:  # the connection is gone: poll, retry later
            log.warning("checkpoint notices stopped (%s); polling", type(exc).__name__)
            self.close()
            self._noticed.set()
            return
        notices, conn.notifies[:] = list(conn.notifies), []
        if any(self._schema is None or n.payload == self._schema for n in notices):
            self._noticed.set()

    def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is None:
            return
        if self._loop is not None and not self._loop.is_closed():
            self._loop.remove_reader(self._fd)
        with contextlib.suppress(Exception):  # closing a broken connection
            conn.close()
