"""Ground truth of a scenario: boxes per frame, who was in which zone when, which alerts.

Zone presence uses each person's *physical* foot point (occluded people are still there),
sampled at the scenario's frame times. `derive_alerts` applies each rule's thresholds to
that presence the way the scene agent is meant to (dwell with gap tolerance, crowd over a
window, perimeter entry while the schedule is armed, directed line crossing), so a
scenario's declared `expected_alerts` can be checked against its own geometry
(`tests/unit/test_sim_truth.py`).
"""

from __future__ import annotations

import itertools
from dataclasses import asdict, dataclass, field
from datetime import time
from typing import Any
from zoneinfo import ZoneInfo

from edge_producer.sim.render import build_tracks, iter_frames
from edge_producer.sim.scenario import RuleSpec, Scenario, ScheduleSpec


def point_in_polygon(x: float, y: float, poly: list[tuple[float, float]]) -> bool:
    """Even-odd ray casting; points on an edge may go either way (measure zero here)."""
    inside = False
    n = len(poly)
    for i in range(n):
        x1, y1 = poly[i]
        x2, y2 = poly[(i + 1) % n]
        if (y1 > y) != (y2 > y):
            xc = x1 + (y - y1) * (x2 - x1) / (y2 - y1)
            if x < xc:
                inside = not inside
    return inside


@dataclass(frozen=True)
class Interval:
    person_id: str
    zone_id: str
    start_s: float
    end_s: float  # last sample inside (inclusive)


@dataclass(frozen=True)
class DerivedAlert:
    rule_id: str
    rule_type: str
    zone_id: str | None
    at_s: float
    actors: list[str] = field(default_factory=list)


def _armed(schedule: ScheduleSpec, scenario: Scenario, t: float) -> bool:
    if schedule.kind == "always":
        return True
    tz = ZoneInfo(scenario.site.cameras[0].timezone or scenario.timezone
                  if scenario.site.cameras else scenario.timezone)
    local = scenario.occurred_at(t).astimezone(tz).time()
    start, end = ("22:00", "06:00") if schedule.kind == "night" else (
        schedule.start or "00:00", schedule.end or "23:59")
    s, e = time.fromisoformat(start), time.fromisoformat(end)
    return (s <= local < e) if s <= e else (local >= s or local < e)


def sample_positions(scenario: Scenario) -> dict[str, list[tuple[float, float, float]]]:
    """actor (person or vehicle) -> [(t, x, y)] at every frame time while in the scene."""
    out: dict[str, list[tuple[float, float, float]]] = {}
    for tr in build_tracks(scenario):
        samples = []
        for i in range(scenario.frame_count):
            t = scenario.time_of(i)
            pos = tr.at(t)
            if pos is not None:
                samples.append((t, pos[0], min(pos[1], 1.0)))
        out[tr.person_id] = samples
    return out


def zone_presence(scenario: Scenario) -> list[Interval]:
    step = 1.0 / scenario.fps
    out: list[Interval] = []
    positions = sample_positions(scenario)
    for zone in scenario.site.zones:
        poly = list(zone.polygon)
        for pid, samples in sorted(positions.items()):
            start: float | None = None
            last = 0.0  # read only once `start` is set
            for t, x, y in samples:
                if point_in_polygon(x, y, poly):
                    if start is None or t - last > step * 1.5:
                        if start is not None:
                            out.append(Interval(pid, zone.zone_id, start, last))
                        start = t
                    last = t
            if start is not None:
                out.append(Interval(pid, zone.zone_id, start, last))
    return out


def _loitering(rule: RuleSpec, presence: list[Interval]) -> list[DerivedAlert]:
    alerts = []
    by_person: dict[str, list[Interval]] = {}
    for iv in presence:
        if iv.zone_id == rule.zone_id:
            by_person.setdefault(iv.person_id, []).append(iv)
    for pid, ivs in sorted(by_person.items()):
        ivs.sort(key=lambda i: i.start_s)
        start, end = ivs[0].start_s, ivs[0].end_s
        merged = []
        for iv in ivs[1:]:
            if iv.start_s - end <= rule.gap_tolerance_s:
                end = max(end, iv.end_s)
            else:
                merged.append((start, end))
                start, end = iv.start_s, iv.end_s
        merged.append((start, end))
        for s, e in merged:
            if e - s >= rule.dwell_s:
                alerts.append(DerivedAlert(rule.rule_id, "loitering", rule.zone_id,
                                           s + rule.dwell_s, [pid]))
    return alerts


