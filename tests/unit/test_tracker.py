"""Tracker: association, birth/death in event-time seconds, determinism, JSON state."""

from __future__ import annotations

import json

from agents.tracker import TrackerParams, hold, new_state, update

P = TrackerParams(min_hits=2, confirm_window_s=3.0, max_age_s=5.0)


def box(cx: float, y2: float = 0.8, w: float = 0.08, h: float = 0.25):
    return (cx - w / 2, y2 - h, cx + w / 2, y2)


def run(frames, params=P):
    state = new_state()
    steps = []
    for t, dets in frames:
        state, step = update(state, "cam", t, dets, params)
        state = json.loads(json.dumps(state))  # state must survive the table's JSON
        steps.append(step)
    return state, steps


def test_birth_needs_hits_within_window() -> None:
    _, steps = run([(0.0, [("d0", "person", box(0.5))]), (1.0, [("d1", "person", box(0.51))])])
    assert [o.confirmed for o in steps[0].observed] == [False]
    assert [(o.track_id, o.confirmed, o.newly_confirmed) for o in steps[1].observed] == [
        ("cam-1", True, True)
    ]


def test_one_shot_false_positive_never_confirms_and_dies_silently() -> None:
    state, steps = run([(0.0, [("d0", "person", box(0.5))]), (4.0, []), (5.0, [])])
    assert steps[1].ended and not steps[1].ended[0].confirmed
    assert state["tracks"] == []


def test_walker_at_1fps_keeps_one_id_and_velocity_predicts() -> None:
    frames = [(float(t), [(f"d{t}", "person", box(0.1 + 0.06 * t))]) for t in range(10)]
    _, steps = run(frames)
    ids = {o.track_id for s in steps for o in s.observed}
    assert ids == {"cam-1"}


def test_occlusion_shorter_than_max_age_keeps_track_then_death_after() -> None:
    frames = [(0.0, [("a", "person", box(0.5))]), (1.0, [("b", "person", box(0.5))])]
    frames += [(float(t), []) for t in range(2, 6)]  # 4 s occlusion < max_age 5 s
    frames += [(6.0, [("c", "person", box(0.5))])]
    frames += [(float(t), []) for t in range(7, 13)]
    _, steps = run(frames)
    assert steps[6].observed[0].track_id == "cam-1"
    ended = [e for s in steps for e in s.ended]
    assert [(e.track_id, e.last_seen, e.observations) for e in ended] == [("cam-1", 6.0, 3)]
    assert steps[12].ended  # died at 12 s: lost 6 s > max_age 5 s


def test_two_people_crossing_paths_get_distinct_ids() -> None:
    frames = [
        (float(t), [("l", "person", box(0.2 + 0.02 * t)), ("r", "person", box(0.8 - 0.02 * t))])
        for t in range(6)
    ]
    _, steps = run(frames)
    assert {o.track_id for o in steps[-1].observed} == {"cam-1", "cam-2"}


def test_deterministic_ids_on_replay() -> None:
    frames = [(float(t), [(f"d{t}", "person", box(0.3 + 0.03 * t))]) for t in range(5)]
    assert run(frames)[0] == run(frames)[0]


def test_hold_keeps_still_tracks_alive() -> None:
    state, _ = run([(0.0, [("a", "person", box(0.5))]), (1.0, [("b", "person", box(0.5))])])
    for t in range(2, 20):
        state, step = hold(state, float(t))
        assert [o.track_id for o in step.observed] == ["cam-1"]
    state, step = update(state, "cam", 20.0, [("c", "person", box(0.5))], P)
    assert step.observed[0].track_id == "cam-1"


def test_other_labels_ignored() -> None:
    _, steps = run([(0.0, [("a", "car", box(0.5))])])
    assert steps[0].observed == []
