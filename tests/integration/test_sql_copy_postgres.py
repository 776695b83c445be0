"""The COPY path of the bulk writers stores exactly what the VALUES path stores, for
awkward values (tabs, newlines, backslashes, NULLs, unicode, JSON with escapes)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
import sqlalchemy as sa

from projections import sql
from projections.sql import RawJson, insert_fresh, insert_ignore, insert_new, upsert, upsert_fresh
from tests.unit.test_replace_values import check_replace_values

pytestmark = pytest.mark.integration

metadata = sa.MetaData()
things = sa.Table(
    "things",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("name", sa.Text),
    sa.Column("flag", sa.Boolean),
    sa.Column("at", sa.DateTime(timezone=True)),
    sa.Column("score", sa.Float),
    sa.Column("doc", sa.JSON().with_variant(sa.dialects.postgresql.JSONB(), "postgresql")),
    sa.Column("blob", sa.LargeBinary),
)

ZONES = [UTC, timezone(timedelta(hours=5, minutes=30))]  # both written by orjson in COPY
AWKWARD = ["tab\there", "new\nline", "back\\slash", "\\N", "", "carriage\rreturn", "ünïcødé ✓"]


def _rows(n: int, salt: str) -> list[dict[str, Any]]:
    return [
        {
            "id": i,
            "name": None if i % 9 == 0 else f"{AWKWARD[i % len(AWKWARD)]}-{salt}",
            "flag": None if i % 7 == 0 else i % 2 == 0,
            "at": datetime(2026, 1, 1, 12, 0, i % 60, 123456 * (i % 2), tzinfo=ZONES[i % 2]),
            "score": None if i % 5 == 0 else i / 3,
            "doc": {"text": AWKWARD[i % len(AWKWARD)], "n": i, "nested": {"q": 'say "hi"'}}
            if i % 4
            else RawJson('{"raw": "a\\\\b\\"c\\nd", "n": ' + str(i) + "}"),
            "blob": None if i % 6 == 0 else bytes([i % 256, 0, 92, 9, 10, 255]) + salt.encode(),
        }
        for i in range(n)
    ]


def _load(
    engine: sa.Engine, schema: str, threshold: int, monkeypatch: pytest.MonkeyPatch
) -> list[tuple[Any, ...]]:
    monkeypatch.setattr(sql, "COPY_MIN_CELLS", threshold)
    mapped = engine.execution_options(schema_translate_map={None: schema})
    with mapped.begin() as conn:
        conn.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
        metadata.create_all(conn)
        insert_ignore(conn, things, _rows(600, "first"), ["id"])
        insert_ignore(conn, things, _rows(700, "ignored"), ["id"])  # existing ids kept
        upsert(conn, things, _rows(300, "replaced"), ["id"])
    with mapped.connect() as conn:
        return [tuple(r) for r in conn.execute(sa.select(things).order_by(things.c.id))]


def test_copy_and_values_paths_store_the_same(
    engine: sa.Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    a, b = f"copy_{uuid.uuid4().hex[:8]}", f"values_{uuid.uuid4().hex[:8]}"
    try:
        via_copy = _load(engine, a, 1, monkeypatch)
        via_values = _load(engine, b, 10**9, monkeypatch)
    finally:
        with engine.begin() as conn:
            for schema in (a, b):
                conn.execute(sa.text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
    assert via_copy == via_values
    assert len(via_copy) == 700
    by_id = {row[0]: row for row in via_copy}
    assert by_id[1][1] == "new\nline-replaced" and by_id[400][1].endswith("-first")
    assert by_id[650][1].endswith("-ignored") and by_id[0][1] is None
    assert by_id[8][5] == {"raw": 'a\\b"c\nd', "n": 8}


def test_insert_new_returns_the_same_keys_on_both_paths(
    engine: sa.Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``insert_new`` reports exactly the rows it inserted, through COPY as through VALUES."""
    results = {}
    for path, threshold in (("copy", 1), ("values", 10**9)):
        schema = f"{path}_{uuid.uuid4().hex[:8]}"
        monkeypatch.setattr(sql, "COPY_MIN_CELLS", threshold)
        mapped = engine.execution_options(schema_translate_map={None: schema})
        try:
            with mapped.begin() as conn:
                conn.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
                metadata.create_all(conn)
                first = insert_new(conn, things, _rows(60, "a"), ["id"])
                second = insert_new(conn, things, _rows(90, "b"), ["id"])  # same transaction
            with mapped.begin() as conn:
                third = insert_new(conn, things, _rows(120, "c"), ["id"])  # next transaction
            results[path] = (sorted(first), sorted(second), sorted(third))
        finally:
            with engine.begin() as conn:
                conn.execute(sa.text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
    assert results["copy"] == results["values"]
    assert results["copy"] == (
        [(i,) for i in range(60)],
        [(i,) for i in range(60, 90)],
        [(i,) for i in range(90, 120)],
    )


def test_a_rolled_back_batch_leaves_the_next_one_working(
    engine: sa.Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The staging table lives for the session; a transaction that failed after creating
    it (so it is gone again) or after filling it (rows left behind) changes nothing."""
    monkeypatch.setattr(sql, "COPY_MIN_CELLS", 1)
    engine.dispose()  # new sessions: the failing transaction is the one creating the stage
    schema = f"stage_{uuid.uuid4().hex[:8]}"
    mapped = engine.execution_options(schema_translate_map={None: schema})
    try:
        with mapped.begin() as conn:
            conn.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
            metadata.create_all(conn)
        with pytest.raises(sa.exc.IntegrityError), mapped.begin() as conn:
            insert_ignore(conn, things, _rows(10, "rolled back"), ["id"])
            conn.execute(sa.insert(things), [{"id": 0}])  # duplicate key: the batch fails
        for _ in range(2):
            with mapped.begin() as conn:
                insert_ignore(conn, things, _rows(5, "kept"), ["id"])
        with mapped.connect() as conn:
            names = conn.execute(sa.select(things.c.name).order_by(things.c.id)).scalars().all()
    finally:
        with engine.begin() as conn:
            conn.execute(sa.text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
    assert len(names) == 5 and all(n is None or n.endswith("-kept") for n in names)


def test_insert_fresh_copies_new_rows_and_falls_back_on_a_known_key(
    engine: sa.Engine, monkeypatch: pytest.MonkeyPatch, schema: str
) -> None:
    """Rows checked to be new go straight in by COPY; should a key exist after all (a
    concurrent writer), the rows go in as ``insert_ignore`` would put them, the stored
    row is kept, and the transaction goes on."""
    monkeypatch.setattr(sql, "COPY_MIN_CELLS", 1)
    mapped = engine.execution_options(schema_translate_map={None: schema})
    with mapped.begin() as conn:
        conn.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
        metadata.create_all(conn)
        insert_fresh(conn, things, _rows(50, "fresh"), ["id"])
        insert_fresh(conn, things, _rows(80, "clash")[40:], ["id"])  # ids 40..49 exist
        conn.execute(sa.insert(things), [{"id": 1_000, "name": "after"}])
    with mapped.connect() as conn:
        stored = {r.id: r for r in conn.execute(sa.select(things))}
    assert sorted(stored) == [*range(80), 1_000]
    expected = {r["id"]: r for r in _rows(50, "fresh") + _rows(80, "clash")[50:]}
    for i in range(80):
        assert (stored[i].name, stored[i].at, stored[i].blob) == (
            expected[i]["name"],
            expected[i]["at"],
            expected[i]["blob"],
        )
    assert stored[45].name is None or stored[45].name.endswith("-fresh")


@pytest.mark.parametrize("threshold", [1, 10**9], ids=["copy", "values"])
def test_upsert_fresh_stores_what_upsert_stores_even_when_a_fresh_key_exists(
    engine: sa.Engine, monkeypatch: pytest.MonkeyPatch, schema: str, threshold: int
) -> None:
    """Fresh rows go in by COPY (or with the others, when too few for a COPY); a fresh
    row whose key exists after all replaces the stored one, as ``upsert`` would."""
    monkeypatch.setattr(sql, "COPY_MIN_CELLS", threshold)
    mapped = engine.execution_options(schema_translate_map={None: schema})
    with mapped.begin() as conn:
        conn.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
        metadata.create_all(conn)
        upsert_fresh(conn, things, [(True, row) for row in _rows(50, "fresh")], ["id"])
        replaced = _rows(50, "stored")[:20]
        clashing = _rows(80, "clash")[45:]  # ids 45..49 exist
        mixed = [(False, row) for row in replaced] + [(True, row) for row in clashing]
        upsert_fresh(conn, things, mixed, ["id"])
    with mapped.connect() as conn:
        stored = {r.id: r.name for r in conn.execute(sa.select(things))}
    expected = {r["id"]: r["name"] for r in _rows(50, "fresh") + replaced + _rows(80, "clash")[45:]}
    assert stored == expected
    assert stored[47] is None or stored[47].endswith("-clash")


def test_replace_values_on_postgres(engine: sa.Engine, schema: str) -> None:
    check_replace_values(engine, schema)
