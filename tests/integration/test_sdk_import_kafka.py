"""The SDK, bulk import and dead-letter replay on a real Kafka broker."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from typer.testing import CliRunner

from crm.cli import app
from crm.devservices.testing import TestServices
from events import decode_event
from events.kafka import KafkaEventLog
from privacy.crypto import b64, new_key
from privacy.protect import Protector
from producers.deadletters import dead_letter_record, read_dead_letters
from producers.sdk import Publisher
from schemas import Envelope

EXAMPLES = Path(__file__).parents[2] / "examples" / "import"
runner = CliRunner()


def _topic(kind: str) -> str:
    return f"{kind}-{uuid.uuid4().hex[:8]}"


def _read(bootstrap: str, topic: str) -> list[Envelope]:
    log = KafkaEventLog(bootstrap, topic, partitions=3)
    try:
        return [decode_event(r.value) for r in log.read()]
    finally:
        log.close()


@pytest.fixture
def kafka_env(
    services: TestServices, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[dict[str, str]]:
    env = {
        "CRM_KAFKA_BOOTSTRAP": services.kafka_bootstrap,
        "CRM_TOPIC": _topic("events"),
        "CRM_DEADLETTER_TOPIC": _topic("deadletters"),
        "CRM_PARTITIONS": "3",
        "CRM_DATA_DIR": str(tmp_path / "data"),
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.chdir(tmp_path)
    yield env


def test_sdk_publishes_every_event_exactly_once_to_kafka(
    services: TestServices, capsys: pytest.CaptureFixture[str]
) -> None:
    topic, n = _topic("sdk"), 20_000
    start = datetime(2026, 3, 1, tzinfo=UTC)
    sent = []
    with Publisher.to_kafka(
        services.kafka_bootstrap,
        topic,
        source_system="web-eu",
        partitions=3,
        protector=Protector.connect(
            services.database_url, b64(new_key()), schema=f"keys_{topic.replace('-', '_')}"
        ),
    ) as publisher:
        started = time.perf_counter()
        for i in range(n):
            sent.append(
                publisher.page_viewed(
                    identifiers={"device_id": f"dev-{i % 997}"},
                    occurred_at=start + timedelta(seconds=i),
                    url=f"https://shop.example/p/{i % 313}",
                    session_id=f"s-{i // 20}",
                )
            )
        publisher.flush()
        seconds = time.perf_counter() - started
        assert publisher.acknowledged == n
    read = _read(services.kafka_bootstrap, topic)
    assert len(read) == n
    assert {e.event_id for e in read} == set(sent)
    assert all(e.identifiers and str(e.identifiers.device_id).startswith("h1:") for e in read)
    with capsys.disabled():
        print(
            f"\n[figures] SDK Publisher to Kafka: {n:,} events validated, batched (500) and "
            f"acknowledged in {seconds:.2f}s = {n / seconds:,.0f} ev/s"
        )


def test_import_examples_into_kafka_twice_adds_no_new_event_ids(
    kafka_env: dict[str, str],
) -> None:
    for _ in range(2):
        for name, extension in (("customers", "csv"), ("orders", "jsonl")):
            result = runner.invoke(
                app,
                [
                    "import",
                    str(EXAMPLES / f"{name}.{extension}"),
                    "--mapping",
                    str(EXAMPLES / f"{name}.yaml"),
                ],
            )
            assert result.exit_code == 0, result.output
    events = _read(kafka_env["CRM_KAFKA_BOOTSTRAP"], kafka_env["CRM_TOPIC"])
    assert len(events) == 2 * (8 + 10)
    assert len({e.event_id for e in events}) == 8 + 10
    log = KafkaEventLog(kafka_env["CRM_KAFKA_BOOTSTRAP"], kafka_env["CRM_TOPIC"])
    try:
        raw = b"".join(r.value for r in log.read()).lower()
    finally:
        log.close()
    for plain in (b"ana.silva@example.com", b"okafor", b"+351912345678", b"c-1001"):
        assert (plain in raw) == (plain == b"c-1001"), plain  # account ids are not personal


def test_deadletter_replay_on_kafka(kafka_env: dict[str, str]) -> None:
    bootstrap = kafka_env["CRM_KAFKA_BOOTSTRAP"]
    truncated = (EXAMPLES / "orders.jsonl").read_bytes()[:200]  # stays invalid
    dlq = KafkaEventLog(bootstrap, kafka_env["CRM_DEADLETTER_TOPIC"], partitions=3)
    event_id = uuid.uuid4()
    good = (
        b'{"event_id":"' + str(event_id).encode() + b'","type":"web.page_viewed",'
        b'"schema_version":1,"occurred_at":"2026-03-01T00:00:00Z",'
        b'"source":{"system":"web","channel":"web"},"identifiers":{"device_id":"d-1"},'
        b'"payload":{"url":"https://shop.example/"}}'
    )
    dlq.append_records(
        [
            dead_letter_record(good, error="gateway was down", origin="gateway", key=b"k1"),
            dead_letter_record(truncated, error="malformed JSON", origin="gateway"),
        ]
    )
    try:
        first = runner.invoke(app, ["deadletters", "replay", "--all"])
        assert first.exit_code == 1, first.output  # one letter is still invalid
        assert "1 replayed, 1 still invalid" in first.output
        again = runner.invoke(app, ["deadletters", "replay", "--all"])
        assert "1 still invalid" in again.output and "replayed," not in again.output
        events = _read(bootstrap, kafka_env["CRM_TOPIC"])
        assert [e.event_id for e in events] == [event_id]
        letters = read_dead_letters(dlq)
        assert {letter.error: letter.replayed is not None for letter in letters} == {
            "gateway was down": True,
            "malformed JSON": False,
        }
        listed = runner.invoke(app, ["deadletters", "list"])
        assert listed.exit_code == 0 and "replayed" in listed.output
    finally:
        dlq.close()
