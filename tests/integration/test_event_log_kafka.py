"""KafkaEventLog on a real broker: the shared contract, volume, restarts, topic settings."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator

import pytest
from kafka import KafkaAdminClient
from kafka.admin import ConfigResource, ConfigResourceType

from crm.devservices.testing import TestServices
from events import EventLog, LogConfigError, LogUnavailableError, decode_event, partition_key
from events.kafka import KafkaEventLog
from producers.synthetic import SyntheticTouchpoints
from tests.contract.event_log import EventLogContract, MakeLog


@pytest.fixture
def open_logs() -> Iterator[list[EventLog]]:
    opened: list[EventLog] = []
    yield opened
    for log in opened:
        log.close()


class TestKafkaEventLog(EventLogContract):
    @pytest.fixture
    def make_log(self, services: TestServices, open_logs: list[EventLog]) -> MakeLog:
        def make(topic: str, partitions: int) -> EventLog:
            log = KafkaEventLog(services.kafka_bootstrap, topic, partitions=partitions)
            open_logs.append(log)
            return log

        return make


def test_thousands_of_events_across_partitions_keep_per_key_order(
    services: TestServices, open_logs: list[EventLog], capsys: pytest.CaptureFixture[str]
) -> None:
    log = KafkaEventLog(services.kafka_bootstrap, f"volume-{uuid.uuid4().hex[:8]}", partitions=6)
    open_logs.append(log)
    events = list(SyntheticTouchpoints(customers=2_000, seed=11).events(50_000))
    started = time.perf_counter()
    positions = []
    for i in range(0, len(events), 1_000):
        positions += log.append(events[i : i + 1_000])
    append_s = time.perf_counter() - started

    started = time.perf_counter()
    read = [(r.partition, r.offset, decode_event(r.value)) for r in log.read()]
    read_s = time.perf_counter() - started

    assert len(read) == len(events)
    assert {e.event_id for _, _, e in read} == {e.event_id for e in events}
    assert len({p.partition for p in positions}) == 6
    # Events of one key come back in the order they were appended.
    appended_order: dict[bytes, list[uuid.UUID]] = {}
    for event in events:
        appended_order.setdefault(partition_key(event), []).append(event.event_id)
    read_order: dict[bytes, list[uuid.UUID]] = {}
    for _, _, event in sorted(read, key=lambda t: (t[0], t[1])):
        read_order.setdefault(partition_key(event), []).append(event.event_id)
    assert read_order == appended_order
    with capsys.disabled():
        print(
            f"\n[figures] KafkaEventLog 50,000 events: append {len(events) / append_s:,.0f} ev/s "
            f"(batches of 1,000, acks=all, idempotent); read+decode {len(read) / read_s:,.0f} ev/s"
        )


def test_one_append_larger_than_a_batch_keeps_order_and_positions(
    services: TestServices, open_logs: list[EventLog]
) -> None:
    """One call whose records fill several producer batches (256 KiB each) of one
    partition: positions are consecutive, in the order given, and so is the log."""
    log = KafkaEventLog(services.kafka_bootstrap, f"split-{uuid.uuid4().hex[:8]}", partitions=1)
    open_logs.append(log)
    events = list(SyntheticTouchpoints(customers=500, seed=3).events(3_000))
    first = log.append(events[:1])
    positions = log.append(events[1:])
    assert sum(len(r.value) for r in log.records_of(events)) > 3 * 256 * 1024  # several batches
    assert [p.offset for p in first + positions] == list(range(len(events)))
    read = [decode_event(r.value).event_id for r in log.read()]
    assert read == [e.event_id for e in events]


def test_broker_crash_loses_no_acknowledged_event(
    services: TestServices, open_logs: list[EventLog]
) -> None:
    if services.kafka is None:
        pytest.skip("the broker is external (CRM_TEST_*/testcontainers): cannot crash it here")
    topic = f"restart-{uuid.uuid4().hex[:8]}"
    log = KafkaEventLog(services.kafka_bootstrap, topic, partitions=3, delivery_timeout_ms=5_000)
    open_logs.append(log)
    events = list(SyntheticTouchpoints(customers=300, seed=5).events(30_000))
    acked: set[uuid.UUID] = set()
    failures: list[str] = []
    stop = threading.Event()

    def keep_appending() -> None:
        for i in range(0, len(events), 100):
            if stop.is_set():
                return
            batch = events[i : i + 100]
            try:
                log.append(batch)
                acked.update(e.event_id for e in batch)
            except LogUnavailableError as exc:
                failures.append(str(exc))
            time.sleep(0.05)

    def wait_for(count: int, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while len(acked) < count and writer.is_alive():
            assert time.monotonic() < deadline, f"only {len(acked)} events acknowledged"
            time.sleep(0.05)

    writer = threading.Thread(target=keep_appending)
    writer.start()
    try:
        wait_for(1_000)
        services.kafka.kill()  # SIGKILL: no clean shutdown
        time.sleep(6)  # longer than the 5 s delivery timeout: some appends must fail
        acked_before_restart = len(acked)
        services.kafka.start()
        wait_for(acked_before_restart + 1_000)
    finally:
        stop.set()
        writer.join(60)
    assert failures, "appends during the outage should have failed, not been acknowledged"

    reader = KafkaEventLog(services.kafka_bootstrap, topic, partitions=3)
    open_logs.append(reader)
    stored = {decode_event(r.value).event_id for r in reader.read()}
    assert acked <= stored, f"{len(acked - stored)} acknowledged events lost"
    assert len(acked) >= acked_before_restart + 1_000, "appends did not resume after restart"


def test_topic_is_created_with_infinite_retention(
    services: TestServices, open_logs: list[EventLog]
) -> None:
    topic = f"retention-{uuid.uuid4().hex[:8]}"
    open_logs.append(KafkaEventLog(services.kafka_bootstrap, topic, partitions=2))
    admin = KafkaAdminClient(bootstrap_servers=services.kafka_bootstrap)
    try:
        described = admin.describe_configs(
            [ConfigResource(ConfigResourceType.TOPIC, topic)], config_filter="all"
        )["topic"][topic]
    finally:
        admin.close()
    assert str(described["retention.ms"]["value"]) == "-1"
    assert str(described["retention.bytes"]["value"]) == "-1"
    assert described["cleanup.policy"]["value"] == "delete"
    assert described["message.timestamp.type"]["value"] == "LogAppendTime"


def test_existing_topic_with_finite_retention_is_refused(services: TestServices) -> None:
    topic = f"expiring-{uuid.uuid4().hex[:8]}"
    admin = KafkaAdminClient(bootstrap_servers=services.kafka_bootstrap)
    try:
        admin.create_topics(
            {
                topic: {
                    "num_partitions": 1,
                    "replication_factor": 1,
                    "configs": {"retention.ms": "86400000"},
                }
            },
            wait_for_metadata=True,
        )
    finally:
        admin.close()
    with pytest.raises(LogConfigError, match=r"retention\.ms=86400000.*system of record"):
        KafkaEventLog(services.kafka_bootstrap, topic)


def test_unreachable_broker_gives_a_clear_error() -> None:
    with pytest.raises(LogUnavailableError, match=r"127\.0\.0\.1:1"):
        KafkaEventLog("127.0.0.1:1", "nowhere", delivery_timeout_ms=2_000)
