"""Render a scenario into frames of dark human silhouettes (and coloured vehicles,
`edge_producer.sim.vehicles`) over a textured ground.

The silhouettes are drawn to be found by OpenCV's default HOG people detector (which the
CPU `person_detector` uses): upright, head/torso/arms/legs in proportions close to the
INRIA pedestrians the detector was trained on, dark against a mid-grey textured ground,
legs swinging while walking. `tests/unit/test_sim_hog.py` checks recall directly.

Everything is a pure function of the scenario (and its seed): the same scenario renders
the same pixels, so replays and tests are reproducible.

Ground-truth boxes (`SimFrame.boxes`) follow the pedestrian-benchmark convention (Caltech):
full person height (head top to feet) and a fixed width of 0.41 x height, centred on the
person, normalised. A HOG window is larger than the person inside it (measured on these
silhouettes: the person is 0.725 of the window height, 0.155 from its top); shrink HOG
windows with `hog_to_person_box` before comparing them with these boxes.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime

import cv2
import numpy as np

from edge_producer.sim.scenario import Group, Loiterer, Scenario, Vehicle, Walker
from edge_producer.sim.vehicles import HEIGHTS, draw_vehicle, slots_of

Vec = tuple[float, float]

#: Width / height of a ground-truth person box (Caltech pedestrian convention).
ASPECT = 0.41


@dataclass(frozen=True, slots=True)
class TruthBox:
    """A visible person: tight box in normalised coordinates, plus the foot point."""

    actor_id: str
    x1: float
    y1: float
    x2: float
    y2: float
    label: str = "person"

    @property
    def foot(self) -> Vec:
        return ((self.x1 + self.x2) / 2, self.y2)


@dataclass(frozen=True, slots=True)
class SimFrame:
    index: int
    t: float  # seconds since scenario start
    occurred_at: datetime
    image: np.ndarray  # BGR uint8, scenario.height x scenario.width
    boxes: list[TruthBox] = field(default_factory=list)
    hidden: list[str] = field(default_factory=list)  # present but occluded


# --------------------------------------------------------------------------- motion


@dataclass(frozen=True, slots=True)
class Track:
    """One person's foot positions over time: piecewise-linear between keyframes."""

    person_id: str
    height_px: int
    keys: tuple[tuple[float, float, float], ...]  # (t, x, y), t increasing
    shade: int  # clothing darkness
    label: str = "person"  # or a vehicle class (edge_producer.sim.vehicles)
    slot: int = -1  # a vehicle's palette slot

    @property
    def t0(self) -> float:
        return self.keys[0][0]

    @property
    def t1(self) -> float:
        return self.keys[-1][0]

    def at(self, t: float) -> tuple[float, float, float] | None:
        """(x, y, distance walked) at time t, or None when not in the scene."""
        if t < self.t0 or t > self.t1:
            return None
        dist = 0.0
        for (ta, xa, ya), (tb, xb, yb) in zip(self.keys, self.keys[1:], strict=False):
            seg = math.hypot(xb - xa, yb - ya)
            if t <= tb:
                f = 0.0 if tb == ta else (t - ta) / (tb - ta)
                return xa + f * (xb - xa), ya + f * (yb - ya), dist + f * seg
            dist += seg
        _, x, y = self.keys[-1]
        return x, y, dist

    def moving(self, t: float) -> bool:
        for (ta, xa, ya), (tb, xb, yb) in zip(self.keys, self.keys[1:], strict=False):
            if ta <= t <= tb:
                return (xa, ya) != (xb, yb)
        return False


def _walk(keys: list[tuple[float, float, float]], to: Vec, speed: float) -> None:
    t, x, y = keys[-1]
    d = math.hypot(to[0] - x, to[1] - y)
    keys.append((t + d / speed, to[0], to[1]))