def _crowd(rule: RuleSpec, scenario: Scenario, presence: list[Interval]) -> list[DerivedAlert]:
    ivs = [iv for iv in presence if iv.zone_id == rule.zone_id]
    above_since: float | None = None
    fired = False
    out = []
    for i in range(scenario.frame_count):
        t = scenario.time_of(i)
        inside = sorted(iv.person_id for iv in ivs if iv.start_s <= t <= iv.end_s)
        if len(inside) >= rule.min_people:
            above_since = t if above_since is None else above_since
            if not fired and t - above_since >= rule.window_s:
                out.append(DerivedAlert(rule.rule_id, "crowd", rule.zone_id, t, inside))
                fired = True
        elif len(inside) < rule.clear_below:
            above_since, fired = None, False
        else:
            above_since = None if not fired else above_since
    return out


def _perimeter(rule: RuleSpec, scenario: Scenario, presence: list[Interval]) -> list[DerivedAlert]:
    out = []
    for iv in sorted(presence, key=lambda i: i.start_s):
        if iv.zone_id == rule.zone_id and _armed(rule.schedule, scenario, iv.start_s):
            out.append(DerivedAlert(rule.rule_id, "perimeter", rule.zone_id, iv.start_s,
                                    [iv.person_id]))
    return out


def _side(a: tuple[float, float], b: tuple[float, float], p: tuple[float, float]) -> float:
    return (b[0] - a[0]) * (p[1] - a[1]) - (b[1] - a[1]) * (p[0] - a[0])


def _line_crossing(rule: RuleSpec, scenario: Scenario,
                   labels: dict[str, str]) -> list[DerivedAlert]:
    line = next(ln for ln in scenario.site.lines if ln.line_id == rule.line_id)
    a, b = line.a, line.b
    out = []
    for pid, samples in sorted(sample_positions(scenario).items()):
        if labels[pid] not in rule.classes:
            continue
        for (_, x0, y0), (t1, x1, y1) in itertools.pairwise(samples):
            s0, s1 = _side(a, b, (x0, y0)), _side(a, b, (x1, y1))
            if s0 * s1 >= 0:
                continue
            # image y points down, so positive cross product = right of a->b
            direction = "forward" if s0 < 0 < s1 else "backward"
            # does the crossing point lie on the segment?
            f = s0 / (s0 - s1)
            px, py = x0 + f * (x1 - x0), y0 + f * (y1 - y0)
            dx, dy = b[0] - a[0], b[1] - a[1]
            u = ((px - a[0]) * dx + (py - a[1]) * dy) / (dx * dx + dy * dy)
            if 0 <= u <= 1 and rule.direction in (None, direction):
                out.append(DerivedAlert(rule.rule_id, "line_crossing", None, t1, [pid]))
    return out


def derive_alerts(scenario: Scenario) -> list[DerivedAlert]:
    labels = {tr.person_id: tr.label for tr in build_tracks(scenario)}
    every = zone_presence(scenario)
    out: list[DerivedAlert] = []
    for rule in scenario.site.rules:
        # a rule watches only its classes (people by default, vehicles when asked)
        presence = [iv for iv in every if labels[iv.person_id] in rule.classes]
        if rule.rule_type == "loitering":
            out += _loitering(rule, presence)
        elif rule.rule_type == "crowd":
            out += _crowd(rule, scenario, presence)
        elif rule.rule_type == "perimeter":
            out += _perimeter(rule, scenario, presence)
        else:
            out += _line_crossing(rule, scenario, labels)
    return sorted(out, key=lambda a: (a.at_s, a.rule_id))


def ground_truth(scenario: Scenario, *, boxes: bool = True) -> dict[str, Any]:
    """The JSON document `vigil sim truth` prints."""
    doc: dict[str, Any] = {
        "scenario": scenario.name,
        "camera_id": scenario.camera_id,
        "start": scenario.start.isoformat(),
        "timezone": scenario.timezone,
        "fps": scenario.fps,
        "frame_count": scenario.frame_count,
        "width": scenario.width,
        "height": scenario.height,
        "box_convention": "normalised x1,y1,x2,y2; people full height, width 0.41 x "
                          "height; vehicles their coloured pixels",
        "presence": [asdict(iv) for iv in zone_presence(scenario)],
        "occlusions": [o.model_dump() for o in scenario.occlusions],
        "expected_alerts": [
            {**e.model_dump(), "occurred_at": scenario.occurred_at(e.at_s).isoformat()}
            for e in scenario.expected_alerts
        ],
        "derived_alerts": [
            {**asdict(a), "occurred_at": scenario.occurred_at(a.at_s).isoformat()}
            for a in derive_alerts(scenario)
        ],
    }
    if boxes:
        doc["frames"] = [
            {
                "index": f.index,
                "t": f.t,
                "occurred_at": f.occurred_at.isoformat(),
                "boxes": [
                    {"actor": b.actor_id, "label": b.label,
                     "box": [round(v, 5) for v in (b.x1, b.y1, b.x2, b.y2)]}
                    for b in f.boxes
                ],
                "hidden": f.hidden,
            }
            for f in iter_frames(scenario)
        ]
    return doc
