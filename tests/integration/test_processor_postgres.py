"""`crm process` for real: Kafka in, PostgreSQL out, worker processes killed with
SIGKILL at random moments, a second worker joining and leaving. The final single
customer view must equal the one computed at once from the events published."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from crm.bootstrap import build_protector
from crm.devservices.testing import TestServices
from crm.settings import Settings
from events.kafka import KafkaEventLog
from producers.synthetic import SyntheticTouchpoints
from projections.faust_app import DEFAULT_STOP_TIMEOUT_S
from projections.sql import create_engine_for
from projections.store import SqlProjectionStore
from projections.tables import outbox
from schemas import Envelope
from tests.projection_harness import expected, projected

PARTITIONS = 4


class Deployment:
    """One topic, one schema, one consumer group, and `crm process` workers."""

    def __init__(self, services: TestServices, logs: Path) -> None:
        name = uuid.uuid4().hex[:8]
        self.topic = f"crash-{name}"
        self.logs = logs
        self.env = {
            **os.environ,
            "CRM_KAFKA_BOOTSTRAP": services.kafka_bootstrap,
            "CRM_DATABASE_URL": services.database_url,
            "CRM_TOPIC": self.topic,
            "CRM_DEADLETTER_TOPIC": f"{self.topic}-dlq",
            "CRM_PROJECTION_SCHEMA": f"crash_{name}",
            "CRM_PARTITIONS": str(PARTITIONS),
        }
        self.group = f"projections-{name}"
        self.log = KafkaEventLog(services.kafka_bootstrap, self.topic, partitions=PARTITIONS)
        self.engine = create_engine_for(services.database_url, None)  # type: ignore[arg-type]
        self.store = SqlProjectionStore(self.engine, schema=f"crash_{name}")
        # the workers' key store (same database and master key): their identity hashes
        self.hasher = build_protector(Settings(database_url=services.database_url)).hasher
        self.store.create()
        self.workers: list[subprocess.Popen[bytes]] = []

    def start_worker(self) -> subprocess.Popen[bytes]:
        out = (self.logs / f"worker-{len(self.workers)}.log").open("wb")
        proc = subprocess.Popen(
            [
                sys.executable,
                "-c",
                "from crm.cli import app; app()",
                "process",
                "--workers-group",
                self.group,
                "--batch-size",
                "500",
                "--batch-wait",
                "0.2",
                "--log-level",
                "info",
            ],
            env=self.env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
        self.workers.append(proc)
        return proc

    def wait_assigned(self, worker: int, timeout: float = 120) -> None:
        """Until worker number ``worker`` has been given partitions (it logs where it starts)."""
        log = self.logs / f"worker-{worker}.log"
        deadline = time.monotonic() + timeout
        while b"starting at checkpoints" not in log.read_bytes():
            assert time.monotonic() < deadline, self.tail()
            time.sleep(0.2)

    def publish_in_background(self, events: list[Envelope]) -> threading.Thread:
        def run() -> None:
            for start in range(0, len(events), 1_000):
                self.log.append(events[start : start + 1_000])
                time.sleep(0.1)

        thread = threading.Thread(target=run)
        thread.start()
        return thread

    def settled(self) -> bool:
        """Everything in the topic applied and no derived event left to publish."""
        ends = self.log.end_offsets()
        done = self.store.checkpoints(self.topic)
        mapped = self.engine.execution_options(schema_translate_map={None: self.store.schema})
        with mapped.connect() as conn:
            pending = conn.execute(sa.select(sa.func.count()).select_from(outbox)).scalar_one()
        return pending == 0 and all(done.get(p, 0) >= end for p, end in ends.items())

    def wait_settled(self, timeout: float = 240) -> None:
        deadline = time.monotonic() + timeout
        stable = 0
        while stable < 3:  # derived events appended by the workers arrive a little later
            assert time.monotonic() < deadline, self.tail()
            stable = stable + 1 if self.settled() else 0
            time.sleep(1)

    def tail(self) -> str:
        return "\n".join(
            f"--- {p.name}\n" + p.read_text(errors="replace")[-12_000:]
            for p in sorted(self.logs.glob("worker-*.log"))
        )

    def close(self) -> None:
        for proc in self.workers:
            if proc.poll() is None:
                proc.kill()
            proc.wait(30)
        self.log.close()
        self.engine.dispose()


@pytest.fixture
def deployment(services: TestServices, tmp_path: Path) -> Iterator[Deployment]:
    d = Deployment(services, tmp_path)
    yield d
    d.close()


def _events(count: int, seed: int) -> list[Envelope]:
    return list(SyntheticTouchpoints(customers=1_500, seed=seed).events(count))


def test_kill_9_at_random_moments_loses_and_double_counts_nothing(
    deployment: Deployment, capsys: pytest.CaptureFixture[str]
) -> None:
    events = _events(30_000, seed=77)
    rng = random.Random(77)
    publisher = deployment.publish_in_background(events)
    started = time.monotonic()
    for _ in range(3):
        worker = deployment.start_worker()
        time.sleep(rng.uniform(6, 12))  # faust needs a few seconds to join the group
        assert worker.poll() is None, deployment.tail()
        worker.send_signal(signal.SIGKILL)
        worker.wait(30)
    final = deployment.start_worker()
    publisher.join(300)
    deployment.wait_settled()
    final.send_signal(signal.SIGTERM)
    assert final.wait(DEFAULT_STOP_TIMEOUT_S + 15) == 0, deployment.tail()
    elapsed = time.monotonic() - started

    got = projected(deployment.store)
    want = expected(events, deployment.store.shared_threshold, deployment.hasher)
    assert len(got[0]) == len(events), "an event was lost or counted twice"
    assert got == want
    with capsys.disabled():
        print(f"\n[figures] crm process, 30,000 events, 3 SIGKILLs: settled in {elapsed:.0f}s")


def test_a_second_worker_joining_and_leaving_changes_nothing(deployment: Deployment) -> None:
    events = _events(20_000, seed=78)
    first = deployment.start_worker()
    time.sleep(6)
    publisher = deployment.publish_in_background(events)
    time.sleep(3)
    second = deployment.start_worker()  # joins mid-stream: the group rebalances
    deployment.wait_assigned(1)
    time.sleep(3)  # applies some batches
    second.send_signal(signal.SIGTERM)  # leaves mid-stream: rebalances again
    assert second.wait(DEFAULT_STOP_TIMEOUT_S + 15) == 0, deployment.tail()
    publisher.join(300)
    deployment.wait_settled()
    first.send_signal(signal.SIGTERM)
    assert first.wait(DEFAULT_STOP_TIMEOUT_S + 15) == 0, deployment.tail()
    assert projected(deployment.store) == expected(
        events, deployment.store.shared_threshold, deployment.hasher
    )
