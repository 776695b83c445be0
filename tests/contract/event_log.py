"""The EventLog contract, written once; each adapter's test module subclasses it.

A subclass provides ``make_log(topic, partitions)`` returning a fresh log on a new
topic, and may reopen the same topic by calling it again with the same name.
"""

from __future__ import annotations

import time
import uuid
from collections import defaultdict
from collections.abc import Callable
from datetime import UTC, datetime

import pytest

from events import EventLog, OutgoingRecord, decode_event, partition_for, partition_key
from events.codec import TYPE_HEADER, VERSION_HEADER
from producers.synthetic import SyntheticTouchpoints
from schemas import Envelope

MakeLog = Callable[[str, int], EventLog]


def _events(n: int, seed: int = 7) -> list[Envelope]:
    return list(SyntheticTouchpoints(customers=50, seed=seed).events(n))


class EventLogContract:
    @pytest.fixture
    def make_log(self) -> MakeLog:  # pragma: no cover - overridden
        raise NotImplementedError("subclasses provide make_log")

    @pytest.fixture
    def topic(self) -> str:
        return f"contract-{uuid.uuid4().hex[:10]}"

    def test_append_returns_positions_and_read_returns_every_event(
        self, make_log: MakeLog, topic: str
    ) -> None:
        log = make_log(topic, 4)
        events = _events(500)
        positions = log.append(events)
        assert len(positions) == len(events)
        records = list(log.read())
        assert len(records) == len(events)
        by_position = {r.position: r for r in records}
        for event, position in zip(events, positions, strict=True):
            assert decode_event(by_position[position].value) == event

    def test_one_key_stays_in_one_partition_in_append_order(
        self, make_log: MakeLog, topic: str
    ) -> None:
        log = make_log(topic, 4)
        events = _events(400)
        positions = log.append(events[:200]) + log.append(events[200:])
        last_offset: dict[bytes, tuple[int, int]] = {}
        partitions_used = set()
        for event, position in zip(events, positions, strict=True):
            key = partition_key(event)
            assert position.partition == partition_for(key, 4)
            partitions_used.add(position.partition)
            if key in last_offset:
                partition, offset = last_offset[key]
                assert position.partition == partition and position.offset > offset
            last_offset[key] = (position.partition, position.offset)
        assert len(partitions_used) == 4, "50 customers should spread over all partitions"
        read_order: dict[int, list[int]] = defaultdict(list)
        for record in log.read():
            read_order[record.partition].append(record.offset)
        assert all(offsets == sorted(offsets) for offsets in read_order.values())

    def test_records_carry_type_and_version_headers(self, make_log: MakeLog, topic: str) -> None:
        log = make_log(topic, 2)
        event = _events(1)[0]
        log.append([event])
        (record,) = list(log.read())
        assert record.header(TYPE_HEADER) == event.type.encode()
        assert record.header(VERSION_HEADER) == str(event.schema_version).encode()
        assert record.key == partition_key(event)
        assert b"@" not in record.key, "keys must not carry plain identifiers"

    def test_read_from_offsets_and_partitions(self, make_log: MakeLog, topic: str) -> None:
        log = make_log(topic, 3)
        log.append(_events(300))
        ends = log.end_offsets()
        assert sum(ends.values()) == 300
        middle = {p: end // 2 for p, end in ends.items()}
        tail = list(log.read(from_offsets=middle))
        assert len(tail) == sum(ends[p] - middle[p] for p in ends)
        assert all(r.offset >= middle[r.partition] for r in tail)
        only_one = list(log.read(partitions=[1]))
        assert {r.partition for r in only_one} == {1} and len(only_one) == ends[1]

    def test_read_until_offsets_stops_each_partition_there(
        self, make_log: MakeLog, topic: str
    ) -> None:
        log = make_log(topic, 3)
        log.append(_events(120))
        ends = log.end_offsets()
        cut = {p: end // 3 for p, end in ends.items()}
        read = list(log.read(until_offsets=cut))
        assert len(read) == sum(cut.values())
        assert all(r.offset < cut[r.partition] for r in read)
        middle = list(log.read(from_offsets=cut, until_offsets={0: ends[0]}))
        assert len(middle) == sum(ends[p] - cut[p] for p in ends)

    def test_read_from_time_returns_what_was_appended_since(
        self, make_log: MakeLog, topic: str
    ) -> None:
        log = make_log(topic, 2)
        before = _events(100, seed=1)
        after = _events(100, seed=2)
        log.append(before)
        time.sleep(0.05)
        cut = datetime.now(UTC)
        time.sleep(0.05)
        log.append(after)
        read = [decode_event(r.value).event_id for r in log.read(from_time=cut)]
        assert sorted(read) == sorted(e.event_id for e in after)
        assert all(r.timestamp >= cut for r in log.read(from_time=cut))
        offsets = log.offsets_for_time(cut)
        assert sum(log.end_offsets()[p] - o for p, o in offsets.items()) == 100

    def test_read_stops_at_the_end_seen_when_it_started(
        self, make_log: MakeLog, topic: str
    ) -> None:
        log = make_log(topic, 2)
        log.append(_events(50, seed=3))
        reader = log.read()
        first = next(reader)
        log.append(_events(50, seed=4))
        assert 1 + sum(1 for _ in reader) == 50
        assert first.offset == 0

    def test_raw_records_and_empty_appends(self, make_log: MakeLog, topic: str) -> None:
        log = make_log(topic, 2)
        assert log.append([]) == []
        positions = log.append_records(
            [
                OutgoingRecord(b"k", b"not json at all", (("reason", b"bad"),)),
                OutgoingRecord(None, b"x"),
            ]
        )
        assert len(positions) == 2
        records = {r.value: r for r in log.read()}
        assert records[b"not json at all"].header("reason") == b"bad"
        assert records[b"not json at all"].key == b"k"

    def test_reopened_log_sees_earlier_records_and_keeps_partitions(
        self, make_log: MakeLog, topic: str
    ) -> None:
        log = make_log(topic, 3)
        log.append(_events(30))
        log.close()
        again = make_log(topic, 5)
        assert again.partition_count() == 3
        assert sum(again.end_offsets().values()) == 30
        assert len(list(again.read())) == 30

    def test_bad_read_arguments_are_refused(self, make_log: MakeLog, topic: str) -> None:
        log = make_log(topic, 2)
        with pytest.raises(ValueError, match="not both"):
            list(log.read(from_offsets={0: 0}, from_time=datetime.now(UTC)))
        with pytest.raises(ValueError, match="timezone"):
            list(log.read(from_time=datetime(2026, 1, 1)))
        with pytest.raises(ValueError, match="partition 9"):
            list(log.read(partitions=[9]))
