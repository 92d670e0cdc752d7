"""Per-camera multi-object tracker, SORT-like, parameterised in event-time seconds.

Why not frames: frames arrive at about 1 fps with gaps (motion-skipped frames, edge
reconnects), so "3 frames" means nothing; every threshold here is seconds of the
frames' `occurred_at`. Why a plain dict as state: it lives in a Faust table (JSON
values) keyed by camera, so a restart or a rebalance resumes the exact same tracks and a
replay of the same detections yields the same track ids (``f"{camera}-{counter}"``).

Model: each track keeps its last box and a velocity (per second) of the box corners,
smoothed alpha-beta style (a Kalman filter with fixed gains). Association is greedy by
IoU between detections and the tracks' predicted boxes (constant velocity), then a second
greedy pass by centre distance for what is left, because at 1 fps a walker's boxes in
consecutive frames often do not overlap at all. Birth: a track is confirmed after
`min_hits` observations within `confirm_window_s`; a tentative track that misses that
window is dropped silently. Death: a track unseen for longer than `max_age_s` ends
(hysteresis: one missed frame never ends a track). Everything is iterated in a fixed
order so that output is a pure function of the input.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from agents.geometry import Box, iou


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


@dataclass
class Observation:
    """A detection matched to a track in this frame."""

    track_id: str
    detection_id: str
    label: str
    box: Box
    confirmed: bool
    newly_confirmed: bool


@dataclass
class EndedTrack:
    track_id: str
    label: str
    first_seen: float
    last_seen: float
    observations: int
    confirmed: bool


@dataclass
class TrackerStep:
    """What one frame did to the tracks."""

    observed: list[Observation] = field(default_factory=list)
    ended: list[EndedTrack] = field(default_factory=list)


def new_state() -> dict[str, Any]:
    """Empty tracker state (JSON-able)."""
    return {"counter": 0, "tracks": [], "last_t": None}


def _predict(track: dict[str, Any], t: float, params: TrackerParams) -> Box:
    dt = min(max(0.0, t - track["last_seen"]), params.max_predict_s)
    b, v = track["box"], track["vel"]
    return (b[0] + v[0] * dt, b[1] + v[1] * dt, b[2] + v[2] * dt, b[3] + v[3] * dt)


def _centre(b: Box) -> tuple[float, float]:
    return ((b[0] + b[2]) / 2.0, (b[1] + b[3]) / 2.0)


def update(
    state: dict[str, Any],
    camera_id: str,
    t: float,
    detections: list[tuple[str, str, Box]],
    params: TrackerParams,
) -> tuple[dict[str, Any], TrackerStep]:
    """Advance the tracker to event time `t` with this frame's detections.

    `detections` are (detection_id, label, box). Returns the new state (the input is not
    mutated) and what happened. A frame older than the last one seen is still applied
    (prediction clamps negative time to 0) rather than dropped: Kafka ordering per
    camera makes that rare, and dropping would lose evidence.
    """
    counter = int(state.get("counter", 0))
    tracks = [dict(tr) for tr in state.get("tracks", [])]
    step = TrackerStep()

    dets = [d for d in detections if d[1] in params.labels]
    preds = [_predict(tr, t, params) for tr in tracks]

    # first pass: greedy by IoU, ties broken by order (deterministic)
    pairs = []
    for ti, pb in enumerate(preds):
        for di, (_, label, box) in enumerate(dets):
            if label != tracks[ti]["label"]:
                continue
            score = iou(pb, box)
            if score >= params.iou_min:
                pairs.append((-score, ti, di))
    pairs.sort()
    matched_t: dict[int, int] = {}
    matched_d: set[int] = set()
    for _, ti, di in pairs:
        if ti in matched_t or di in matched_d:
            continue
        matched_t[ti] = di
        matched_d.add(di)

    # second pass: centre distance, gated by plausible walking speed
    pairs2 = []
    for ti, pb in enumerate(preds):
        if ti in matched_t:
            continue
        dt = max(t - tracks[ti]["last_seen"], 1e-3)
        cx, cy = _centre(pb)
        for di, (_, label, box) in enumerate(dets):
            if di in matched_d or label != tracks[ti]["label"]:
                continue
            h = max(box[3] - box[1], pb[3] - pb[1], 1e-3)
            dx, dy = _centre(box)
            dist = ((dx - cx) ** 2 + (dy - cy) ** 2) ** 0.5 / h
            if dist <= params.max_speed_heights_s * max(dt, 1.0):
                pairs2.append((dist, ti, di))
    pairs2.sort()
    for _, ti, di in pairs2:
        if ti in matched_t or di in matched_d:
            continue
        matched_t[ti] = di
        matched_d.add(di)

    survivors: list[dict[str, Any]] = []
    for ti, tr in enumerate(tracks):
        if ti in matched_t:
            det_id, label, box = dets[matched_t[ti]]
            if not tr["confirmed"] and t - tr["first_seen"] > params.confirm_window_s:
                # birth window missed: the count of hits starts again from here
                tr["first_seen"], tr["hits"] = t, 0
            dt = t - tr["last_seen"]
            if dt > 0:
                g = params.velocity_gain
                inst = [(box[k] - tr["box"][k]) / dt for k in range(4)]
                tr["vel"] = [(1 - g) * tr["vel"][k] + g * inst[k] for k in range(4)]
            tr["box"] = list(box)
            tr["last_seen"] = t
            tr["hits"] = tr["hits"] + 1
            newly = False
            if not tr["confirmed"] and tr["hits"] >= params.min_hits:
                tr["confirmed"] = True
                newly = True
            survivors.append(tr)
            step.observed.append(
                Observation(tr["id"], det_id, label, tuple(box), tr["confirmed"], newly)  # type: ignore[arg-type]
            )
            continue
        lost_for = t - tr["last_seen"]
        too_old = lost_for > params.max_age_s
        unborn = not tr["confirmed"] and t - tr["first_seen"] > params.confirm_window_s
        if too_old or unborn:
            step.ended.append(
                EndedTrack(tr["id"], tr["label"], tr["first_seen"], tr["last_seen"],
                           tr["hits"], tr["confirmed"])
            )
        else:
            survivors.append(tr)

    for di, (det_id, label, box) in enumerate(dets):
        if di in matched_d:
            continue
        counter += 1
        tr = {
            "id": f"{camera_id}-{counter}",
            "label": label,
            "box": list(box),
            "vel": [0.0, 0.0, 0.0, 0.0],
            "first_seen": t,
            "last_seen": t,
            "hits": 1,
            "confirmed": params.min_hits <= 1,
        }
        survivors.append(tr)
        step.observed.append(
            Observation(tr["id"], det_id, label, tuple(box), tr["confirmed"], tr["confirmed"])  # type: ignore[arg-type]
        )

    return {"counter": counter, "tracks": survivors, "last_t": t}, step


def hold(
    state: dict[str, Any], t: float
) -> tuple[dict[str, Any], TrackerStep]:
    """A frame the edge skipped for lack of motion: the scene is unchanged, so every
    track seen in the last analysed frame is taken to be still where it was (a loiterer
    standing still must not die just because nothing moved)."""
    last_t = state.get("last_t")
    tracks = [dict(tr) for tr in state.get("tracks", [])]
    step = TrackerStep()
    if last_t is None:
        return state, step
    for tr in tracks:
        if tr["last_seen"] == last_t:
            tr["last_seen"] = t
            step.observed.append(
                Observation(tr["id"], "", tr["label"], tuple(tr["box"]),  # type: ignore[arg-type]
                            tr["confirmed"], False)
            )
    return {"counter": state.get("counter", 0), "tracks": tracks, "last_t": t}, step
