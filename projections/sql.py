"""Small SQLAlchemy helpers shared by the projection store: engines, upserts, locks."""

from __future__ import annotations

import hashlib
import io
import operator
import re
import time
from collections.abc import Iterable, Mapping, Sequence
from datetime import date, datetime
from pathlib import Path
from typing import Any

import orjson
import psycopg2.errors
import psycopg2.extras
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection, Engine

_JSON_CODEC: dict[str, Any] = {
    "json_serializer": lambda obj: orjson.dumps(obj).decode(),
    "json_deserializer": orjson.loads,
}


COPY_MIN_CELLS = 250
"""Values (rows x columns) from which a PostgreSQL insert goes through COPY into a staging
table: from 6 customer rows (47 columns), 125 identity edges (2). Below, one multi-row
VALUES statement is cheaper; above, ``mogrify``-ing every value costs more than COPY's
extra round trips (batches of 45 events: 34.6/35.6 -> 29.7/30.9 ms with 5 rows or more)."""


class RawJson(str):
    """JSON text already serialised (e.g. the record as read from the log): written to a
    JSON column as is, not parsed and dumped again."""


def _json_text(value: Any) -> str:
    return value if isinstance(value, RawJson) else orjson.dumps(value).decode()


def create_engine_for(url: str | None, sqlite_path: Path) -> Engine:
    """PostgreSQL when ``url`` is set, else an SQLite file (the embedded mode)."""
    if url:
        return sa.create_engine(url, pool_pre_ping=True, pool_size=5, max_overflow=5, **_JSON_CODEC)
    sqlite_path.parent.mkdir(parents=True, exist_ok=True)
    engine = sa.create_engine(f"sqlite:///{sqlite_path}", **_JSON_CODEC)

    @sa.event.listens_for(engine, "connect")
    def _pragmas(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.isolation_level = None  # let BEGIN below decide
        cursor = dbapi_conn.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.close()

    @sa.event.listens_for(engine, "begin")
    def _begin(conn: Connection) -> None:
        conn.exec_driver_sql("BEGIN IMMEDIATE")

    return engine


def is_postgres(bind: Engine | Connection) -> bool:
    return bind.dialect.name == "postgresql"


def insert_for(conn: Connection, table: sa.Table) -> Any:
    """The dialect's INSERT, which has ``on_conflict_do_*`` on both PostgreSQL and SQLite."""
    return (postgresql.insert if is_postgres(conn) else sqlite.insert)(table)


def upsert(
    conn: Connection, table: sa.Table, rows: Sequence[dict[str, Any]], keys: Sequence[str]
) -> None:
    """Insert rows, replacing every non-key column of rows whose key exists."""
    _bulk_insert(conn, table, rows, keys, replace=True)


def insert_ignore(
    conn: Connection, table: sa.Table, rows: Sequence[dict[str, Any]], keys: Sequence[str]
) -> None:
    """Insert rows, skipping those whose key exists."""
    _bulk_insert(conn, table, rows, keys, replace=False)


def _bulk_insert(
    conn: Connection,
    table: sa.Table,
    rows: Sequence[dict[str, Any]],
    keys: Sequence[str],
    *,
    replace: bool,
) -> None:
    if not rows:
        return
    if is_postgres(conn):
        if _copy_pays(rows):
            _pg_copy_insert(conn, table, rows, keys, replace=replace)
        else:
            _pg_execute_values(conn, table, rows, keys, replace=replace)
        return
    json_columns = [c.name for c in table.columns if isinstance(c.type, sa.JSON)]
    if any(isinstance(row.get(c), RawJson) for row in rows[:1] for c in json_columns):
        rows = [
            {k: orjson.loads(str(v)) if isinstance(v, RawJson) else v for k, v in row.items()}
            for row in rows
        ]
    for chunk in _row_chunks(table, rows):
        stmt = insert_for(conn, table).values(list(chunk))
        if replace:
            update = {c.name: stmt.excluded[c.name] for c in table.columns if c.name not in keys}
            conn.execute(stmt.on_conflict_do_update(index_elements=list(keys), set_=update))
        else:
            conn.execute(stmt.on_conflict_do_nothing(index_elements=list(keys)))


def insert_fresh(
    conn: Connection,
    table: sa.Table,
    rows: Sequence[dict[str, Any]],
    keys: Sequence[str],
    *,
    replace: bool = False,
) -> None:
    """Insert rows whose keys were found absent (e.g. events not yet in the timeline).

    On PostgreSQL, from ``COPY_MIN_CELLS``, one COPY straight into the table: no staging
    table and ``INSERT ... SELECT ... ON CONFLICT`` (the timeline's insert was 11% of a
    catch-up batch of 10,000 events, over half of it that INSERT; 8.6% this way). Should
    a key exist after all (another worker inserted it meanwhile), the COPY is undone to
    a savepoint and the rows go through ``upsert`` (``replace``) or ``insert_ignore``.
    """
    fallback = upsert if replace else insert_ignore
    if not rows or not is_postgres(conn) or not _copy_pays(rows):
        fallback(conn, table, rows, keys)
        return
    sql, text = copy_statement(conn, table, rows)
    cursor = conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
    try:
        cursor.execute("SAVEPOINT insert_fresh")
        try:
            copy_in(cursor, sql, text)
        except psycopg2.errors.UniqueViolation:
            cursor.execute("ROLLBACK TO SAVEPOINT insert_fresh")
            fallback(conn, table, rows, keys)
        cursor.execute("RELEASE SAVEPOINT insert_fresh")
    finally:
        cursor.close()


def upsert_fresh(
    conn: Connection,
    table: sa.Table,
    rows: Iterable[tuple[bool, dict[str, Any]]],
    keys: Sequence[str],
) -> None:
    """``upsert`` rows, each with whether its key was found absent (fresh): the fresh ones
    by ``insert_fresh`` when there are enough of them for a COPY, else with the others
    (one statement rather than two)."""
    fresh: list[dict[str, Any]] = []
    stored: list[dict[str, Any]] = []
    for is_fresh, row in rows:
        (fresh if is_fresh else stored).append(row)
    if fresh and is_postgres(conn) and _copy_pays(fresh):
        insert_fresh(conn, table, fresh, keys, replace=True)
    else:
        stored += fresh
    upsert(conn, table, stored, keys)


def insert_new(
    conn: Connection, table: sa.Table, rows: Sequence[dict[str, Any]], keys: Sequence[str]
) -> list[tuple[Any, ...]]:
    """Insert rows, skipping existing keys; return the keys of the rows really inserted."""
    if not rows:
        return []
    if is_postgres(conn):
        if _copy_pays(rows):
            return _pg_copy_insert(conn, table, rows, keys, replace=False, returning=True)
        return _pg_execute_values(conn, table, rows, keys, replace=False, returning=True)
    inserted: list[tuple[Any, ...]] = []
    for chunk in _row_chunks(table, rows):
        stmt = (
            insert_for(conn, table)
            .values(list(chunk))
            .on_conflict_do_nothing(index_elements=list(keys))
        )
        inserted.extend(tuple(r) for r in conn.execute(stmt.returning(*(table.c[k] for k in keys))))
    return inserted


def qualified_name(conn: Connection, table: sa.Table) -> str:
    """``"schema"."table"`` as ``conn``'s schema translation maps it, for SQL written by
    hand (PostgreSQL)."""
    schema = (conn.get_execution_options().get("schema_translate_map") or {}).get(None)
    return f'"{schema}"."{table.name}"' if schema else f'"{table.name}"'


def _insert_parts(
    conn: Connection,
    table: sa.Table,
    rows: Sequence[dict[str, Any]],
    keys: Sequence[str],
    replace: bool,
) -> tuple[list[sa.Column[Any]], str, str, str, str]:
    """(columns given, qualified table, column list, conflict target, conflict action)
    of an ``INSERT ... ON CONFLICT`` written by hand for PostgreSQL (no SQLAlchemy compile)."""
    columns = [c for c in table.columns if c.name in rows[0]]
    name = qualified_name(conn, table)
    names = ", ".join(f'"{c.name}"' for c in columns)
    conflict = ", ".join(f'"{k}"' for k in keys)
    if not replace:
        return columns, name, names, conflict, "DO NOTHING"
    sets = ", ".join(f'"{c.name}" = EXCLUDED."{c.name}"' for c in columns if c.name not in keys)
    return columns, name, names, conflict, f"DO UPDATE SET {sets}"


def _pg_execute_values(
    conn: Connection,
    table: sa.Table,
    rows: Sequence[dict[str, Any]],
    keys: Sequence[str],
    *,
    replace: bool,
    returning: bool = False,
) -> list[tuple[Any, ...]]:
    """psycopg2's ``execute_values`` in the connection's transaction: one statement per
    page, no per-row SQLAlchemy compilation (the hot path of every batch)."""
    columns, name, names, conflict, action = _insert_parts(conn, table, rows, keys, replace)
    json_columns = {c.name for c in columns if isinstance(c.type, sa.JSON)}
    template = (
        "(" + ", ".join("%s::jsonb" if c.name in json_columns else "%s" for c in columns) + ")"
    )
    values = [
        tuple(_json_text(row[c.name]) if c.name in json_columns else row[c.name] for c in columns)
        for row in rows
    ]
    sql = f"INSERT INTO {name} ({names}) VALUES %s ON CONFLICT ({conflict}) {action}"
    if returning:
        sql += " RETURNING " + conflict
    cursor = conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
    try:
        result = psycopg2.extras.execute_values(
            cursor, sql, values, template=template, page_size=1_000, fetch=returning
        )
    finally:
        cursor.close()
    return [tuple(r) for r in result] if returning else []


def _copy_pays(rows: Sequence[dict[str, Any]]) -> bool:
    return len(rows) * len(rows[0]) >= COPY_MIN_CELLS


def _pg_copy_insert(
    conn: Connection,
    table: sa.Table,
    rows: Sequence[dict[str, Any]],
    keys: Sequence[str],
    *,
    replace: bool,
    returning: bool = False,
) -> list[tuple[Any, ...]]:
    """COPY the rows into a staging table, then one INSERT ... SELECT with the same
    ON CONFLICT as ``_pg_execute_values``: several times faster for large batches (no
    SQL text to parse per value, no per-row ``mogrify``).

    The staging table is a temporary table of the session, emptied at every commit
    (``ON COMMIT DELETE ROWS``): creating it in every transaction (``ON COMMIT DROP``)
    wrote the system catalogs each time, ~1.5 ms per table per batch. ``IF NOT EXISTS``
    keeps it right on a new connection, after a rollback, and behind a pooler.
    """
    columns, name, names, conflict, action = _insert_parts(conn, table, rows, keys, replace)
    digest = hashlib.blake2b(",".join(c.name for c in columns).encode(), digest_size=4)
    stage = f'"stage_{table.name}_{digest.hexdigest()}"'
    text = _copy_lines(columns, rows)
    cursor = conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
    try:
        cursor.execute(  # one round trip; DELETE: it may have been used in this transaction
            f"CREATE TEMP TABLE IF NOT EXISTS {stage} ON COMMIT DELETE ROWS "
            f"AS SELECT {names} FROM {name} WITH NO DATA;"
            f"DELETE FROM {stage}"
        )
        copy_in(cursor, f"COPY {stage} ({names}) FROM STDIN", text)
        sql = (
            f"INSERT INTO {name} ({names}) SELECT {names} FROM {stage} "
            f"ON CONFLICT ({conflict}) {action}"
        )
        if not returning:
            cursor.execute(sql)
            return []
        cursor.execute(f"{sql} RETURNING {conflict}")
        return [tuple(r) for r in cursor.fetchall()]
    finally:
        cursor.close()


def copy_statement(
    conn: Connection, table: sa.Table, rows: Sequence[dict[str, Any]]
) -> tuple[str, str]:
    """PostgreSQL: (``COPY ... FROM STDIN``, its data) that insert ``rows`` into ``table``."""
    columns, name, names, _, _ = _insert_parts(conn, table, rows, (), replace=False)
    return f"COPY {name} ({names}) FROM STDIN", _copy_lines(columns, rows)


def copy_in(cursor: Any, sql: str, text: str) -> None:
    """Run ``sql`` (a ``COPY ... FROM STDIN``) on a psycopg2 cursor with ``text``, read
    at once: psycopg2 reads 8 KiB per call by default, and each call takes the GIL back
    from whatever else runs in the process."""
    cursor.copy_expert(sql, io.StringIO(text), size=max(len(text), 8192))


def _copy_lines(columns: Sequence[sa.Column[Any]], rows: Sequence[dict[str, Any]]) -> str:
    """The rows in COPY's text format (the hot path of every batch).

    Column by column: a column's values are mostly of one type, so each column is
    written by one loop for that type (or one ``orjson.dumps`` for its times) instead
    of a call per value that tests its type (~10% of a live batch of 200 events)."""
    fields = []
    for column in columns:
        values = list(map(operator.itemgetter(column.name), rows))
        if isinstance(column.type, sa.JSON):
            values = [_json_text(v) for v in values]
        fields.append(_column_text(values))
    lines = list(map("\t".join, zip(*fields, strict=True)))
    lines.append("")
    return "\n".join(lines)


_NULL = "\\N"


def _column_text(values: list[Any]) -> list[str]:
    """``[_copy_text(v) for v in values]``, faster for columns of str, int or datetime."""
    kinds = set(map(type, values))
    kinds.discard(type(None))
    if kinds <= {str, RawJson}:
        text = "".join([v for v in values if v is not None])
        if "\\" not in text and "\t" not in text and "\n" not in text and "\r" not in text:
            return [_NULL if v is None else v for v in values]
    elif kinds <= {int, float}:
        return [_NULL if v is None else str(v) for v in values]
    elif kinds == {datetime}:
        return _datetimes_text(values)
    return [_copy_text(v) for v in values]


def _datetimes_text(values: list[datetime | None]) -> list[str]:
    """``_datetime_text`` of each time (``None``: NULL), by one ``orjson.dumps`` of them
    all where it writes what ``isoformat`` writes (see ``_datetime_text``)."""
    present = [v for v in values if v is not None]
    for offset in {v.utcoffset() for v in present}:
        if offset is not None and (offset.seconds % 60 or offset.microseconds):
            return [_NULL if v is None else _datetime_text(v) for v in values]
    texts = iter(orjson.dumps(present)[2:-2].decode().split('","')) if present else iter(())
    return [_NULL if v is None else next(texts) for v in values]


_COPY_ESCAPES = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"})


def _copy_text(value: Any) -> str:
    """One field of COPY's text format (escaping only what needs it: the hot path)."""
    if value is None:
        return "\\N"
    kind = type(value)
    if kind is str or kind is RawJson:
        if "\\" in value or "\t" in value or "\n" in value or "\r" in value:
            return str(value).translate(_COPY_ESCAPES)
        return str(value)
    if kind is bool:
        return "t" if value else "f"
    if kind is int or kind is float:
        return str(value)
    if kind is datetime:
        return _datetime_text(value)
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, bytes | bytearray | memoryview):
        return "\\\\x" + bytes(value).hex()  # bytea hex format, backslash escaped for COPY
    return str(value).translate(_COPY_ESCAPES)


