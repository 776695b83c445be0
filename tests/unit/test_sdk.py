"""The Python SDK on the embedded log: validation, batching, flush/close, retries."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from uuid import UUID, uuid4

import pytest

from events import LogUnavailableError, Position, decode_event
from events.sqlite import SqliteEventLog
from producers.sdk import BufferFullError, Publisher, PublishError
from schemas import Envelope, EventValidationError, WebPageViewed

NOW = datetime(2026, 3, 14, 10, 0, tzinfo=UTC)
ANA = {"email": "Ana@Example.com"}


class RecordingLog(SqliteEventLog):
    """The embedded log, recording each append's size and failing on demand.

    ``fail_next`` appends raise; with ``store_before_failing`` they store the batch
    first, like a Kafka append whose acknowledgement was lost.
    """

    fail_next = 0
    store_before_failing = False

    def __init__(self, path: Path) -> None:
        super().__init__(path, "events", partitions=3)
        self.appends: list[int] = []

    def append(self, events: Sequence[Envelope]) -> list[Position]:
        if self.fail_next:
            self.fail_next -= 1
            if self.store_before_failing:
                super().append(events)
            raise LogUnavailableError("broker did not acknowledge")
        self.appends.append(len(events))
        return super().append(events)

    def event_ids(self) -> list[UUID]:
        return [decode_event(r.value).event_id for r in self.read()]


@pytest.fixture
def log(tmp_path: Path) -> Iterator[RecordingLog]:
    event_log = RecordingLog(tmp_path / "log.sqlite3")
    yield event_log
    event_log.close()


def _view(publisher: Publisher, n: int = 1) -> UUID:
    return publisher.page_viewed(
        identifiers=ANA, occurred_at=NOW, url=f"https://shop.example/p/{n}"
    )


def _wait_for(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.005)


@pytest.mark.parametrize(
    ("call", "loc"),
    [
        (lambda p: p.order_placed(identifiers=ANA, occurred_at=NOW, order_id="O-1",
                                  lines=[{"sku": "S", "quantity": 1, "unit_price": "1"}],
                                  currency="EUR", total="lots"), "payload.total"),
        (lambda p: p.order_placed(identifiers=ANA, occurred_at=NOW, order_id="O-1",
                                  lines=[{"sku": "S", "quantity": "3", "unit_price": "1"}],
                                  currency="EUR", total="3"), "payload.lines.0.quantity"),
        (lambda p: p.page_viewed(identifiers={"email": "not-an-email"}, occurred_at=NOW,
                                 url="https://x.example/"), "identifiers.email"),
        (lambda p: p.page_viewed(identifiers={}, occurred_at=NOW,
                                 url="https://x.example/"), "identifiers"),
        (lambda p: p.page_viewed(identifiers=ANA, occurred_at=datetime(2026, 1, 1),
                                 url="https://x.example/"), "occurred_at"),
        (lambda p: p.publish(WebPageViewed(url="https://x.example/"), identifiers=ANA,
                             channel="fax", occurred_at=NOW), "source.channel"),
        (lambda p: p.ticket_opened(identifiers=ANA, occurred_at=NOW, ticket_id="T-1",
                                   subject="late", priority="whenever"), "payload.priority"),
    ],
)  # fmt: skip
def test_invalid_events_are_refused_at_once_naming_the_field(
    log: RecordingLog, call: Callable[[Publisher], object], loc: str
) -> None:
    with Publisher(log, source_system="shop-eu") as publisher:
        with pytest.raises(EventValidationError) as caught:
            call(publisher)
        assert loc in [error.loc for error in caught.value.errors]
        assert str(caught.value).startswith(f"{loc}:")
        assert publisher.buffered == 0
    assert log.appends == []


def test_helpers_build_the_typed_events(log: RecordingLog) -> None:
    with Publisher(log, source_system="shop-eu") as publisher:
        order_id = publisher.order_placed(
            identifiers=ANA,
            occurred_at=NOW,
            order_id="O-1",
            lines=[{"sku": "SHO-1", "quantity": 2, "unit_price": "10.00"}],
            currency="EUR",
            total="20.00",
            store_id="LIS-1",
        )
        opened_id = publisher.email_opened(
            identifiers=ANA, occurred_at=NOW, message_id="M-1", campaign_id="C-1"
        )
        publisher.customer_registered(
            identifiers=ANA, occurred_at=NOW, first_name="Ana", locale="pt-PT"
        )
        publisher.call_logged(
            identifiers={"phone": "+14155550123"},
            occurred_at=NOW,
            call_id="CALL-1",
            direction="inbound",
            duration_seconds=300,
            reason="delivery",
        )
    events = {e.event_id: e for e in (decode_event(r.value) for r in log.read())}
    assert len(events) == 4
    order = events[order_id]
    assert (order.type, order.source.system, order.source.channel) == (
        "order.placed",
        "shop-eu",
        "ecommerce",
    )
    assert order.identifiers is not None and order.identifiers.email == "ana@example.com"
    assert (events[opened_id].type, events[opened_id].source.channel) == ("message.opened", "email")


def test_events_go_out_in_batches_of_batch_size(log: RecordingLog) -> None:
    with Publisher(log, source_system="web", batch_size=3, linger=60) as publisher:
        ids = [_view(publisher, n) for n in range(7)]
        _wait_for(lambda: publisher.acknowledged == 6)
        time.sleep(0.05)
        assert log.appends == [3, 3]
        assert publisher.buffered == 1
        publisher.flush()
        assert log.appends == [3, 3, 1]
    assert log.event_ids() == ids  # one key, one partition: publish order is kept


def test_a_partial_batch_goes_out_after_linger(log: RecordingLog) -> None:
    with Publisher(log, source_system="web", batch_size=1_000, linger=0.1) as publisher:
        started = time.monotonic()
        _view(publisher, 1)
        _view(publisher, 2)
        _wait_for(lambda: publisher.acknowledged == 2)
        assert time.monotonic() - started >= 0.1  # nobody flushed: the linger did
        assert publisher.buffered == 0
        assert sum(log.appends) == 2


def test_close_flushes_and_the_context_manager_closes(log: RecordingLog) -> None:
    with Publisher(log, source_system="web", batch_size=100, linger=60) as publisher:
        ids = [_view(publisher, n) for n in range(5)]
        assert log.appends == []
    assert sorted(log.event_ids()) == sorted(ids)
    with pytest.raises(RuntimeError, match="closed"):
        _view(publisher)
    publisher.close()  # closing twice is harmless
    assert log.end_offsets()  # a log the caller passed in stays open


def test_a_failed_flush_keeps_the_events_and_a_retry_sends_the_same_ids(
    log: RecordingLog,
) -> None:
    log.fail_next, log.store_before_failing = 1, True  # stored, but the ack was lost
    publisher = Publisher(log, source_system="web", batch_size=100, linger=60)
    ids = [_view(publisher, n) for n in range(10)]
    with pytest.raises(PublishError) as caught:
        publisher.flush()
    assert caught.value.failed == 10
    assert [e.event_id for e in caught.value.unsent] == ids
    assert "broker did not acknowledge" in str(caught.value)
    assert publisher.buffered == 10
    publisher.flush()
    publisher.close()
    stored = log.event_ids()
    assert len(stored) == 20  # the lost-ack batch went twice...
    assert set(stored) == set(ids)  # ...with the same ids, so consumers count each once


def test_the_background_thread_retries_with_backoff(log: RecordingLog) -> None:
    log.fail_next = 2
    with Publisher(log, source_system="web", batch_size=100, linger=0.01) as publisher:
        ids = [_view(publisher, n) for n in range(3)]
        _wait_for(lambda: publisher.buffered == 0)
    assert log.event_ids() == ids
    assert log.appends == [3]


def test_a_full_buffer_with_a_failing_target_refuses_new_events(log: RecordingLog) -> None:
    log.fail_next = 1_000
    publisher = Publisher(log, source_system="web", batch_size=5, linger=60, max_buffered=5)
    for n in range(5):
        _view(publisher, n)
    with pytest.raises(BufferFullError, match="buffer full"):
        _view(publisher, 99)
    assert publisher.buffered == 5
    log.fail_next = 0
    publisher.close()
    assert len(log.event_ids()) == 5


def test_publish_keeps_a_given_event_id(log: RecordingLog) -> None:
    event_id = uuid4()
    with Publisher(log, source_system="web") as publisher:
        returned = publisher.publish(
            WebPageViewed(url="https://x.example/"),
            identifiers=ANA,
            channel="web",
            occurred_at=NOW,
            event_id=event_id,
        )
    assert returned == event_id
    assert log.event_ids() == [event_id]


def test_publishers_share_nothing_between_threads(log: RecordingLog) -> None:
    import threading

    with Publisher(log, source_system="web", batch_size=50, linger=0.01) as publisher:
        threads = [
            threading.Thread(target=lambda: [_view(publisher, n) for n in range(200)])
            for _ in range(4)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    assert len(set(log.event_ids())) == 800
