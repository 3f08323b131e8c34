"""Tests for shared.durations: Go-style duration parsing (pause and metric intervals) and formatting."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shared.durations import format_duration, parse_go_duration, parse_pause_duration


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("30s", 30.0),
        ("5m", 300.0),
        ("1h", 3600.0),
        ("1h30m", 5400.0),
        ("500ms", 0.5),
        ("1.5s", 1.5),
        ("2h45m30s", 9930.0),
        ("0", 0.0),
        ("-1m", -60.0),
        ("100us", 0.0001),
    ],
)
def test_parse_go_duration(text: str, seconds: float) -> None:
    assert parse_go_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["5", "", "5 minutes", "1d", "m", "1h 30m", "abc", "1.2.3s"])
def test_parse_go_duration_rejects(text: str) -> None:
    with pytest.raises(ValueError, match="invalid duration"):
        parse_go_duration(text)


def test_missing_unit_message_suggests_a_fix() -> None:
    with pytest.raises(ValueError, match="missing unit"):
        parse_go_duration("5")


@pytest.mark.parametrize(
    ("value", "seconds"),
    [(30, 30.0), ("30", 30.0), ("5m", 300.0), ("1h30m", 5400.0), ("500ms", 0.5), (0, 0.0)],
)
def test_parse_pause_duration(value: int | str, seconds: float) -> None:
    assert parse_pause_duration(value) == pytest.approx(seconds)


@pytest.mark.parametrize("value", ["5 minutes", "forever", "", "1w"])
def test_parse_pause_duration_rejects(value: str) -> None:
    with pytest.raises(ValueError, match="invalid pause duration"):
        parse_pause_duration(value)


def test_parse_pause_duration_rejects_bool() -> None:
    with pytest.raises(ValueError):
        parse_pause_duration(True)


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(0, "0s"), (45, "45s"), (90, "1m30s"), (3600, "1h"), (5400, "1h30m"), (0.5, "500ms"), (1.5, "1.5s")],
)
def test_format_duration(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text


@given(st.integers(min_value=0, max_value=10_000_000))
def test_format_then_parse_round_trips_whole_seconds(seconds: int) -> None:
    assert parse_go_duration(format_duration(seconds)) == pytest.approx(seconds)


@given(st.integers(min_value=0, max_value=999), st.sampled_from(["ms", "s", "m", "h"]))
def test_pause_accepts_every_unit(number: int, unit: str) -> None:
    scale = {"ms": 0.001, "s": 1, "m": 60, "h": 3600}[unit]
    assert parse_pause_duration(f"{number}{unit}") == pytest.approx(number * scale)
