"""``replace_values`` rewrites the values it is given in one statement whose compiled form
does not depend on how many there are (SQLAlchemy caches one per shape, with the values
it was first built with: the processor's merges once grew its memory with every batch)."""

from __future__ import annotations

from pathlib import Path

import pytest
import sqlalchemy as sa

from projections.sql import create_engine_for, replace_values

metadata = sa.MetaData()
owned = sa.Table(
    "owned",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("owner", sa.String(64), nullable=False),
    sa.Column("name", sa.String(64), nullable=False),
)


def check_replace_values(engine: sa.Engine, schema: str | None) -> None:
    mapped = engine.execution_options(schema_translate_map={None: schema})
    with mapped.begin() as conn:
        if schema:
            conn.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
        metadata.create_all(conn)
        conn.execute(
            sa.insert(owned),
            [{"id": i, "owner": f"c{i % 10}", "name": f"r{i}"} for i in range(100)],
        )
        cache: dict[object, object] = {}
        cached = conn.execution_options(compiled_cache=cache)
        replace_values(cached, owned.c.owner, {"c0": "x"})
        replace_values(cached, owned.c.owner, {"c1": "y", "c2": "y"})
        replace_values(cached, owned.c.owner, {f"c{i}": f"z{i}" for i in range(3, 8)})
        replace_values(cached, owned.c.owner, {})
        replace_values(cached, owned.c.owner, {"nobody": "x"})
        replace_values(cached, owned.c.owner, {f"gone{i}": "x" for i in range(9)})
        # one statement (SQLite: one for a single row and one for executemany), not one
        # per number of values (1, 2, 5, 9)
        assert len(cache) <= 2, "a compiled statement per number of values"
        with pytest.raises(ValueError, match="chain"):
            replace_values(conn, owned.c.owner, {"c8": "c9", "c9": "w"})
        owners = {i: o for i, o in conn.execute(sa.select(owned.c.id, owned.c.owner))}
        want = {"c0": "x", "c1": "y", "c2": "y", **{f"c{i}": f"z{i}" for i in range(3, 8)}}
        assert owners == {i: want.get(f"c{i % 10}", f"c{i % 10}") for i in range(100)}
        # by another column: the rows named get their own values, whatever they held
        replace_values(
            cached, owned.c.owner, {"r8": "c9", "r9": "w", "none": "v"}, key=owned.c.name
        )
        query = sa.select(owned.c.id, owned.c.owner).where(owned.c.id < 10)
        got = {i: o for i, o in conn.execute(query)}
    assert got == {**{i: want.get(f"c{i}", f"c{i}") for i in range(8)}, 8: "c9", 9: "w"}


def test_replace_values_on_sqlite(tmp_path: Path) -> None:
    engine = create_engine_for(None, tmp_path / "db.sqlite3")
    try:
        check_replace_values(engine, None)
    finally:
        engine.dispose()