def _datetime_text(value: datetime) -> str:
    """``value.isoformat()``, written by orjson (~3x faster) where it gives the same text:
    naive times and whole-minute offsets, of any tzinfo (events read from the log carry
    pydantic's ``TzInfo``); orjson rounds ``+00:00:30`` to ``+00:01`` and drops an
    offset's microseconds."""
    offset = value.utcoffset()
    if offset is None or (offset.seconds % 60 == 0 and not offset.microseconds):
        return orjson.dumps(value)[1:-1].decode()
    return value.isoformat()


def _row_chunks(table: sa.Table, rows: Sequence[dict[str, Any]]) -> Iterable[Sequence[Any]]:
    """Multi-row VALUES statements: one round trip per chunk, not per row (psycopg2's
    executemany is row by row), kept under both drivers' bound-parameter limits."""
    return chunks(rows, max(1, 30_000 // len(table.columns)))


def one_of(bind: Engine | Connection, column: sa.ColumnElement[str], values: Sequence[str]) -> Any:
    """``column IN (values)`` for a string column; on PostgreSQL ``= ANY(:array)``.

    One array parameter instead of thousands: SQLAlchemy renders an IN list of 5,000
    values slowly, and PostgreSQL parses and plans each as a constant (a 5,000-key
    lookup took ~46 ms with IN and ~37 ms with ANY).
    """
    if not is_postgres(bind):
        return column.in_(values)
    return column == sa.any_(
        sa.bindparam("values", list(values), type_=postgresql.ARRAY(sa.String), unique=True)
    )


def replace_values(
    conn: Connection,
    column: sa.Column[str],
    mapping: Mapping[str, str],
    *,
    key: sa.Column[str] | None = None,
) -> None:
    """``UPDATE table SET column = mapping[column] WHERE column IN mapping``, in a statement
    whose shape does not depend on how many values there are; with ``key``, the rows
    whose ``key`` is in ``mapping`` get ``column = mapping[key]``.

    SQLAlchemy caches each compiled statement with the parameters it was first built
    with: a ``CASE`` of one ``WHEN`` per value made a new entry for every count, each
    holding its values (~150 MiB of the processor's peak after 800k events). PostgreSQL
    joins two array parameters; SQLite runs one ``UPDATE`` per value (executemany), so
    no new value may be an old one too (resolve chains first).
    """
    if not mapping:
        return
    if key is None:
        key = column
        if not mapping.keys().isdisjoint(mapping.values()):
            raise ValueError("replace_values: a new value is also an old one (a chain)")
    table = column.table
    if is_postgres(conn):
        pairs = (
            sa.func.unnest(
                sa.bindparam("old", type_=postgresql.ARRAY(sa.String)),
                sa.bindparam("new", type_=postgresql.ARRAY(sa.String)),
            )
            .table_valued("old", "new")
            .render_derived()
        )
        conn.execute(
            sa.update(table).values({column: pairs.c.new}).where(key == pairs.c.old),
            {"old": list(mapping), "new": list(mapping.values())},
        )
    else:
        conn.execute(
            sa.update(table)
            .values({column: sa.bindparam("new")})
            .where(key == sa.bindparam("old")),
            [{"old": old, "new": new} for old, new in mapping.items()],
        )


def lock_keys(conn: Connection, names: Iterable[str]) -> None:
    """Take transaction-scoped advisory locks on ``names`` (PostgreSQL), in sorted order.

    Sorted, so two transactions locking overlapping sets cannot deadlock on them.
    A no-op on SQLite, where ``BEGIN IMMEDIATE`` already serializes writers.
    """
    if not is_postgres(conn):
        return
    keys = sorted({advisory_key(name) for name in names})
    if keys:
        conn.execute(
            sa.text("SELECT pg_advisory_xact_lock(k) FROM unnest(CAST(:keys AS bigint[])) AS k"),
            {"keys": keys},
        )


def advisory_key(name: str) -> int:
    """A stable signed 64-bit key for ``pg_advisory_*lock`` from a name."""
    return int.from_bytes(
        hashlib.blake2b(name.encode(), digest_size=8).digest(), "big", signed=True
    )


def create_schema(conn: Connection, schema: str | None) -> None:
    """Start creating ``schema`` and its tables (PostgreSQL; nothing on SQLite).

    ``CREATE SCHEMA IF NOT EXISTS`` and ``CREATE TABLE IF NOT EXISTS`` are not safe
    against each other: two processes starting at once on a fresh database (workers
    scaled out, the API beside a processor) both try, and one fails with a unique
    violation in the system catalogs. A lock on the schema's name, held until ``conn``'s
    transaction ends, makes the second wait for the first and then find everything.
    """
    if not is_postgres(conn):
        return
    conn.execute(
        sa.text("SELECT pg_advisory_xact_lock(:k)"), {"k": advisory_key(f"crm:create:{schema}")}
    )
    if schema:
        conn.execute(sa.text(f'CREATE SCHEMA IF NOT EXISTS "{schema}"'))


def create_missing_indexes(
    engine: Engine, schema: str | None, tables: Iterable[sa.Table]
) -> list[str]:
    """Create the indexes of ``tables`` missing from ``schema`` (tables created first);
    returns their names. ``engine`` maps the tables' schema to ``schema`` as the store's
    does.

    ``create_all`` adds indexes only with their tables, so an index a later release
    defines must be added to an existing, live schema. It looks first: ``CREATE INDEX``
    takes a lock on its table before it finds an index there, even ``IF NOT EXISTS``.

    PostgreSQL: each one ``CREATE INDEX CONCURRENTLY``, outside any transaction, so
    workers go on writing while it builds (a plain ``CREATE INDEX`` blocks every write
    to its table for the whole build, minutes on a large timeline, and, one table after
    another in one transaction, can deadlock with a worker's batch). An index left
    invalid by a build that failed or was killed is dropped and built again. Processes
    starting at once take turns on a session advisory lock, tried every 0.1 s rather
    than waited for: a concurrent build waits for every statement in progress, and a
    statement waiting for the lock would deadlock with it. SQLite: ``CREATE INDEX``.
    """
    wanted = [index for table in tables for index in table.indexes]
    with engine.connect() as conn:
        missing = _missing_indexes(conn, schema, wanted)
        conn.rollback()
        if not missing:
            return []
        if not is_postgres(conn):
            with conn.begin():
                for index in missing:
                    conn.execute(sa.schema.CreateIndex(index, if_not_exists=True))
            return [str(i.name) for i in missing]
        auto = conn.execution_options(isolation_level="AUTOCOMMIT")
        key = advisory_key(f"crm:indexes:{schema}")
        while not auto.execute(sa.text("SELECT pg_try_advisory_lock(:k)"), {"k": key}).scalar():
            time.sleep(0.1)
        try:
            missing = _missing_indexes(auto, schema, wanted)  # or built by whoever held it
            where = f'"{schema}".' if schema else ""
            for index in missing:
                auto.execute(sa.text(f'DROP INDEX CONCURRENTLY IF EXISTS {where}"{index.name}"'))
                auto.execute(sa.text(_concurrently(auto, index)))
        finally:
            auto.execute(sa.text("SELECT pg_advisory_unlock(:k)"), {"k": key})
    return [str(i.name) for i in missing]


def _concurrently(conn: Connection, index: sa.Index) -> str:
    """``CREATE [UNIQUE] INDEX CONCURRENTLY`` for ``index`` in ``conn``'s schema."""
    sql = str(
        sa.schema.CreateIndex(index).compile(
            dialect=conn.dialect,
            schema_translate_map=conn.get_execution_options().get("schema_translate_map"),
            render_schema_translate=True,
        )
    )
    return re.sub(r"^CREATE (UNIQUE )?INDEX ", r"CREATE \1INDEX CONCURRENTLY ", sql)


def _missing_indexes(
    conn: Connection, schema: str | None, wanted: Sequence[sa.Index]
) -> list[sa.Index]:
    """``wanted`` less the usable indexes in ``schema`` (PostgreSQL: the valid ones;
    ``None``: the current schema) or in the SQLite database."""
    if is_postgres(conn):
        rows = conn.execute(
            sa.text(
                "SELECT c.relname FROM pg_index i "
                "JOIN pg_class c ON c.oid = i.indexrelid "
                "JOIN pg_namespace n ON n.oid = c.relnamespace "
                "WHERE n.nspname = COALESCE(:schema, current_schema()) AND i.indisvalid"
            ),
            {"schema": schema},
        )
    else:
        rows = conn.execute(sa.text("SELECT name FROM sqlite_master WHERE type = 'index'"))
    present = {name for (name,) in rows}
    return [index for index in wanted if index.name not in present]


def chunks(items: Sequence[Any], size: int = 5_000) -> Iterable[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]
