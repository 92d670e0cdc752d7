"""Plain reference implementations of the scene engine's optimised steps, for the
reference-equivalence property tests (tests/unit/test_reference_equivalence.py).

Each function here is written the obvious way, straight from the docstring of the code it
checks: every detection against every track through `schemas.geometry.iou` (no sorted
scan, no inlined arithmetic), the builtin ``round`` (not `agents.tracker.rounded`),
``min``/``max`` calls, fresh copies instead of shared lists, an optimal assignment by
enumerating every matching. They are slow and that is the point: the optimised code in
`agents/` must give the same outputs, bit for bit, on random input sequences.
"""

from __future__ import annotations

import itertools
from typing import Any

from agents.crowd import US, CrowdParams, CrowdStep
from agents.tracker import EndedTrack, Observation, TrackerParams, TrackerStep
from schemas.geometry import Box, cross, iou, line_crossing

# --------------------------------------------------------------------------- assignment


def brute_force_assignment(costs: dict[tuple[int, int], float]
                           ) -> tuple[int, float]:
    """(most pairs that can be matched, least total cost of such a matching), by trying
    every set of allowed pairs in which no row and no column repeats."""
    pairs = sorted(costs)
    best = (0, 0.0)
    for n in range(len(pairs), 0, -1):
        found = None
        for combo in itertools.combinations(pairs, n):
            if len({r for r, _ in combo}) < n or len({c for _, c in combo}) < n:
                continue
            total = sum(costs[p] for p in combo)
            if found is None or total < found:
                found = total
        if found is not None:
            return n, found
    return best


# --------------------------------------------------------------------------- tracker


def _predict(tr: dict[str, Any], t: float, params: TrackerParams) -> Box:
    """Constant velocity from the last box, elapsed time clamped to [0, max_predict_s]."""
    dt = min(max(t - tr["last_seen"], 0.0), params.max_predict_s)
    b, v = tr["box"], tr["vel"]
    return (b[0] + v[0] * dt, b[1] + v[1] * dt, b[2] + v[2] * dt, b[3] + v[3] * dt)


def _centre(b: Box) -> tuple[float, float]:
    return ((b[0] + b[2]) / 2.0, (b[1] + b[3]) / 2.0)


def _round(values: Any) -> list[float]:
    return [round(x, 6) for x in values]


def tracker_update(state: dict[str, Any], camera_id: str, t: float,
                   detections: list[tuple[str, str, Box]], params: TrackerParams,
                   assign: Any) -> tuple[dict[str, Any], TrackerStep]:
    """`agents.tracker.update` as its docstring says it. `assign` is the optimal
    assignment (checked on its own against `brute_force_assignment`)."""
    counter = int(state.get("counter", 0))
    tracks = list(state.get("tracks", []))
    dets = [d for d in detections if d[1] in params.labels]
    preds = [_predict(tr, t, params) for tr in tracks]

    # first pass: IoU, gated by iou_min, same label only
    costs = {}
    for ti, tr in enumerate(tracks):
        for di, (_, label, box) in enumerate(dets):
            if label != tr["label"]:
                continue
            score = iou(preds[ti], box)
            if score >= params.iou_min:
                costs[(ti, di)] = 1.0 - score
    matched = dict(assign(costs))

    # second pass: centre distance in box heights, gated by walking speed
    free_t = [ti for ti in range(len(tracks)) if ti not in matched]
    free_d = [di for di in range(len(dets)) if di not in matched.values()]
    if free_t and free_d:
        costs = {}
        for ti in free_t:
            dt = max(t - tracks[ti]["last_seen"], 1e-3)
            gate = params.max_speed_heights_s * max(dt, 1.0)
            pb = preds[ti]
            cx, cy = _centre(pb)
            for di in free_d:
                _, label, box = dets[di]
                if label != tracks[ti]["label"]:
                    continue
                h = max(box[3] - box[1], pb[3] - pb[1], 1e-3)
                dx, dy = _centre(box)
                dist = ((dx - cx) ** 2 + (dy - cy) ** 2) ** 0.5 / h
                if dist <= gate:
                    costs[(ti, di)] = dist
        for ti, di in assign(costs):
            matched[ti] = di

    step = TrackerStep()
    survivors = []
    g = params.velocity_gain
    for ti, tr in enumerate(tracks):
        if ti in matched:
            det_id, label, box = dets[matched[ti]]
            first_seen, hits, confirmed = tr["first_seen"], tr["hits"], tr["confirmed"]
            if not confirmed and t - first_seen > params.confirm_window_s:
                first_seen, hits = t, 0
            dt = t - tr["last_seen"]
            if dt > 0:
                b0, v0 = tr["box"], tr["vel"]
                vel = _round([(1 - g) * v0[i] + g * (box[i] - b0[i]) / dt for i in range(4)])
            else:
                vel = tr["vel"]
            hits += 1
            newly = not confirmed and hits >= params.min_hits
            confirmed = confirmed or newly
            survivors.append({"id": tr["id"], "label": tr["label"], "box": _round(box),
                              "vel": vel, "first_seen": first_seen, "last_seen": t,
                              "hits": hits, "confirmed": confirmed})
            step.observed.append(Observation(tr["id"], det_id, label, box, confirmed, newly))
        elif (t - tr["last_seen"] > params.max_age_s
              or (not tr["confirmed"] and t - tr["first_seen"] > params.confirm_window_s)):
            step.ended.append(EndedTrack(tr["id"], tr["label"], tr["first_seen"],
                                         tr["last_seen"], tr["hits"], tr["confirmed"]))
        else:
            survivors.append(tr)
    used = set(matched.values())
    for di, (det_id, label, box) in enumerate(dets):
        if di in used:
            continue
        counter += 1
        tid = f"{camera_id}-{counter}"
        born = params.min_hits <= 1
        survivors.append({"id": tid, "label": label, "box": _round(box),
                          "vel": [0.0, 0.0, 0.0, 0.0], "first_seen": t, "last_seen": t,
                          "hits": 1, "confirmed": born})
        step.observed.append(Observation(tid, det_id, label, box, born, born))
    return {"counter": counter, "tracks": survivors, "last_t": t}, step


