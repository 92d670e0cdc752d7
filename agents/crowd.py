"""Crowd: people in a zone at or above a threshold, sustained over a window, with
hysteresis.

Event-time tumbling windows of `window_s` (aligned to the epoch) kept in a plain dict
inside the camera's scene state; a window is closed by the agent itself when event time
passes its end + `grace_s` (Faust's windowed tables expire by wall clock and drop close
callbacks, see docs/architecture.md). A closed window fires when its *minimum* per-frame count was
>= min_people (sustained for the whole window) and clears an active crowd when its
*maximum* stayed < clear_below; counts in between keep the current state, so it cannot
flap. Windows without frames decide nothing. Times are integer microseconds.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

US = 1_000_000


@dataclass(frozen=True)
class CrowdParams:
    min_people: int
    clear_below: int
    window_s: float
    grace_s: float = 2.0
    evidence_cap: int = 20
    track_cap: int = 50


@dataclass
class CrowdStep:
    fired: list[dict[str, Any]] = field(default_factory=list)
    cleared: list[dict[str, Any]] = field(default_factory=list)


def new_state() -> dict[str, Any]:
    return {"active": False, "closed_until": None, "windows": {}}


def window_start(t_us: int, window_us: int) -> int:
    return (t_us // window_us) * window_us


def step(
    state: dict[str, Any],
    t_us: int,
    count: int | None,
    track_ids: list[str],
    evidence_id: str | int,
    armed: bool,
    params: CrowdParams,
) -> tuple[dict[str, Any], CrowdStep]:
    """Close every window whose end + grace <= t_us, then add this frame's count (None:
    the frame carries no count, e.g. skipped by the edge). Late frames that fall into an
    already closed window are ignored: the decision is made and published."""
    window_us = max(1, int(params.window_s * US))
    grace_us = int(params.grace_s * US)
    active = bool(state.get("active"))
    closed_until = state.get("closed_until")
    stored = state.get("windows")
    out = CrowdStep()
    windows: dict[int, dict[str, Any]] = {}
    if stored:
        # usually one or two windows, closed in start order
        for start, w in sorted((int(k), v) for k, v in stored.items()):
            if start + window_us + grace_us > t_us:
                windows[start] = w
                continue
            w = dict(w, start=start, end=start + window_us)
            closed_until = max(closed_until or 0, start + window_us)
            if not active and armed and w["min"] >= params.min_people:
                active = True
                out.fired.append(w)
            elif active and w["max"] < params.clear_below:
                active = False
                out.cleared.append(w)
    if count is not None:
        start = window_start(t_us, window_us)
        if closed_until is None or start >= closed_until:
            w = windows.get(start)
            if w is None:
                w = {"min": count, "max": count, "frames": 0, "first": t_us, "last": t_us,
                     "evidence": [], "tracks": []}
            else:
                w = dict(w)
            # (comparisons rather than min()/max() calls: same ints, this runs every frame)
            if count < w["min"]:
                w["min"] = count
            if count > w["max"]:
                w["max"] = count
            w["frames"] += 1
            if t_us < w["first"]:
                w["first"] = t_us
            if t_us > w["last"]:
                w["last"] = t_us
            w["evidence"] = [*w["evidence"], evidence_id][-params.evidence_cap :]
            seen = w["tracks"]
            known = set(seen)
            if not known.issuperset(track_ids):  # else the list is shared, not copied
                seen = list(seen)
                for tid in track_ids:
                    if len(seen) >= params.track_cap:
                        break
                    if tid not in known:
                        seen.append(tid)
                        known.add(tid)
                w["tracks"] = seen
            windows[start] = w
    return (
        {"active": active, "closed_until": closed_until,
         "windows": {str(k): windows[k] for k in sorted(windows)}},
        out,
    )
