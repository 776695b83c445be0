"""The Docker-free dev services: a real Kafka broker and a real PostgreSQL, started,
crashed, restarted and stopped for real (needs Java 17+, Maven and PostgreSQL binaries).
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import NewTopic
from sqlalchemy.pool import NullPool
from typer.testing import CliRunner

from crm.cli_dev import dev_app
from crm.devservices import DevStack, LocalKafka, LocalPostgres
from crm.devservices.testing import services_for_tests

pytestmark = pytest.mark.integration

TOPIC = "devservices.probe"


def processes_mentioning(*paths: Path) -> list[str]:
    """Command lines of live processes naming any of ``paths`` (zombies have none)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if any(str(path) in command for path in paths):
            found.append(f"{entry.name}: {command}")
    return found


def read_all(bootstrap: str, topic: str) -> list[tuple[bytes | None, bytes | None]]:
    """Every record of partition 0 of ``topic``, from the beginning."""
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    try:
        partition = TopicPartition(topic, 0)
        consumer.assign([partition])
        consumer.seek_to_beginning(partition)
        end = consumer.end_offsets([partition])[partition]
        records: list[tuple[bytes | None, bytes | None]] = []
        deadline = time.monotonic() + 30
        while consumer.position(partition) < end and time.monotonic() < deadline:
            for batch in consumer.poll(timeout_ms=1000).values():
                records += [(r.key, r.value) for r in batch]
        return records
    finally:
        consumer.close()


def query(url: str, statement: str) -> list[tuple[object, ...]]:
    engine = sa.create_engine(url, poolclass=NullPool)
    try:
        with engine.begin() as conn:
            result = conn.execute(sa.text(statement))
            return [tuple(row) for row in result] if result.returns_rows else []
    finally:
        engine.dispose()


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("devservices")


@pytest.fixture(scope="module")
def kafka(home: Path) -> Iterator[LocalKafka]:
    broker = LocalKafka(home / "kafka")
    started = time.monotonic()
    broker.start()
    print(f"\nLocalKafka started in {time.monotonic() - started:.1f}s")
    yield broker
    broker.stop()


@pytest.fixture(scope="module")
def postgres(home: Path) -> Iterator[LocalPostgres]:
    server = LocalPostgres(home / "postgres")
    started = time.monotonic()
    server.start()
    print(f"\nLocalPostgres started in {time.monotonic() - started:.1f}s")
    yield server
    server.destroy()


def test_broker_answers_and_data_survives_a_crash(kafka: LocalKafka) -> None:
    assert kafka.bootstrap == f"127.0.0.1:{kafka.port}"
    assert kafka.version == "4.1.1"
    admin = KafkaAdminClient(bootstrap_servers=kafka.bootstrap)
    try:
        admin.create_topics([NewTopic(TOPIC, 1, 1)])
    finally:
        admin.close()
    producer = KafkaProducer(bootstrap_servers=kafka.bootstrap, acks="all")
    try:
        producer.send(TOPIC, key=b"k1", value=b"hello").get(timeout=30)
    finally:
        producer.close()
    assert read_all(kafka.bootstrap, TOPIC) == [(b"k1", b"hello")]

    pid = kafka.pid
    assert pid is not None
    kafka.kill()
    assert not kafka.is_running() and kafka.pid is None
    assert processes_mentioning(kafka.home) == []

    started = time.monotonic()
    kafka.start()
    print(f"\nLocalKafka restarted after SIGKILL in {time.monotonic() - started:.1f}s")
    assert kafka.pid not in (None, pid)
    admin = KafkaAdminClient(bootstrap_servers=kafka.bootstrap)
    try:
        assert TOPIC in admin.list_topics()
    finally:
        admin.close()
    assert read_all(kafka.bootstrap, TOPIC) == [(b"k1", b"hello")]


def test_postgres_answers_and_data_survives_a_restart(postgres: LocalPostgres) -> None:
    assert postgres.url == f"postgresql+psycopg2://postgres@127.0.0.1:{postgres.port}/postgres"
    [(version,)] = query(postgres.url, "SELECT version()")
    assert str(version).startswith(f"PostgreSQL {postgres.version}")
    [(listen,)] = query(postgres.url, "SHOW listen_addresses")
    assert listen == "127.0.0.1"

    url = postgres.create_database("devservices_probe")
    assert url.endswith("/devservices_probe")
    assert postgres.create_database("devservices_probe") == url  # idempotent
    query(url, "CREATE TABLE probe (id int PRIMARY KEY, note text)")
    query(url, "INSERT INTO probe VALUES (1, 'kept')")

    postgres.stop()
    assert not postgres.is_running()
    postgres.start()
    assert query(url, "SELECT id, note FROM probe") == [(1, "kept")]


