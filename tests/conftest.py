"""Shared fixtures. Integration services start once per session, only when a test asks.

Which services: ``CRM_TEST_KAFKA_BOOTSTRAP`` + ``CRM_TEST_DATABASE_URL`` if set, else
testcontainers when a Docker daemon answers, else a local Kafka broker and PostgreSQL
started from Maven's Kafka jars and Debian's PostgreSQL binaries (see ``crm dev``).
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator

import pytest
import sqlalchemy as sa
from kafka import KafkaAdminClient

from bench.pipeline import delete_topics, drop_schemas, engine_for
from crm.devservices.testing import TestServices, services_for_tests

_started: list[TestServices] = []

# Every LoopCRM process of a test run shares the key store of the test PostgreSQL, so they
# must share its master key too (a real installation sets CRM_MASTER_KEY the same way).
os.environ.setdefault("CRM_MASTER_KEY", "dGVzdHMtb25seS1tYXN0ZXIta2V5LTMyLWJ5dGVzISE")


TEST_NAME = re.compile(r"^[a-z]+(?:_[a-z]+)*[_-][0-9a-f]{8}(?![0-9a-f])")
"""Schemas and topics tests name for themselves (``spec_1a2b3c4d``, ``replay-1a2b3c4d…``,
``keys_sdk_1a2b3c4d``)."""


@pytest.fixture(scope="session")
def services(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestServices]:
    """Started for the session and stopped after it; or services of your own (from the
    environment), on which the schemas and topics the session's tests made are dropped
    at its end (of the names tests give, only those that were not there before)."""
    with services_for_tests(tmp_path_factory.mktemp("services")) as started:
        _started.append(started)
        before = _named_by_tests(started) if started.origin == "env" else None
        yield started
        if before is not None:
            schemas, topics = _named_by_tests(started)
            drop_schemas(started.database_url, *sorted(schemas - before[0]))
            delete_topics(started.kafka_bootstrap, topics - before[1])


def _named_by_tests(s: TestServices) -> tuple[set[str], set[str]]:
    """(schemas, topics) with names like those tests give."""
    engine = engine_for(s.database_url)
    try:
        with engine.connect() as conn:
            schemas = set(conn.execute(sa.text("SELECT nspname FROM pg_namespace")).scalars())
    finally:
        engine.dispose()
    admin = KafkaAdminClient(bootstrap_servers=s.kafka_bootstrap, client_id="loopcrm-tests")
    try:
        topics = set(admin.list_topics())
    finally:
        admin.close()
    return {n for n in schemas if TEST_NAME.match(n)}, {t for t in topics if TEST_NAME.match(t)}


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    for s in _started:
        terminalreporter.write_line(
            f"integration services ({s.origin}): Apache Kafka {s.kafka_version} at "
            f"{s.kafka_bootstrap}; PostgreSQL {s.postgres_version}",
            bold=True,
        )


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/integration/" in item.nodeid or "tests/e2e/" in item.nodeid:
            item.add_marker(pytest.mark.integration)
