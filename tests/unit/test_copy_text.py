"""COPY's text form of times is exactly what ``isoformat`` writes, whatever the tzinfo."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta, timezone, tzinfo

import pytest
from pydantic import BaseModel

from projections.sql import _copy_text


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
