"""Shared fixtures. Integration services start once per session, only when a test asks.

Which services: ``CRM_TEST_KAFKA_BOOTSTRAP`` + ``CRM_TEST_DATABASE_URL`` if set, else
testcontainers when a Docker daemon answers, else a local Kafka broker and PostgreSQL
started from Maven's Kafka jars and Debian's PostgreSQL binaries (see ``crm dev``).
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from crm.devservices.testing import TestServices, services_for_tests

_started: list[TestServices] = []

# Every LoopCRM process of a test run shares the key store of the test PostgreSQL, so they
# must share its master key too (a real installation sets CRM_MASTER_KEY the same way).
os.environ.setdefault("CRM_MASTER_KEY", "dGVzdHMtb25seS1tYXN0ZXIta2V5LTMyLWJ5dGVzISE")


@pytest.fixture(scope="session")
def services(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestServices]:
    with services_for_tests(tmp_path_factory.mktemp("services")) as started:
        _started.append(started)
        yield started


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
