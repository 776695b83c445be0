"""COPY's text form of times is exactly what ``isoformat`` writes, whatever the tzinfo;
and the column-by-column writer of whole rows writes what the value-by-value one does."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta, timezone, tzinfo
from typing import Any

import pytest
import sqlalchemy as sa
from hypothesis import example, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel

from projections.sql import RawJson, _copy_lines, _copy_text, _json_text


class _Stamped(BaseModel):
    at: datetime


class _Odd(tzinfo):
    """A tzinfo of no library (orjson asks it for its offset)."""

    def utcoffset(self, dt: datetime | None) -> timedelta:
        return timedelta(hours=1)

    def dst(self, dt: datetime | None) -> timedelta:
        return timedelta(0)

    def tzname(self, dt: datetime | None) -> str:
        return "ODD"


@pytest.mark.parametrize(
    "value",
    [
        datetime(2026, 5, 1, 12, 0, 0, 250000, tzinfo=UTC),
        datetime(2026, 5, 1, 12, 0),  # naive
        datetime(2026, 5, 1, 23, 59, 59, 1, tzinfo=timezone(timedelta(hours=-5, minutes=-30))),
        datetime(2026, 5, 1, 0, 0, 30, tzinfo=timezone(timedelta(seconds=30))),
        datetime(2026, 5, 1, 0, 0, 30, tzinfo=timezone(timedelta(seconds=-30))),
        datetime(2026, 5, 1, 12, tzinfo=timezone(timedelta(hours=1, microseconds=5))),
        _Stamped.model_validate({"at": "2026-05-01T12:00:00.5Z"}).at,  # pydantic's TzInfo
        _Stamped.model_validate({"at": "2026-05-01T12:00:00+02:00"}).at,
        datetime(2026, 5, 1, 12, tzinfo=_Odd()),
        date(2026, 5, 1),
    ],
)
def test_times_are_written_as_isoformat_writes_them(value: datetime | date) -> None:
    assert _copy_text(value) == value.isoformat()


_ZONES = st.sampled_from(
    [None, UTC, timezone(timedelta(hours=2)), timezone(timedelta(seconds=30)), _Odd()]
)
_VALUES = st.one_of(
    st.none(),
    st.text(alphabet=st.sampled_from('ab \\\t\n\r"é{}')),
    st.builds(RawJson, st.sampled_from(['{"a":1}', '{"b":"x\\\\ty"}', "[]"])),
    st.integers(-(2**63), 2**63 - 1),
    st.floats(allow_nan=False),
    st.booleans(),
    st.builds(
        lambda d, zone: d.replace(tzinfo=zone),
        st.datetimes(min_value=datetime(1900, 1, 1)),
        _ZONES,
    ),
    st.dates(),
    st.binary(max_size=8),
)
# a column is usually of one type; sometimes of several
_COLUMN = st.one_of(
    _VALUES.flatmap(lambda v: st.lists(st.just(v) | st.none(), min_size=1, max_size=6)),
    st.lists(_VALUES, min_size=1, max_size=6),
)


@settings(max_examples=300, deadline=None)
@example(columns=[["a\rb", None, "c"]], json_at=set())
@example(columns=[["a\nb"], ["x\ty"], ["\\"]], json_at=set())
@given(columns=st.lists(_COLUMN, min_size=1, max_size=5), json_at=st.sets(st.integers(0, 4)))
def test_copy_lines_writes_what_copy_text_writes_value_by_value(
    columns: list[list[Any]], json_at: set[int]
) -> None:
    """The column-by-column writer gives the text of the simple one: a line per row,
    each value as ``_copy_text`` writes it, JSON columns dumped first."""
    rows_n = min(len(c) for c in columns)
    json_at = {i for i in json_at if i < len(columns)}
    table = sa.Table(
        "t",
        sa.MetaData(),
        *(
            sa.Column(f"c{i}", sa.JSON() if i in json_at else sa.Text())
            for i in range(len(columns))
        ),
    )
    rows = [{f"c{i}": column[r] for i, column in enumerate(columns)} for r in range(rows_n)]
    if any(isinstance(row[f"c{i}"], bytes) for row in rows for i in json_at):
        return  # not JSON
    expected = [
        "\t".join(
            _copy_text(_json_text(row[c.name]) if i in json_at else row[c.name])
            for i, c in enumerate(table.columns)
        )
        for row in rows
    ]
    assert _copy_lines(list(table.columns), rows) == "\n".join([*expected, ""])
