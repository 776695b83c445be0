"""What a killed run leaves behind, and the sweep that removes it at the next start.

Every run names its topics, consumer groups, schemas and databases ``bench_<run id>_…``
(``BenchContext.name``) and holds a PostgreSQL advisory lock on its run id from before it
creates any of them until it ends. A run that ends normally drops what it made; one that
is killed (twice Ctrl-C, the OOM killer, a lost terminal) cannot, and its leftovers slow
every later run on the same services: once, the dev services held 373 topics (1,600
partition directories) and ~8 GB of schemas from killed runs, and the figures measured
beside them were slower. So a run starts by removing everything named for a run whose
lock is free, and leaves alone what belongs to runs still going (their lock is held).
A script that runs sections with a ``BenchContext`` of its own should hold
``holding_run`` for its id as well, or a run starting meanwhile takes its things.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa
from kafka import KafkaAdminClient
from kafka.errors import KafkaError

from bench.pipeline import drop_schemas, engine_for
from projections.sql import advisory_key

RUN_NAME = re.compile(r"^bench_([0-9a-f]{6})_")
"""Names ``BenchContext.name`` gives: the run id comes first."""


def run_lock_key(run_id: str) -> int:
    return advisory_key(f"loopcrm-bench-run:{run_id}")


@contextmanager
def holding_run(database_url: str, run_id: str) -> Iterator[None]:
    """Hold the run's advisory lock (a session lock on a connection of its own)."""
    engine = engine_for(database_url)
    raw: Any = engine.raw_connection()
    try:
        raw.autocommit = True
        with raw.cursor() as cur:
            cur.execute("SELECT pg_advisory_lock(%s)", (run_lock_key(run_id),))
        yield
    finally:
        raw.close()  # the lock goes with the session
        engine.dispose()


@dataclass
class Swept:
    runs: set[str] = field(default_factory=set)
    topics: list[str] = field(default_factory=list)
    groups: list[str] = field(default_factory=list)
    schemas: list[str] = field(default_factory=list)
    databases: list[str] = field(default_factory=list)

    def summary(self) -> str:
        if not self.runs:
            return "no leftovers of earlier runs"
        return (
            f"removed the leftovers of {len(self.runs)} earlier run(s) that are no longer "
            f"running: {len(self.topics)} topic(s), {len(self.groups)} consumer group(s), "
            f"{len(self.schemas)} schema(s), {len(self.databases)} database(s)"
        )


def sweep(bootstrap: str, database_url: str) -> Swept:
    """Drop the topics, groups, schemas and databases of every run not holding its lock."""
    swept = Swept()
    engine = engine_for(database_url)
    try:
        with engine.connect() as conn:
            schemas = conn.execute(sa.text("SELECT nspname FROM pg_namespace")).scalars().all()
            databases = conn.execute(sa.text("SELECT datname FROM pg_database")).scalars().all()
        admin = _admin(bootstrap)
        try:
            topics = list(admin.list_topics()) if admin else []
            groups = [g["group_id"] for g in admin.list_groups()] if admin else []
            dead = _dead_runs(engine, _run_ids([*schemas, *databases, *topics, *groups]))
            swept.runs = dead
            swept.topics = _of(dead, topics)
            swept.groups = _of(dead, groups)
            if admin and swept.groups:
                admin.delete_groups(swept.groups)  # errors per group: an active one stays
            if admin and swept.topics:
                admin.delete_topics(swept.topics)
        finally:
            if admin:
                admin.close()
        swept.schemas = _of(dead, schemas)
        swept.databases = _of(dead, databases)
        drop_schemas(database_url, *swept.schemas)
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            for database in swept.databases:
                conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)'))
    finally:
        engine.dispose()
    return swept


def _admin(bootstrap: str) -> KafkaAdminClient | None:
    try:
        return KafkaAdminClient(bootstrap_servers=bootstrap, client_id="loopcrm-bench-sweep")
    except KafkaError:
        return None  # then only the PostgreSQL leftovers go


def _run_ids(names: Iterable[str]) -> set[str]:
    return {m.group(1) for name in names if (m := RUN_NAME.match(name))}


def _of(runs: set[str], names: Iterable[str]) -> list[str]:
    return sorted(n for n in names if (m := RUN_NAME.match(n)) and m.group(1) in runs)


def _dead_runs(engine: sa.Engine, run_ids: set[str]) -> set[str]:
    """The runs whose lock is free: the lock is taken and given back at once."""
    dead = set()
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        for run_id in sorted(run_ids):
            key = run_lock_key(run_id)
            if conn.execute(sa.text("SELECT pg_try_advisory_lock(:k)"), {"k": key}).scalar():
                conn.execute(sa.text("SELECT pg_advisory_unlock(:k)"), {"k": key})
                dead.add(run_id)
    return dead
