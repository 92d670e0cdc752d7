"""Directed line crossing per track, and schedules on event time."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from agents.lines import step
from schemas.schedule import in_daily_window, is_armed, parse_hhmm

A, B = (0.5, 0.0), (0.5, 1.0)  # pointing down the image: its right side is x < 0.5


def walk(xs, confirmed=True):
    state: dict = {}
    out = []
    for t, x in enumerate(xs):
        state, c = step(state, float(t), {"k": ((x, 0.5), confirmed)}, A, B)
        out += c
    return out


def test_directions() -> None:
    assert walk([0.6, 0.55, 0.45, 0.4]) == [("k", "forward")]
    assert walk([0.4, 0.6]) == [("k", "backward")]


def test_standing_on_line_crosses_once() -> None:
    assert walk([0.6, 0.5, 0.5, 0.5, 0.4]) == [("k", "forward")]
    assert walk([0.6, 0.5, 0.6]) == []


def test_unconfirmed_tracks_do_not_emit_and_ended_are_forgotten() -> None:
    assert walk([0.6, 0.4], confirmed=False) == []
    state, _ = step({}, 0.0, {"k": ((0.6, 0.5), True)}, A, B)
    state, _ = step(state, 1.0, {}, A, B, forget=frozenset({"k"}))
    assert state == {}


def test_walking_round_the_end_is_not_a_crossing() -> None:
    short_a, short_b = (0.5, 0.4), (0.5, 0.6)
    state, _ = step({}, 0.0, {"k": ((0.6, 0.9), True)}, short_a, short_b)
    state, c = step(state, 1.0, {"k": ((0.4, 0.9), True)}, short_a, short_b)
    assert c == []


def at(h: int, m: int = 0) -> datetime:
    return datetime(2026, 1, 15, h, m, tzinfo=UTC)


def test_night_schedule_in_camera_time_zone() -> None:
    assert is_armed("night", None, None, at(23), "UTC")
    assert is_armed("night", None, None, at(5, 59), "UTC")
    assert not is_armed("night", None, None, at(6), "UTC")
    assert not is_armed("night", None, None, at(12), "UTC")
    # 21:30 UTC is 22:30 in Paris (winter, UTC+1): night there
    assert is_armed("night", None, None, at(21, 30), "Europe/Paris")
    assert not is_armed("night", None, None, at(21, 30), "UTC")
    assert is_armed("always", None, None, at(12), "Asia/Tokyo")


def test_custom_schedule_wraps_midnight() -> None:
    assert is_armed("custom", "20:00", "02:00", at(1), "UTC")
    assert not is_armed("custom", "20:00", "02:00", at(3), "UTC")
    assert is_armed("custom", "09:00", "17:00", at(9), "UTC")
    assert not is_armed("custom", "09:00", "17:00", at(17), "UTC")
    assert in_daily_window(parse_hhmm("00:00"), parse_hhmm("08:00"), parse_hhmm("08:00"))
    with pytest.raises(ValueError):
        is_armed("custom", "25:00", "02:00", at(1), "UTC")
    with pytest.raises(ValueError):
        is_armed("night", None, None, at(1), "Mars/Olympus")