def _linger(keys: list[tuple[float, float, float]], centre: Vec, radius: float, stay_s: float,
            rng: np.random.Generator) -> None:
    """Wander near `centre` for `stay_s`: short slow moves with pauses, like a person waiting."""
    t_end = keys[-1][0] + stay_s
    while True:
        t, x, y = keys[-1]
        if t >= t_end:
            break
        pause = float(rng.uniform(2.0, 5.0))
        keys.append((min(t + pause, t_end), x, y))
        t = keys[-1][0]
        if t >= t_end or radius <= 0:
            continue
        ang = float(rng.uniform(0, 2 * math.pi))
        r = float(rng.uniform(0, radius))
        nx, ny = centre[0] + r * math.cos(ang), centre[1] + 0.5 * r * math.sin(ang)
        d = math.hypot(nx - x, ny - y)
        dt = max(d / 0.02, 0.5)  # slow shuffle
        if t + dt > t_end:
            dt = t_end - t
        keys.append((t + dt, nx, ny))


def build_tracks(scenario: Scenario) -> list[Track]:
    """Turn actors into per-person tracks; deterministic for a given scenario seed."""
    rng = np.random.default_rng(scenario.seed)
    tracks: list[Track] = []
    used: dict[str, int] = {}
    for actor in scenario.actors:
        if isinstance(actor, Vehicle):
            keys = [(actor.start_s, *actor.waypoints[0])]
            for i, wp in enumerate(actor.waypoints):
                if i:
                    _walk(keys, wp, actor.speed)
                if i in actor.stops:
                    keys.append((keys[-1][0] + actor.stops[i], wp[0], wp[1]))
            slot = slots_of(actor.cls)[used.get(actor.cls, 0)]
            used[actor.cls] = used.get(actor.cls, 0) + 1
            tracks.append(Track(actor.id, actor.height_px or HEIGHTS[actor.cls], tuple(keys),
                                0, label=actor.cls, slot=slot))
        elif isinstance(actor, Walker):
            keys = [(actor.start_s, *actor.waypoints[0])]
            for wp in actor.waypoints[1:]:
                _walk(keys, wp, actor.speed)
            tracks.append(Track(actor.id, actor.height_px, tuple(keys), int(rng.integers(15, 45))))
        elif isinstance(actor, Loiterer):
            keys = [(actor.start_s, *actor.enter)]
            _walk(keys, actor.area, actor.speed)
            _linger(keys, actor.area, actor.radius, actor.stay_s, rng)
            if actor.exit is not None:
                _walk(keys, actor.exit, actor.speed)
            tracks.append(Track(actor.id, actor.height_px, tuple(keys), int(rng.integers(15, 45))))
        elif isinstance(actor, Group):
            n = actor.members
            gx, gy = actor.gather_at
            arrivals: list[list[tuple[float, float, float]]] = []
            for k in range(n):
                spot = (gx + (k - (n - 1) / 2) * actor.spacing, gy + 0.02 * ((k % 2) * 2 - 1))
                spot = (min(max(spot[0], 0.03), 0.97), min(max(spot[1], 0.05), 1.0))
                ent = actor.enter[k % len(actor.enter)]
                keys = [(actor.start_s + 1.5 * k, *ent)]
                _walk(keys, spot, actor.speed)
                arrivals.append(keys)
            # everyone stays until stay_s after the last one arrived, then leaves together
            gathered = max(k[-1][0] for k in arrivals)
            for k, keys in enumerate(arrivals):
                keys.append((gathered + actor.stay_s, keys[-1][1], keys[-1][2]))
                if actor.exit is not None:
                    ex = (min(max(actor.exit[0] + (k - (n - 1) / 2) * actor.spacing * 0.7, 0), 1),
                          actor.exit[1])
                    _walk(keys, ex, actor.speed)
                tracks.append(
                    Track(f"{actor.id}-{k + 1}", actor.height_px, tuple(keys),
                          int(rng.integers(15, 45)))
                )
    return tracks


