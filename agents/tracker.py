"""Per-camera multi-object tracker, SORT-like, parameterised in event-time seconds.

Why not frames: frames arrive at about 1 fps with gaps (motion-skipped frames, edge
reconnects), so "3 frames" means nothing; every threshold here is seconds of the
frames' `occurred_at`. Why a plain dict as state: it lives in a Faust table (JSON
values) keyed by camera, so a restart or a rebalance resumes the exact same tracks and a
replay of the same detections yields the same track ids (``f"{camera}-{counter}"``).

Model: each track keeps its last box and a velocity (per second) of the box corners,
smoothed alpha-beta style (a Kalman filter with fixed gains; plain float arithmetic, since
numpy on 4-vectors costs more than it saves). Association is an optimal assignment
(Hungarian, `assign`) on IoU between detections and the tracks' predicted boxes
(constant velocity), gated by `iou_min`, then a second optimal assignment by centre
distance for what is left, gated by plausible walking speed, because at 1 fps a walker's
boxes in consecutive frames often do not overlap at all. Greedy matching (best pair
first) swaps the identities of two people walking side by side whenever the best single
pair is not part of the best overall matching. Birth: a track is confirmed after
`min_hits` observations within `confirm_window_s`; a tentative track that misses that
window is dropped silently. Death: a track unseen for longer than `max_age_s` ends
(hysteresis: one missed frame never ends a track). Everything is iterated in a fixed
order so that output is a pure function of the input.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from schemas.geometry import Box

#: boxes and velocities are stored rounded to this many decimals (a millionth of the
#: image is far below a pixel): float32 detections otherwise print as 17 digits. The
#: state is marshalled now, where a float is 8 bytes either way, but the rounding stays:
#: association works on the stored boxes, and the bench scenario has walkers whose
#: centre distance lands exactly on the speed gate with rounded boxes and a hair above
#: it without (a different track, a different ZoneEntered): dropping it changes outputs.
STATE_DIGITS = 6
_SCALE = 10.0**STATE_DIGITS
#: 1.5 * 2**52: for |y| < 2**51, (y + _RINT) - _RINT is y rounded to an integer (half to
#: even), in two float additions
_RINT = 6755399441055744.0


def rounded(values: Iterable[float]) -> list[float]:
    """``[round(x, STATE_DIGITS) for x in values]``, bit for bit, in about a third of the
    time (the builtin formats and parses a decimal string each time; this was a sixth of
    the scene engine's CPU).

    Why it is exact: ``round(x, 6)`` is the double nearest to N / 10**6, N the integer
    nearest to the exact x * 10**6. The float product y is within |y| * 2**-53 of that
    exact value, so when y is farther than 1e-6 from any half-integer (and |y| < 1e9,
    where that error is < 2.3e-7) the integer nearest to y is N, and N / 1e6, a
    correctly rounded IEEE division of two exact doubles, is the double nearest to
    N / 10**6 (for N = 0: a zero with x's sign, as the builtin gives). Everything else
    (near a half, huge, inf, nan) takes the builtin. tests/unit/test_tracker.py compares
    the two.
    """
    out = []
    for x in values:
        y = x * _SCALE
        r = (y + _RINT) - _RINT
        if -0.499999 < y - r < 0.499999 and -1e9 < y < 1e9:
            out.append(r / _SCALE if r else x * 0.0)  # x * 0.0: zero with x's sign
        else:
            out.append(round(x, STATE_DIGITS))
    return out


@dataclass(frozen=True)
class TrackerParams:
    """Tracker knobs, all times in seconds of event time."""

    iou_min: float = 0.2
    #: second-pass gate: centre distance per elapsed second, in box heights
    max_speed_heights_s: float = 1.0
    min_hits: int = 2
    confirm_window_s: float = 3.0
    max_age_s: float = 10.0
    #: velocity smoothing (0 = ignore new evidence, 1 = trust only the last step)
    velocity_gain: float = 0.5
    #: predictions are capped so that a long occlusion does not fling a box away
    max_predict_s: float = 3.0
    labels: tuple[str, ...] = ("person",)

    def __post_init__(self) -> None:
        # 0 would admit every pair of boxes that do not overlap (IoU 0) to the IoU pass, at
        # cost 1, ahead of the speed-gated second pass; the IoU pass skips those pairs
        if not 0.0 < self.iou_min <= 1.0:
            raise ValueError(f"iou_min must be in (0, 1], not {self.iou_min}")


@dataclass(slots=True)
class Observation:
    """A detection matched to a track in this frame."""

    track_id: str
    detection_id: str
    label: str
    box: Box
    confirmed: bool
    newly_confirmed: bool


@dataclass(slots=True)
class EndedTrack:
    track_id: str
    label: str
    first_seen: float
    last_seen: float
    observations: int
    confirmed: bool


@dataclass(slots=True)
class TrackerStep:
    """What one frame did to the tracks."""

    observed: list[Observation] = field(default_factory=list)
    ended: list[EndedTrack] = field(default_factory=list)


def new_state() -> dict[str, Any]:
    """Empty tracker state (JSON-able)."""
    return {"counter": 0, "tracks": [], "last_t": None}


def _left_edge(row: tuple[Any, ...]) -> float:
    """Sort key of a flat detection row: its left edge, NaN first (a NaN never compares
    greater, so it cannot end the scan early, and the finite edges after it stay sorted)."""
    x = row[0]
    return x if x == x else -math.inf


def _centre(b: Box) -> tuple[float, float]:
    return ((b[0] + b[2]) / 2.0, (b[1] + b[3]) / 2.0)


def assign(costs: dict[tuple[int, int], float]) -> list[tuple[int, int]]:
    """Optimal assignment over the allowed (row, col) pairs with their costs.

    Maximises the number of matched pairs first and, among those, minimises the total
    cost; pairs not in `costs` are never matched (the gate). Rows and columns are any
    ints. The allowed pairs split into connected components, each solved on its own: at
    1 fps most tracks have one candidate, so most components are a single pair and the
    O(n³) Hungarian method runs only where people are close together. Deterministic for
    a given input (ties resolved by row, then column order).
    """
    if not costs:
        return []
    if len({r for r, _ in costs}) == len(costs) and len({c for _, c in costs}) == len(costs):
        return sorted(costs)  # every candidate unambiguous (the usual case)
    row_deg: dict[int, int] = {}
    col_deg: dict[int, int] = {}
    for r, c in costs:
        row_deg[r] = row_deg.get(r, 0) + 1
        col_deg[c] = col_deg.get(c, 0) + 1
    out = [rc for rc in costs if row_deg[rc[0]] == 1 and col_deg[rc[1]] == 1]
    # connected components of the bipartite graph (a walk from each row not yet reached;
    # cheaper than union-find over (side, index) tuples for these few-node graphs)
    rest = sorted(rc for rc in costs if row_deg[rc[0]] > 1 or col_deg[rc[1]] > 1)
    by_row: dict[int, list[int]] = {}
    by_col: dict[int, list[int]] = {}
    for r, c in rest:
        by_row.setdefault(r, []).append(c)
        by_col.setdefault(c, []).append(r)
    groups: list[list[tuple[int, int]]] = []
    reached: set[int] = set()
    for r0 in by_row:
        if r0 in reached:
            continue
        rows_in, cols_in, todo = {r0}, set(), [r0]
        while todo:
            for c in by_row[todo.pop()]:
                if c not in cols_in:
                    cols_in.add(c)
                    for r in by_col[c]:
                        if r not in rows_in:
                            rows_in.add(r)
                            todo.append(r)
        reached |= rows_in
        groups.append([rc for rc in rest if rc[0] in rows_in])  # sorted, as `rest`
    for pairs in groups:
        rows = sorted({r for r, _ in pairs})
        cols = sorted({c for _, c in pairs})
        # an infeasible pair costs more than any set of feasible ones: cardinality first
        big = 1.0 + sum(abs(costs[p]) for p in pairs) * 2
        if len(rows) <= len(cols):
            m = [[costs.get((r, c), big) for c in cols] for r in rows]
            got = [(rows[i], cols[j]) for i, j in _hungarian(m)]
        else:
            m = [[costs.get((r, c), big) for r in rows] for c in cols]
            got = [(rows[j], cols[i]) for i, j in _hungarian(m)]
        out += [rc for rc in got if rc in costs]
    return sorted(out)


def _hungarian(a: list[list[float]]) -> list[tuple[int, int]]:
    """Minimum-cost assignment of every row of an n x m matrix (n <= m) to a distinct
    column: the shortest augmenting path form of the Hungarian method, O(n² m)."""
    n, m = len(a), len(a[0])
    inf = float("inf")
    u = [0.0] * (n + 1)
    v = [0.0] * (m + 1)
    p = [0] * (m + 1)  # p[j]: row (1-based) assigned to column j; 0 = free
    way = [0] * (m + 1)
    for i in range(1, n + 1):
        p[0] = i
        j0 = 0
        minv = [inf] * (m + 1)
        used = [False] * (m + 1)
        while True:
            used[j0] = True
            i0, delta, j1 = p[j0], inf, 0
            row = a[i0 - 1]
            ui0 = u[i0]
            for j in range(1, m + 1):
                if not used[j]:
                    cur = row[j - 1] - ui0 - v[j]
                    if cur < minv[j]:
                        minv[j], way[j] = cur, j0
                    if minv[j] < delta:
                        delta, j1 = minv[j], j
            for j in range(m + 1):
                if used[j]:
                    u[p[j]] += delta
                    v[j] -= delta
                else:
                    minv[j] -= delta
            j0 = j1
            if p[j0] == 0:
                break
        while j0:
            j1 = way[j0]
            p[j0] = p[j1]
            j0 = j1
    return sorted((p[j] - 1, j - 1) for j in range(1, m + 1) if p[j])


def update(
    state: dict[str, Any],
    camera_id: str,
    t: float,
    detections: list[tuple[str, str, Box]],
    params: TrackerParams,
) -> tuple[dict[str, Any], TrackerStep]:
    """Advance the tracker to event time `t` with this frame's detections.

    `detections` are (detection_id, label, box). Returns the new state and what
    happened. The input is not mutated: a changed track is a new dict, an unchanged one
    (unmatched, still alive) is shared with the input state, which is safe because no
    state dict is ever modified in place (the scene agent keeps the previous state while
    the new one is pending). A frame older than the last one seen is still applied
    (prediction clamps negative time to 0) rather than dropped: Kafka ordering per
    camera makes that rare, and dropping would lose evidence.
    """
    counter = int(state.get("counter", 0))
    tracks: list[dict[str, Any]] = state.get("tracks", [])
    step = TrackerStep()
    observed = step.observed
    labels = params.labels
    dets = [d for d in detections if d[1] in labels]
    max_predict_s = params.max_predict_s
    iou_min = params.iou_min

    # predicted boxes (constant velocity, `_predict` inlined: one per track per frame)
    preds: list[Box] = []
    for tr in tracks:
        dt = t - tr["last_seen"]
        dt = 0.0 if dt < 0.0 else (max_predict_s if dt > max_predict_s else dt)
        b, v = tr["box"], tr["vel"]
        preds.append((b[0] + v[0] * dt, b[1] + v[1] * dt, b[2] + v[2] * dt, b[3] + v[3] * dt))

    # first pass: optimal assignment on IoU (cost 1 - IoU), gated by iou_min
    # (`geometry.iou` inlined, same arithmetic: 64 calls a frame at 8 people)
    costs: dict[tuple[int, int], float] = {}
    # one flat row per detection, sorted by left edge: for each track the scan stops at
    # the first detection starting right of the prediction (no overlap from there on;
    # the order in which pairs enter `costs` does not matter to `assign`)
    # (`a if a > 0.0 else 0.0` is max(0.0, a), NaN and -0.0 included, without a call)
    flat = [(b[0], di, label, b[1], b[2], b[3],
             ((w if (w := b[2] - b[0]) > 0.0 else 0.0)
              * (h if (h := b[3] - b[1]) > 0.0 else 0.0)))
            for di, (_, label, b) in enumerate(dets)]
    flat.sort(key=_left_edge)
    for ti, (px1, py1, px2, py2) in enumerate(preds):
        tlabel = tracks[ti]["label"]
        parea = ((w if (w := px2 - px1) > 0.0 else 0.0)
                 * (h if (h := py2 - py1) > 0.0 else 0.0))
        for x1, di, label, y1, x2, y2, darea in flat:
            if x1 >= px2:
                break  # this and every later detection: ix <= 0 below
            if x2 <= px1 or label != tlabel:
                continue  # (no horizontal overlap: the ix <= 0 below, decided sooner)
            # min(a, b) is `b if b < a else a` and max(a, b) `b if b > a else a`, written
            # in that order: with a NaN coordinate the builtins keep the NaN of the
            # prediction, and so must this (tests/unit/test_reference_equivalence.py)
            ix = (x2 if x2 < px2 else px2) - (x1 if x1 > px1 else px1)
            if ix <= 0:
                continue
            iy = (y2 if y2 < py2 else py2) - (y1 if y1 > py1 else py1)
            if iy <= 0:
                continue
            inter = ix * iy
            union = parea + darea - inter
            score = inter / union if union > 1e-12 else 0.0
            if score >= iou_min:
                costs[(ti, di)] = 1.0 - score
    matched_t: dict[int, int] = dict(assign(costs))
    matched_d: set[int] = set(matched_t.values())

    # second pass: optimal assignment on centre distance (in box heights) for what is
    # left, gated by plausible walking speed
    if len(matched_t) < len(tracks) and len(matched_d) < len(dets):
        costs = {}
        for ti, pb in enumerate(preds):
            if ti in matched_t:
                continue
            dt = max(t - tracks[ti]["last_seen"], 1e-3)
            gate = params.max_speed_heights_s * max(dt, 1.0)
            cx, cy = _centre(pb)
            tlabel = tracks[ti]["label"]
            for di, (_, label, box) in enumerate(dets):
                if di in matched_d or label != tlabel:
                    continue
                h = max(box[3] - box[1], pb[3] - pb[1], 1e-3)
                dx, dy = _centre(box)
                dist = ((dx - cx) ** 2 + (dy - cy) ** 2) ** 0.5 / h
                if dist <= gate:
                    costs[(ti, di)] = dist
        for ti, di in assign(costs):
            matched_t[ti] = di
            matched_d.add(di)

    g = params.velocity_gain
    h0 = 1 - g
    min_hits = params.min_hits
    confirm_window_s = params.confirm_window_s
    survivors: list[dict[str, Any]] = []
    for ti, tr in enumerate(tracks):
        matched = matched_t.get(ti)
        if matched is not None:
            det_id, label, box = dets[matched]
            first_seen, hits, confirmed = tr["first_seen"], tr["hits"], tr["confirmed"]
            if not confirmed and t - first_seen > confirm_window_s:
                # birth window missed: the count of hits starts again from here
                first_seen, hits = t, 0
            vel = tr["vel"]
            dt = t - tr["last_seen"]
            if dt > 0:
                b0 = tr["box"]
                both = rounded((box[0], box[1], box[2], box[3],
                                h0 * vel[0] + g * (box[0] - b0[0]) / dt,
                                h0 * vel[1] + g * (box[1] - b0[1]) / dt,
                                h0 * vel[2] + g * (box[2] - b0[2]) / dt,
                                h0 * vel[3] + g * (box[3] - b0[3]) / dt))
                new_box, vel = both[:4], both[4:]
            else:
                new_box = rounded(box)
            hits += 1
            newly = not confirmed and hits >= min_hits
            if newly:
                confirmed = True
            ntr = {"id": tr["id"], "label": tr["label"],
                   "box": new_box, "vel": vel,
                   "first_seen": first_seen, "last_seen": t, "hits": hits,
                   "confirmed": confirmed}
            survivors.append(ntr)
            observed.append(Observation(ntr["id"], det_id, label, box, confirmed, newly))
            continue
        lost_for = t - tr["last_seen"]
        too_old = lost_for > params.max_age_s
        unborn = not tr["confirmed"] and t - tr["first_seen"] > confirm_window_s
        if too_old or unborn:
            step.ended.append(
                EndedTrack(tr["id"], tr["label"], tr["first_seen"], tr["last_seen"],
                           tr["hits"], tr["confirmed"])
            )
        else:
            survivors.append(tr)  # unchanged: shared with the input state

    if len(matched_d) < len(dets):
        born_confirmed = min_hits <= 1
        for di, (det_id, label, box) in enumerate(dets):
            if di in matched_d:
                continue
            counter += 1
            tid = f"{camera_id}-{counter}"
            survivors.append({
                "id": tid,
                "label": label,
                "box": rounded(box),
                "vel": [0.0, 0.0, 0.0, 0.0],
                "first_seen": t,
                "last_seen": t,
                "hits": 1,
                "confirmed": born_confirmed,
            })
            observed.append(
                Observation(tid, det_id, label, box, born_confirmed, born_confirmed)
            )

    return {"counter": counter, "tracks": survivors, "last_t": t}, step


def hold(
    state: dict[str, Any], t: float
) -> tuple[dict[str, Any], TrackerStep]:
    """A frame the edge skipped for lack of motion: the scene is unchanged, so every
    track seen in the last analysed frame is taken to be still where it was (a loiterer
    standing still must not die just because nothing moved)."""
    last_t = state.get("last_t")
    step = TrackerStep()
    if last_t is None:
        return state, step
    tracks = []
    for tr in state.get("tracks", []):
        if tr["last_seen"] == last_t:
            tr = dict(tr, last_seen=t)  # a new dict: the input state is not modified
            b = tr["box"]  # a list in the (JSON) state
            step.observed.append(
                Observation(tr["id"], "", tr["label"], (b[0], b[1], b[2], b[3]),
                            tr["confirmed"], False)
            )
        tracks.append(tr)
    return {"counter": state.get("counter", 0), "tracks": tracks, "last_t": t}, step
