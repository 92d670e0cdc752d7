"""Crowd windows: sustained threshold over event-time tumbling windows, hysteresis."""

from __future__ import annotations

import json

from hypothesis import given
from hypothesis import strategies as st

from agents.crowd import CrowdParams, new_state, step

US = 1_000_000
P = CrowdParams(min_people=5, clear_below=3, window_s=10.0, grace_s=2.0)


def run(counts, params=P, armed=True, start=0):
    """counts[i] is the count of the frame at t = start + i seconds."""
    state = new_state()
    fired, cleared = [], []
    for i, c in enumerate(counts):
        t = start + i
        state, out = step(state, t * US, c, [f"t{j}" for j in range(c or 0)], f"e{t}", armed,
                          params)
        state = json.loads(json.dumps(state))
        fired += [(t, w["start"] // US, w["min"]) for w in out.fired]
        cleared += [(t, w["start"] // US) for w in out.cleared]
    return fired, cleared


def test_six_people_fire_after_window_closes() -> None:
    fired, cleared = run([6] * 25)
    assert fired == [(12, 0, 6)]  # window [0,10) closes at 10 + 2 s grace
    assert cleared == []


def test_four_people_never_fire() -> None:
    assert run([4] * 40) == ([], [])


def test_dip_inside_window_is_not_sustained() -> None:
    counts = [6] * 5 + [4] + [6] * 4 + [4] * 15
    assert run(counts)[0] == []


def test_clear_needs_full_window_below_clear_below() -> None:
    counts = [6] * 10 + [4] * 10 + [2] * 10 + [0] * 5
    fired, cleared = run(counts)
    assert fired == [(12, 0, 6)]
    assert cleared == [(32, 20)]  # 4 is between thresholds: stays active


def test_unarmed_does_not_fire_and_skipped_frames_count_nothing() -> None:
    assert run([6] * 25, armed=False) == ([], [])
    assert run([None] * 25) == ([], [])


def test_late_frame_for_closed_window_is_ignored() -> None:
    state = new_state()
    for t in range(0, 13):
        state, _ = step(state, t * US, 6, [], "e", True, P)
    state, out = step(state, 5 * US, 0, [], "late", True, P)
    assert "0" not in state["windows"] and not out.fired and not out.cleared


@given(st.lists(st.integers(min_value=0, max_value=9), min_size=1, max_size=80))
def test_fire_and_clear_alternate(counts: list[int]) -> None:
    fired, cleared = run(counts)
    events = sorted([(t, 0) for t, *_ in fired] + [(t, 1) for t, _ in cleared])
    kinds = [k for _, k in events]
    assert kinds[:1] in ([], [0])
    assert all(kinds[i] != kinds[i + 1] for i in range(len(kinds) - 1))
    for _, _, m in fired:
        assert m >= P.min_people
