"""A bench run removes what killed runs left on real Kafka and PostgreSQL, and nothing of
a run still going or of anyone else."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from kafka import KafkaAdminClient, KafkaConsumer, TopicPartition
from kafka.admin import NewTopic
from kafka.structs import OffsetAndMetadata

from bench.core import BenchContext, Sizes, new_run_id
from bench.leftovers import holding_run, sweep
from bench.pipeline import engine_for
from crm.devservices.testing import TestServices

pytestmark = pytest.mark.integration


@pytest.fixture
def admin(services: TestServices) -> Iterator[KafkaAdminClient]:
    client = KafkaAdminClient(bootstrap_servers=services.kafka_bootstrap)
    yield client
    client.close()


def _leave(services: TestServices, admin: KafkaAdminClient, name: str) -> None:
    """A topic, a consumer group with a committed offset and a schema called ``name``."""
    admin.create_topics([NewTopic(name, 1, 1)])
    consumer = KafkaConsumer(
        bootstrap_servers=services.kafka_bootstrap, group_id=name, enable_auto_commit=False
    )
    try:
        consumer.commit({TopicPartition(name, 0): OffsetAndMetadata(0, "", -1)})
    finally:
        consumer.close()
    engine = engine_for(services.database_url)
    with engine.begin() as conn:
        conn.execute(sa.text(f'CREATE SCHEMA "{name}"'))
        conn.execute(sa.text(f'CREATE TABLE "{name}".t (x int)'))
    engine.dispose()


def _context(services: TestServices, run_id: str) -> BenchContext:
    bootstrap, url = services.kafka_bootstrap, services.database_url
    return BenchContext(bootstrap, url, Sizes.quick(), Path("."), True, run_id=run_id)


def _present(services: TestServices, admin: KafkaAdminClient, name: str) -> set[str]:
    engine = engine_for(services.database_url)
    with engine.connect() as conn:
        schemas = set(conn.execute(sa.text("SELECT nspname FROM pg_namespace")).scalars())
        databases = set(conn.execute(sa.text("SELECT datname FROM pg_database")).scalars())
    engine.dispose()
    groups = {g["group_id"] for g in admin.list_groups()}
    kinds = {
        "topic": name in admin.list_topics(),
        "group": name in groups,
        "schema": name in schemas,
        "database": name in databases,
    }
    return {kind for kind, there in kinds.items() if there}


def _gone(services: TestServices, admin: KafkaAdminClient, name: str) -> set[str]:
    """What is left of ``name`` once a deletion has reached the broker's metadata."""
    for _ in range(50):
        left = _present(services, admin, name)
        if not left:
            break
        time.sleep(0.1)
    return left


def test_leftovers_of_dead_runs_go_and_those_of_live_runs_stay(
    services: TestServices, admin: KafkaAdminClient
) -> None:
    dead, live = new_run_id(), new_run_id()
    dead_name, live_name = (_context(services, run).name("projection") for run in (dead, live))
    stranger = f"benchmark_{dead}_mine"  # not a bench run's name, though it has the id
    for name in (dead_name, live_name, stranger):
        _leave(services, admin, name)
    dead_db = f"bench_{dead}_peer"
    engine = engine_for(services.database_url)
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{dead_db}"'))
    engine.dispose()
    try:
        with holding_run(services.database_url, live):
            swept = sweep(services.kafka_bootstrap, services.database_url)

            assert dead in swept.runs and live not in swept.runs
            assert dead_name in swept.topics and dead_db in swept.databases
            assert _gone(services, admin, dead_name) == set()
            assert _gone(services, admin, dead_db) == set()
            assert _present(services, admin, live_name) == {"topic", "group", "schema"}
            assert _present(services, admin, stranger) == {"topic", "group", "schema"}

        # the live run has ended without cleaning up: the next sweep takes its leftovers
        assert live in sweep(services.kafka_bootstrap, services.database_url).runs
        assert _gone(services, admin, live_name) == set()
    finally:
        admin.delete_topics([n for n in (live_name, stranger) if n in admin.list_topics()])
        admin.delete_groups([live_name, stranger])
        engine = engine_for(services.database_url)
        with engine.begin() as conn:
            for name in (live_name, stranger):
                conn.execute(sa.text(f'DROP SCHEMA IF EXISTS "{name}" CASCADE'))
        engine.dispose()
