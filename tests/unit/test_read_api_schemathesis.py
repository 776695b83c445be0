"""schemathesis against the read API's own OpenAPI document, in-process (ASGI), on
SQLite projections of a real closed loop: no 5xx, and every response conforms to the
status codes, content types and schemas the document declares.

The app is built at import (its OpenAPI document needs no data) on a database the
module fixture fills before the first case runs."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
import schemathesis
from hypothesis import HealthCheck, settings

from auth import Scope, SqlApiKeyStore
from events.sqlite import SqliteEventLog
from projections.sql import create_engine_for
from projections.store import SqlProjectionStore, outbox_publisher
from read_api import create_app, create_read_engine
from tests.closed_loop import Clock
from tests.unit.test_read_api_loop import TOPIC, build_loop

if TYPE_CHECKING:
    from schemathesis.specs.openapi.schemas import OpenApiCase

DATA = Path(tempfile.mkdtemp(prefix="loopcrm-schemathesis-"))
KEYS = SqlApiKeyStore(create_engine_for(None, DATA / "auth.sqlite3"))
ENGINE = create_read_engine(None, DATA / "projections.sqlite3")
LOG = SqliteEventLog(DATA / "log.sqlite3", TOPIC, partitions=2)  # takes erasure requests
schema = schemathesis.openapi.from_asgi(
    "/openapi.json", create_app(ENGINE, KEYS, topic=TOPIC, event_log=LOG)
)
KEY: dict[str, str] = {}


@pytest.fixture(scope="module", autouse=True)
def projections() -> Iterator[None]:
    event_log = SqliteEventLog(DATA / "log.sqlite3", TOPIC, partitions=2)
    dead = SqliteEventLog(DATA / "log.sqlite3", "crm.deadletters", partitions=1)
    clock = Clock()
    store = SqlProjectionStore(
        create_engine_for(None, DATA / "projections.sqlite3"),
        publish=outbox_publisher(event_log, dead),
        clock=clock,
    )
    store.create()
    build_loop(event_log, store, clock)
    KEY["all"] = KEYS.create("schemathesis", [Scope.READ, Scope.ANALYST, Scope.ADMIN]).plaintext
    yield
    ENGINE.dispose()
    store.engine.dispose()
    LOG.close()
    shutil.rmtree(DATA, ignore_errors=True)


@schema.parametrize()
@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
def test_no_server_error_and_responses_match_the_document(case: OpenApiCase) -> None:
    if case.query and "wait_ms" in case.query:
        case.query["wait_ms"] = 0  # waiting is tested elsewhere; here it only costs time
    # Cursors are opaque tokens: a random string that fits their schema is still not a
    # cursor the API issued, so "schema-valid request rejected" does not apply to them.
    case.call_and_validate(
        headers={"Authorization": f"Bearer {KEY['all']}"},
        excluded_checks=[schemathesis.checks.positive_data_acceptance],
    )