# --------------------------------------------------------------------------- drawing


def render_background(scenario: Scenario) -> np.ndarray:
    """Paving-like texture: smooth blotches, fine grain and faint tile joints."""
    bg = scenario.background
    h, w = scenario.height, scenario.width
    rng = np.random.default_rng(scenario.seed + 1_000_003)
    coarse = rng.normal(0, 1, (h // 16 + 2, w // 16 + 2)).astype(np.float32)
    low = cv2.resize(coarse, (w, h), interpolation=cv2.INTER_CUBIC)
    grain = cv2.GaussianBlur(rng.normal(0, 1, (h, w)).astype(np.float32), (0, 0), 1.2)
    img = bg.brightness + bg.texture * (0.7 * low + 0.5 * grain)
    if bg.tiles:
        step = max(w // 12, 24)
        joint = bg.brightness * 0.06
        for x in range(0, w, step):
            img[:, x:x + 1] -= joint
        for y in range(0, h, step // 2 if step > 40 else step):
            img[y:y + 1, :] -= joint
    return cv2.cvtColor(np.clip(img, 0, 255).astype(np.uint8), cv2.COLOR_GRAY2BGR)


def _draw_person(img: np.ndarray, fx: float, fy: float, h: float, phase: float, shade: int,
                 moving: bool) -> tuple[int, int, int, int]:
    """Draw a silhouette whose feet are at pixel (fx, fy); returns its tight box."""
    top = fy - h
    head_r = 0.065 * h
    head_c = (fx, top + head_r)
    neck_y = top + 2 * head_r + 0.01 * h
    sh_y = top + 0.17 * h
    hip_y = top + 0.52 * h
    sh_w = 0.13 * h
    hip_w = 0.09 * h
    swing = math.sin(phase) if moving else 0.0
    leg_spread = 0.12 * h * swing
    arm_swing = 0.08 * h * swing
    leg_w = max(int(0.075 * h), 2)
    arm_w = max(int(0.055 * h), 2)

    torso_col = (shade, shade, shade)
    leg_col = (max(shade - 10, 5),) * 3

    def p(x: float, y: float) -> tuple[int, int]:
        return round(x * 16), round(y * 16)  # 4 fractional bits

    # legs: hip to foot, crossing as they swing
    for side in (-1, 1):
        hx = fx + side * hip_w * 0.5
        foot_x = fx + side * (0.03 * h) + side * leg_spread * 0.5
        knee = ((hx + foot_x) / 2 + side * 0.005 * h, (hip_y + fy) / 2)
        cv2.line(img, p(hx, hip_y), p(*knee), leg_col, leg_w, cv2.LINE_AA, 4)
        cv2.line(img, p(*knee), p(foot_x, fy - leg_w / 2), leg_col, leg_w, cv2.LINE_AA, 4)
    # torso: trapezoid shoulders->hips, with a neck
    torso = np.array([
        p(fx - sh_w, sh_y), p(fx + sh_w, sh_y), p(fx + hip_w, hip_y + 0.02 * h),
        p(fx - hip_w, hip_y + 0.02 * h),
    ], dtype=np.int32)
    cv2.fillPoly(img, [torso], torso_col, cv2.LINE_AA, 4)
    cv2.line(img, p(fx, neck_y - 2), p(fx, sh_y + 2), torso_col, max(int(0.06 * h), 2),
             cv2.LINE_AA, 4)
    cv2.circle(img, p(fx, sh_y + 0.02 * h), int(sh_w * 16 * 0.95), torso_col, -1, cv2.LINE_AA, 4)
    # arms: shoulder to hand, swinging opposite to the legs
    for side in (-1, 1):
        sx = fx + side * (sh_w - arm_w * 0.4)
        hand = (sx + side * 0.03 * h - side * arm_swing, sh_y + 0.36 * h)
        cv2.line(img, p(sx, sh_y + arm_w * 0.4), p(*hand), torso_col, arm_w, cv2.LINE_AA, 4)
    cv2.circle(img, p(*head_c), int(head_r * 16), torso_col, -1, cv2.LINE_AA, 4)
    half = max(sh_w + arm_w * 0.2, abs(leg_spread) * 0.5 + 0.03 * h + leg_w / 2)
    return int(fx - half), int(top), math.ceil(fx + half), math.ceil(fy)


def iter_frames(scenario: Scenario, *, start: int = 0, stop: int | None = None,
                step: int = 1) -> Iterator[SimFrame]:
    """Frames `start..stop` (by `step`) of the scenario, each with its ground truth.

    Deterministic: frame i is a pure function of (scenario, i), whatever the range asked.
    """
    tracks = build_tracks(scenario)
    hidden_spans = [(o.actor, o.start_s, o.end_s) for o in scenario.occlusions]
    background = render_background(scenario)
    w, h = scenario.width, scenario.height
    end = scenario.frame_count if stop is None else min(stop, scenario.frame_count)
    noise_sigma = scenario.background.noise
    for i in range(start, end, step):
        t = scenario.time_of(i)
        img = background.copy()
        boxes: list[TruthBox] = []
        hidden: list[str] = []
        # far (higher on screen) people first so nearer ones overlap them
        visible = []
        for tr in tracks:
            pos = tr.at(t)
            if pos is None:
                continue
            if any(a == tr.person_id and s <= t < e for a, s, e in hidden_spans):
                hidden.append(tr.person_id)
                continue
            visible.append((pos[1], tr, pos))
        for _, tr, (x, y, dist) in sorted(visible, key=lambda v: v[0]):
            if tr.slot >= 0:
                vx1, vy1, vx2, vy2 = draw_vehicle(img, tr.label, tr.slot, x * w,
                                                  min(y * h, float(h)), tr.height_px)
                if vx2 - vx1 >= 4 and vy2 - vy1 >= 4:
                    boxes.append(TruthBox(tr.person_id, vx1 / w, vy1 / h, vx2 / w, vy2 / h,
                                          tr.label))
                continue
            fx, fy = x * w, y * h
            fy = min(fy, h - 1.0)
            fy = max(fy, float(tr.height_px))
            phase = dist * w / (0.28 * tr.height_px) * math.pi
            x1, y1, x2, y2 = _draw_person(img, fx, fy, tr.height_px, phase, tr.shade,
                                          tr.moving(t))
            x1, x2 = max(x1, 0), min(x2, w)
            y1, y2 = max(y1, 0), min(y2, h)
            if x2 - x1 < 0.1 * tr.height_px:  # essentially off screen
                continue
            cx, half = (x1 + x2) / 2, ASPECT * (y2 - y1) / 2
            boxes.append(TruthBox(tr.person_id, max(cx - half, 0) / w, y1 / h,
                                  min(cx + half, w) / w, y2 / h))
        if noise_sigma > 0:
            rng = np.random.default_rng((scenario.seed, i))
            noise = rng.normal(0, noise_sigma, (h, w, 1)).astype(np.float32)
            img = np.clip(img.astype(np.float32) + noise, 0, 255).astype(np.uint8)
        boxes.sort(key=lambda b: b.actor_id)
        yield SimFrame(i, t, scenario.occurred_at(t), img, boxes, sorted(hidden))


def hog_to_person_box(x: int, y: int, w: int, h: int) -> tuple[int, int, int, int]:
    """Shrink a HOG detection window (x, y, w, h) to a person box (x1, y1, x2, y2) in the
    ground-truth convention: measured offsets of these silhouettes inside the window."""
    top, bottom = round(0.155 * h), round(0.12 * h)
    ph = h - top - bottom
    cx = x + w / 2
    half = ASPECT * ph / 2
    return round(cx - half), y + top, round(cx + half), y + h - bottom
