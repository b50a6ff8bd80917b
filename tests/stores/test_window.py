"""``Window.bounds`` and ``Window.reset_at``: plain arithmetic, no store needed."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import pytest

from llmguard._stores._roles import Window

HOUR, DAY = 3600, 86400


def at(
    year: int,
    month: int,
    day: int,
    hour: int = 0,
    minute: int = 0,
    second: int = 0,
    *,
    tz: str = "UTC",
    fold: int = 0,
) -> float:
    """Epoch seconds of a wall-clock time in ``tz``: ``at(2024, 1, 15, 12)``."""
    local = datetime(year, month, day, hour, minute, second, tzinfo=ZoneInfo(tz), fold=fold)
    return local.timestamp()


def test_fixed_hour_is_aligned_to_the_hour() -> None:
    window = Window.fixed(3600)
    assert window.bounds(at(2024, 1, 15, 10, 59, 59)) == (at(2024, 1, 15, 10), at(2024, 1, 15, 11))
    assert window.bounds(at(2024, 1, 15, 11)) == (at(2024, 1, 15, 11), at(2024, 1, 15, 12))
    assert Window.fixed(timedelta(hours=1)) == window


def test_fixed_window_is_aligned_in_its_zone() -> None:
    # India is UTC+5:30: its hours start at :30 UTC
    window = Window.fixed(3600, tz="Asia/Kolkata")
    start, end = window.bounds(at(2024, 1, 15, 10, 45))
    assert (start, end) == (at(2024, 1, 15, 10, 30), at(2024, 1, 15, 11, 30))


def test_fixed_week_is_aligned_to_the_epoch() -> None:
    start, _ = Window.fixed(7 * DAY).bounds(at(2024, 1, 15, 12))
    assert datetime.fromtimestamp(start, UTC).weekday() == 3  # 1970-01-01 was a Thursday


@pytest.mark.parametrize("date", [(2024, 1, 15), (2024, 7, 15)], ids=["winter", "summer"])
def test_fixed_day_ends_at_midnight_in_its_zone(date: tuple[int, int, int]) -> None:
    window = Window.fixed(DAY, tz="Europe/Berlin")
    y, m, d = date
    for hour in (0, 1, 12, 23):
        start, end = window.bounds(at(y, m, d, hour, 30, tz="Europe/Berlin"))
        assert start == at(y, m, d, tz="Europe/Berlin")
        assert end == at(y, m, d + 1, tz="Europe/Berlin")


def test_fixed_day_on_spring_forward_lasts_23_hours() -> None:
    window = Window.fixed(DAY, tz="Europe/Berlin")
    day = (at(2024, 3, 31, tz="Europe/Berlin"), at(2024, 4, 1, tz="Europe/Berlin"))
    assert day[1] - day[0] == 23 * HOUR
    for hour in (0, 1, 3, 12, 23):  # CET before the change, CEST after
        assert window.bounds(at(2024, 3, 31, hour, 30, tz="Europe/Berlin")) == day


def test_fixed_day_on_fall_back_lasts_25_hours() -> None:
    window = Window.fixed(DAY, tz="Europe/Berlin")
    day = (at(2024, 10, 27, tz="Europe/Berlin"), at(2024, 10, 28, tz="Europe/Berlin"))
    assert day[1] - day[0] == 25 * HOUR
    for hour, fold in [(0, 0), (2, 0), (2, 1), (12, 0), (23, 0)]:
        assert window.bounds(at(2024, 10, 27, hour, 30, tz="Europe/Berlin", fold=fold)) == day


def test_fixed_hour_holding_the_repeated_hour_lasts_two_hours() -> None:
    window = Window.fixed(HOUR, tz="Europe/Berlin")
    first, second = (at(2024, 10, 27, 2, 30, tz="Europe/Berlin", fold=f) for f in (0, 1))
    assert second - first == HOUR
    expected = (at(2024, 10, 27, 2, tz="Europe/Berlin"), at(2024, 10, 27, 3, tz="Europe/Berlin"))
    assert expected[1] - expected[0] == 2 * HOUR
    assert window.bounds(first) == window.bounds(second) == expected


def test_fixed_windows_in_the_spring_gap_are_skipped() -> None:
    window = Window.fixed(30 * 60, tz="Europe/Berlin")
    change = at(2024, 3, 31, 3, tz="Europe/Berlin")  # 02:00 CET became 03:00 CEST
    assert window.bounds(change - 1) == (change - 30 * 60, change)
    assert window.bounds(change) == (change, change + 30 * 60)


def test_fixed_day_skipped_by_samoa() -> None:
    # Samoa skipped 2011-12-30: the day window of the 29th ends at midnight of the 31st.
    window = Window.fixed(DAY, tz="Pacific/Apia")
    start, end = window.bounds(at(2011, 12, 29, 12, tz="Pacific/Apia"))
    assert (start, end) == (
        at(2011, 12, 29, tz="Pacific/Apia"),
        at(2011, 12, 31, tz="Pacific/Apia"),
    )
    assert end - start == DAY


@pytest.mark.parametrize(
    ("now", "start", "end"),
    [
        (at(2028, 1, 20, 8), at(2028, 1, 1), at(2028, 2, 1)),
        (at(2028, 2, 29, 23, 59, 59), at(2028, 2, 1), at(2028, 3, 1)),
        (at(2027, 2, 28, 12), at(2027, 2, 1), at(2027, 3, 1)),
        (at(2027, 12, 31, 23, 59, 59), at(2027, 12, 1), at(2028, 1, 1)),
        (at(2028, 1, 1), at(2028, 1, 1), at(2028, 2, 1)),
    ],
    ids=["jan", "feb-leap", "feb", "dec", "new-year"],
)
def test_month(now: float, start: float, end: float) -> None:
    assert Window.month().bounds(now) == (start, end)


def test_month_lengths() -> None:
    def length(year: int, month: int) -> float:
        start, end = Window.month().bounds(at(year, month, 15))
        return (end - start) / DAY

    assert [length(2028, m) for m in range(1, 13)] == [
        31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31,
    ]  # fmt: skip
    assert length(2027, 2) == 28
    assert length(2100, 2) == 28  # not a leap year
    assert length(2000, 2) == 29


def test_month_in_a_zone_with_dst() -> None:
    window = Window.month(tz="Europe/Berlin")
    start, end = window.bounds(at(2024, 3, 31, 23, 59, tz="Europe/Berlin"))
    assert (start, end) == (at(2024, 3, 1, tz="Europe/Berlin"), at(2024, 4, 1, tz="Europe/Berlin"))
    assert end - start == 31 * DAY - HOUR


def test_month_starting_at_a_repeated_midnight() -> None:
    # Havana fell back from 01:00 to 00:00 on 2015-11-01: November began at the first 00:00.
    window = Window.month(tz="America/Havana")
    november = at(2015, 11, 1, tz="America/Havana", fold=0)
    assert window.bounds(november - 1)[1] == november
    for fold in (0, 1):
        now = at(2015, 11, 1, 0, 30, tz="America/Havana", fold=fold)
        assert window.bounds(now)[0] == november


def test_month_starting_in_a_gap() -> None:
    # Asuncion sprang from 00:00 to 01:00 on 2017-10-01: October began at 01:00.
    window = Window.month(tz="America/Asuncion")
    october = at(2017, 10, 1, 1, tz="America/Asuncion")
    assert window.bounds(october - 1)[1] == october
    assert window.bounds(october)[0] == october


@pytest.mark.parametrize(
    ("tz", "seconds", "around"),
    [
        ("Europe/Berlin", HOUR, (2024, 3, 31)),
        ("Europe/Berlin", HOUR, (2024, 10, 27)),
        ("Europe/Berlin", 20 * 60, (2024, 10, 27)),
        ("Australia/Lord_Howe", 15 * 60, (2024, 4, 7)),  # a 30-minute DST shift
        ("Australia/Lord_Howe", HOUR, (2024, 10, 6)),
        ("America/Havana", DAY, (2024, 11, 3)),
        ("America/Santiago", DAY, (2024, 4, 7)),  # falls back from 00:00 to 23:00
        ("America/Santiago", DAY, (2024, 9, 8)),
        ("Pacific/Apia", DAY, (2011, 12, 30)),
        ("America/St_Johns", 7 * DAY, (2024, 3, 10)),
    ],
)
def test_fixed_windows_tile_time(tz: str, seconds: float, around: tuple[int, int, int]) -> None:
    """Around a transition: every moment lies in its window, windows follow each other."""
    window = Window.fixed(seconds, tz=tz)
    centre = at(*around)
    previous: tuple[float, float] | None = None
    for step in range(-2 * 24 * 12, 2 * 24 * 12):  # two days either side, every 5 minutes
        now = centre + step * 300
        start, end = window.bounds(now)
        assert start <= now < end
        if previous is not None and previous != (start, end):
            assert start == previous[1]
        previous = (start, end)


def test_sliding_bounds() -> None:
    assert Window.sliding(60).bounds(1000.0) == (940.0, 1060.0)
    assert Window.sliding(timedelta(minutes=1)) == Window.sliding(60)


def test_forever_bounds() -> None:
    assert Window.forever().bounds(1000.0) == (-math.inf, math.inf)


def test_reset_at() -> None:
    now = at(2024, 1, 15, 10, 20)
    assert Window.fixed(HOUR).reset_at(now) == datetime(2024, 1, 15, 11, tzinfo=UTC)
    assert Window.month().reset_at(now) == datetime(2024, 2, 1, tzinfo=UTC)
    assert Window.sliding(60).reset_at(now) == datetime(2024, 1, 15, 10, 21, tzinfo=UTC)
    assert Window.forever().reset_at(now) is None
    berlin = Window.fixed(DAY, tz="Europe/Berlin").reset_at(now)
    assert berlin == datetime(2024, 1, 15, 23, tzinfo=UTC)
    assert berlin is not None
    assert berlin.tzinfo is UTC


@pytest.mark.parametrize("length", [0, -1, math.inf, math.nan, timedelta(0)])
def test_fixed_needs_a_positive_finite_length(length: float | timedelta) -> None:
    with pytest.raises(ValueError, match="length"):
        Window.fixed(length)


@pytest.mark.parametrize("length", [0, -1, math.nan])
def test_sliding_needs_a_positive_length(length: float) -> None:
    with pytest.raises(ValueError, match="length"):
        Window.sliding(length)


def test_unknown_zone_fails_early() -> None:
    with pytest.raises(ZoneInfoNotFoundError):
        Window.month(tz="Mars/Olympus_Mons")
    with pytest.raises(ZoneInfoNotFoundError):
        Window.fixed(DAY, tz="Mars/Olympus_Mons")