def tracker_hold(state: dict[str, Any], t: float) -> tuple[dict[str, Any], TrackerStep]:
    """A skipped frame: every track seen in the last analysed frame is still there."""
    step = TrackerStep()
    if state.get("last_t") is None:
        return state, step
    tracks = []
    for tr in state.get("tracks", []):
        if tr["last_seen"] == state["last_t"]:
            tr = {**tr, "last_seen": t}
            step.observed.append(Observation(tr["id"], "", tr["label"], tuple(tr["box"]),
                                             tr["confirmed"], False))
        tracks.append(tr)
    return {"counter": state.get("counter", 0), "tracks": tracks, "last_t": t}, step


# --------------------------------------------------------------------------- crowd


def crowd_step(state: dict[str, Any], t_us: int, count: int | None, track_ids: list[str],
               evidence_id: str | int, armed: bool, params: CrowdParams
               ) -> tuple[dict[str, Any], CrowdStep]:
    """`agents.crowd.step` as its docstring says it: close every window whose end + grace
    has passed (in start order: fire on a sustained minimum, clear on a low maximum), then
    add this frame's count to its window unless that window is already decided."""
    window_us = max(1, int(params.window_s * US))
    grace_us = int(params.grace_s * US)
    active = bool(state.get("active"))
    closed_until = state.get("closed_until")
    windows = {int(k): dict(v) for k, v in (state.get("windows") or {}).items()}
    out = CrowdStep()
    for start in sorted(windows):
        if start + window_us + grace_us > t_us:
            continue
        w = windows.pop(start)
        w.update(start=start, end=start + window_us)
        closed_until = max(closed_until or 0, start + window_us)
        if not active and armed and w["min"] >= params.min_people:
            active = True
            out.fired.append(w)
        elif active and w["max"] < params.clear_below:
            active = False
            out.cleared.append(w)
    if count is not None:
        start = (t_us // window_us) * window_us
        if closed_until is None or start >= closed_until:
            w = windows.get(start) or {"min": count, "max": count, "frames": 0,
                                       "first": t_us, "last": t_us, "evidence": [],
                                       "tracks": []}
            w["min"] = min(w["min"], count)
            w["max"] = max(w["max"], count)
            w["frames"] += 1
            w["first"] = min(w["first"], t_us)
            w["last"] = max(w["last"], t_us)
            w["evidence"] = [*w["evidence"], evidence_id][-params.evidence_cap:]
            tracks = list(w["tracks"])
            for tid in track_ids:
                if tid not in tracks and len(tracks) < params.track_cap:
                    tracks.append(tid)
            w["tracks"] = tracks
            windows[start] = w
    return ({"active": active, "closed_until": closed_until,
             "windows": {str(k): windows[k] for k in sorted(windows)}}, out)


# --------------------------------------------------------------------------- lines


def lines_step(state: dict[str, Any], t: float, positions: dict[str, tuple[Any, bool]],
               a: Any, b: Any, forget: frozenset[str] = frozenset()
               ) -> tuple[dict[str, Any], list[tuple[str, str]]]:
    """`agents.lines.step`: a track whose side of a->b flips has crossed, if its movement
    intersects the segment (`geometry.line_crossing`) and the track is confirmed."""
    new = {k: v for k, v in state.items() if k not in forget}
    crossings = []
    for tid in sorted(positions):
        p, confirmed = positions[tid]
        c = cross(a, b, p)
        if c == 0:
            continue
        side = 1 if c > 0 else -1
        prev = new.get(tid)
        if prev is not None and prev["side"] != side:
            direction = line_crossing((prev["p"][0], prev["p"][1]), p, a, b)
            if direction is not None and confirmed:
                crossings.append((tid, direction))
        new[tid] = {"side": side, "p": [p[0], p[1]]}
    return new, crossings