def test_services_for_tests_prefers_env(
    kafka: LocalKafka, postgres: LocalPostgres, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CRM_TEST_KAFKA_BOOTSTRAP", kafka.bootstrap)
    monkeypatch.setenv("CRM_TEST_DATABASE_URL", postgres.url)
    with services_for_tests(Path("/nonexistent")) as services:
        assert services.origin == "env"
        assert services.kafka is None
        assert (services.kafka_bootstrap, services.database_url) == (kafka.bootstrap, postgres.url)
        assert services.kafka_version.startswith("4.")
        assert services.postgres_version == postgres.version
    assert kafka.is_running() and postgres.is_running()  # not ours to stop


def test_stop_leaves_no_process_behind(
    home: Path, kafka: LocalKafka, postgres: LocalPostgres
) -> None:
    pids = [kafka.pid, postgres.pid]
    assert None not in pids
    kafka.stop()
    postgres.stop()
    kafka.stop()  # idempotent
    postgres.stop()
    assert not kafka.is_running() and not postgres.is_running()
    assert processes_mentioning(home, postgres.data_root) == []
    assert all(not Path(f"/proc/{pid}/cmdline").exists() or _zombie(pid) for pid in pids)


def _zombie(pid: int | None) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat[stat.rfind(")") + 2] in "ZX"


def test_services_for_tests_local_stops_everything(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("CRM_TEST_KAFKA_BOOTSTRAP", "CRM_TEST_DATABASE_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("CRM_TEST_SERVICES", "local")
    data_root = LocalPostgres(tmp_path / "postgres").data_root
    with pytest.raises(RuntimeError, match="body failed"), services_for_tests(tmp_path) as services:
        assert services.origin == "local"
        assert services.kafka is not None and services.kafka.is_running()
        assert services.kafka_version == "4.1.1"
        assert query(services.database_url, "SELECT 1") == [(1,)]
        raise RuntimeError("body failed")
    assert processes_mentioning(tmp_path, data_root) == []


def test_devstack_round_trip(tmp_path: Path) -> None:
    stack = DevStack(tmp_path / "dev")
    runner = CliRunner()
    try:
        assert stack.status()["configured"] is False
        started = time.monotonic()
        status = stack.up()
        print(f"\nDevStack.up() (both, concurrently) took {time.monotonic() - started:.1f}s")
        assert status["kafka"]["running"] and status["postgres"]["running"]
        assert stack.up() == status  # no-op when running

        env = stack.env()
        assert env == {
            "CRM_KAFKA_BOOTSTRAP": status["kafka"]["bootstrap"],
            "CRM_DATABASE_URL": status["postgres"]["url"],
        }
        assert query(env["CRM_DATABASE_URL"], "SELECT 1") == [(1,)]
        admin = KafkaAdminClient(bootstrap_servers=env["CRM_KAFKA_BOOTSTRAP"])
        try:
            assert admin.describe_cluster()["brokers"]
        finally:
            admin.close()

        again = DevStack(tmp_path / "dev")  # as a later, separate `crm dev` process would
        assert again.status()["kafka"]["pid"] == status["kafka"]["pid"]
        result = runner.invoke(dev_app, ["env", "--home", str(stack.home)])
        assert result.exit_code == 0, result.output
        assert f"export CRM_KAFKA_BOOTSTRAP={env['CRM_KAFKA_BOOTSTRAP']}" in result.stdout
        result = runner.invoke(dev_app, ["status", "--home", str(stack.home)])
        assert result.exit_code == 0 and "running" in result.output

        again.down()
        assert processes_mentioning(stack.home, stack.postgres.data_root) == []
        after = stack.status()
        assert not after["kafka"]["running"] and not after["postgres"]["running"]
        assert after["kafka"]["pid"] is None and after["postgres"]["pid"] is None
    finally:
        stack.down()
        stack.postgres.destroy()
