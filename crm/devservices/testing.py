"""Real Kafka and PostgreSQL for the test suite, from wherever they can be had.

``services_for_tests(home)`` resolves, in order:

1. ``env``: ``CRM_TEST_KAFKA_BOOTSTRAP`` and ``CRM_TEST_DATABASE_URL`` name running
   services (both or neither; ``CRM_TEST_KAFKA_VERSION`` may state the broker version);
2. ``testcontainers``: a Docker daemon answers within 5 s: ``apache/kafka:4.1.1`` (KRaft)
   and ``postgres:16`` containers (if they fail to start, a warning is issued and
   local services are used instead);
3. ``local``: ``LocalKafka`` + ``LocalPostgres`` under ``home`` (started concurrently).

``CRM_TEST_SERVICES=local`` or ``=testcontainers`` forces a choice among 2 and 3.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal

import sqlalchemy as sa
from kafka import KafkaAdminClient
from sqlalchemy.pool import NullPool

from crm.devservices._containers import (
    docker_available,
    make_kafka_container,
    make_postgres_container,
)
from crm.devservices.errors import DevServiceError
from crm.devservices.kafka import KAFKA_VERSION, LocalKafka
from crm.devservices.postgres import LocalPostgres

__all__ = ["TestServices", "services_for_tests"]

Origin = Literal["env", "testcontainers", "local"]


@dataclass(frozen=True)
class TestServices:
    """Endpoints of running services. ``kafka`` is the broker's control handle (for
    crash/restart tests) and is present only when ``origin == "local"``."""

    __test__: ClassVar[bool] = False  # not a pytest test class

    kafka_bootstrap: str
    database_url: str
    origin: Origin
    kafka_version: str
    postgres_version: str
    kafka: LocalKafka | None = None


@contextmanager
def services_for_tests(home: Path) -> Iterator[TestServices]:
    """Provide running Kafka and PostgreSQL for the block (see the module doc).

    Services this function started are stopped on exit, also when the block raised;
    a local PostgreSQL cluster whose data had to live outside ``home`` (as root) is
    deleted as well. Raises DevServiceError if no source of services works.
    """
    from_env = _from_env()
    if from_env is not None:
        yield from_env
        return
    choice = os.environ.get("CRM_TEST_SERVICES", "auto")
    if choice not in ("auto", "local", "testcontainers"):
        raise DevServiceError(f"CRM_TEST_SERVICES must be auto, local or testcontainers: {choice}")
    with ExitStack() as cleanup:
        services: TestServices | None = None
        if choice == "testcontainers" or (choice == "auto" and docker_available()):
            try:
                services = _start_containers(cleanup)
            except Exception as exc:
                if choice == "testcontainers":
                    raise
                cleanup.close()
                warnings.warn(
                    f"testcontainers failed ({type(exc).__name__}: {exc}); "
                    "falling back to local services",
                    RuntimeWarning,
                    stacklevel=3,
                )
        if services is None:
            services = _start_local(cleanup, Path(home))
        yield services


def _from_env() -> TestServices | None:
    bootstrap = os.environ.get("CRM_TEST_KAFKA_BOOTSTRAP")
    url = os.environ.get("CRM_TEST_DATABASE_URL")
    if not bootstrap and not url:
        return None
    if not (bootstrap and url):
        raise DevServiceError(
            "set both CRM_TEST_KAFKA_BOOTSTRAP and CRM_TEST_DATABASE_URL, or neither"
        )
    version = os.environ.get("CRM_TEST_KAFKA_VERSION") or _probe_kafka_version(bootstrap)
    return TestServices(bootstrap, url, "env", version, postgres_version(url))


def _start_containers(cleanup: ExitStack) -> TestServices:
    kafka = make_kafka_container()
    postgres = make_postgres_container()

    cleanup.callback(kafka.stop)  # stopping a never-started container is a no-op
    cleanup.callback(postgres.stop)
    _concurrently({"kafka": lambda: kafka.start(timeout=180), "postgres": postgres.start})
    url = str(postgres.get_connection_url())
    bootstrap = str(kafka.get_bootstrap_server())
    return TestServices(bootstrap, url, "testcontainers", KAFKA_VERSION, postgres_version(url))


def _start_local(cleanup: ExitStack, home: Path) -> TestServices:
    kafka = LocalKafka(home / "kafka")
    postgres = LocalPostgres(home / "postgres")
    cleanup.callback(kafka.stop)
    inside_home = postgres.data_root.is_relative_to(postgres.home)
    cleanup.callback(postgres.stop if inside_home else postgres.destroy)
    _concurrently({"kafka": kafka.start, "postgres": postgres.start})
    return TestServices(
        kafka.bootstrap, postgres.url, "local", kafka.version, postgres_version(postgres.url), kafka
    )


def _concurrently(tasks: dict[str, Callable[[], Any]]) -> None:
    """Run ``tasks`` in threads; raise DevServiceError naming every failure."""
    with ThreadPoolExecutor(max_workers=len(tasks), thread_name_prefix="test-services") as pool:
        futures = {name: pool.submit(task) for name, task in tasks.items()}
    errors = {name: f.exception() for name, f in futures.items() if f.exception() is not None}
    if errors:
        detail = "\n\n".join(f"{name}: {type(e).__name__}: {e}" for name, e in errors.items())
        raise DevServiceError(f"could not start test services:\n{detail}")


def postgres_version(url: str) -> str:
    """``SHOW server_version`` of the server at SQLAlchemy ``url`` (e.g. ``"15.18"``)."""
    engine = sa.create_engine(
        sa.engine.make_url(url).set(drivername="postgresql+psycopg2"), poolclass=NullPool
    )
    try:
        with engine.connect() as conn:
            version = str(conn.execute(sa.text("SHOW server_version")).scalar_one())
    finally:
        engine.dispose()
    return version.split()[0]


def _probe_kafka_version(bootstrap: str) -> str:
    """``"major.minor"`` as inferred by kafka-python from the broker's API versions."""
    try:
        admin = KafkaAdminClient(bootstrap_servers=bootstrap, client_id="loopcrm-version-probe")
    except Exception:
        return "unknown"
    try:
        version = admin._client.check_version()
        return ".".join(str(part) for part in version) if version else "unknown"
    except Exception:
        return "unknown"
    finally:
        admin.close()
