"""The scene rule engine: (camera config, FrameAnalyzed, camera state) -> (state, events).

Pure and deterministic on purpose. The Faust agent (`agents.scene`) is a thin shell that
loads the camera's state from a table, calls `process`, publishes the events and stores
the state; everything that decides anything lives here, where unit tests and replays can
reach it without Kafka. Determinism rules:
- event time only: `t` is the frame's `occurred_at`; the worker's clock never enters;
- derived event ids: ``derived_event_id(type, frame event id, discriminators…)``, and
  ``occurred_at`` = the frame's event time, so a replay (or a re-delivery after a crash)
  produces byte-identical events that downstream deduplicates by id;
- fixed iteration order (sorted ids) everywhere;
- state is a JSON-able dict with integer-microsecond times, so it round-trips through
  the Faust table (JSON values) without drift.

Camera state layout (one dict per camera, table key = camera id)::

    {"v": 2,
     "tracker": {...},                          # agents.tracker state
     "zones":  {zone_id: {track_id: {"entered", "last_in", "announced", "fired"}}},
     "loiter": {rule_id: {track_id: presence}}, # agents.loitering
     "crowd":  {rule_id: crowd state},          # agents.crowd
     "lines":  {line_id: {track_id: side}},     # agents.lines
     "ev":     {"n": next ref, "ids": {ref: frame event id}}}

Evidence (the frames behind a loitering or crowd hit) is kept as small integer refs into
``ev``, each frame id stored once per camera: with eight people in a zone every track
carried the same twenty 36-character UUIDs, and the state (written to RocksDB and its
changelog on every frame) was 12 KB, most of the scene worker's cost at 1000 cameras.
Refs no evidence list points at any more are dropped on every frame.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

from agents import crowd, lines, loitering, tracker
from agents.geometry import Pt, bottom_centre, polygon_test
from agents.schedule import is_armed
from schemas.events import (
    CameraConfigured,
    Event,
    FrameAnalyzed,
    LineConfigured,
    LineCrossed,
    RuleCleared,
    RuleConfigured,
    RuleTriggered,
    TrackSummary,
    ZoneConfigured,
    ZoneEntered,
    ZoneExited,
    derived_event_id,
)

log = logging.getLogger(__name__)

#: Fixed producer string: part of every output's bytes, so a replay must use the same one.
PRODUCER = "vigil-scene/1"
STATE_VERSION = 2
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

E = TypeVar("E", bound=Event)


def to_us(at: datetime) -> int:
    """Event time as integer microseconds since the epoch (exact, JSON-safe)."""
    delta = at.astimezone(UTC) - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def from_us(us: int) -> datetime:
    return _EPOCH + timedelta(microseconds=int(us))


# --------------------------------------------------------------------------- config


@dataclass(frozen=True)
class ZoneSpec:
    zone_id: str
    kind: str
    polygon: tuple[Pt, ...]
    #: `point_in_polygon` for this polygon, precomputed once per config version
    contains: Callable[[Pt], bool] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "contains", polygon_test(self.polygon))


@dataclass(frozen=True)
class LineSpec:
    line_id: str
    a: Pt
    b: Pt


@dataclass(frozen=True)
class CameraSpec:
    """One camera's compiled configuration: what the engine needs, pre-digested."""

    camera_id: str
    timezone: str = "UTC"
    enabled: bool = True
    zones: dict[str, ZoneSpec] = field(default_factory=dict)
    lines: dict[str, LineSpec] = field(default_factory=dict)
    rules: tuple[RuleConfigured, ...] = ()

    @property
    def labels(self) -> tuple[str, ...]:
        """Object classes any rule looks at (the tracker follows only these)."""
        found = {c for r in self.rules for c in r.classes} or {"person"}
        return tuple(sorted(found))


def compile_camera(camera_id: str, entities: Iterable[Event]) -> CameraSpec:
    """Build a CameraSpec from config events (any camera's; others are ignored).

    Rules that are disabled or point at a zone/line this camera does not have are left
    out (with a log line): the config validator rejects such files, but the topic may
    still hold an older rule for a zone deleted since.
    """
    tz, enabled = "UTC", True
    zones: dict[str, ZoneSpec] = {}
    line_specs: dict[str, LineSpec] = {}
    rules: list[RuleConfigured] = []
    for ent in entities:
        if getattr(ent, "camera_id", None) != camera_id:
            continue
        if isinstance(ent, CameraConfigured):
            tz, enabled = ent.timezone, ent.enabled
        elif isinstance(ent, ZoneConfigured):
            zones[ent.zone_id] = ZoneSpec(
                ent.zone_id, ent.kind, tuple((p.x, p.y) for p in ent.polygon)
            )
        elif isinstance(ent, LineConfigured):
            line_specs[ent.line_id] = LineSpec(ent.line_id, (ent.a.x, ent.a.y), (ent.b.x, ent.b.y))
        elif isinstance(ent, RuleConfigured):
            rules.append(ent)
    usable = []
    for r in sorted(rules, key=lambda r: r.rule_id):
        if not r.enabled:
            continue
        if r.rule_type in ("loitering", "perimeter") and r.zone_id not in zones:
            log.warning("rule %s: unknown zone %s, ignored", r.rule_id, r.zone_id)
            continue
        if r.rule_type == "crowd" and r.zone_id is not None and r.zone_id not in zones:
            log.warning("rule %s: unknown zone %s, ignored", r.rule_id, r.zone_id)
            continue
        if r.rule_type == "line_crossing" and r.line_id not in line_specs:
            log.warning("rule %s: unknown line %s, ignored", r.rule_id, r.line_id)
            continue
        usable.append(r)
    return CameraSpec(camera_id, tz, enabled, dict(sorted(zones.items())),
                      dict(sorted(line_specs.items())), tuple(usable))


# --------------------------------------------------------------------------- engine


@dataclass(frozen=True)
class EngineParams:
    """Engine knobs not carried by rules (seconds of event time)."""

    tracker: tracker.TrackerParams = field(default_factory=tracker.TrackerParams)
    #: a track must be outside (or unseen) this long before ZoneExited: no boundary flicker
    zone_exit_grace_s: float = 2.0
    #: crowd windows close this long after their end (late frames of the same camera)
    crowd_grace_s: float = 2.0
    evidence_cap: int = 20


def new_state() -> dict[str, Any]:
    return {"v": STATE_VERSION, "tracker": tracker.new_state(), "zones": {}, "loiter": {},
            "crowd": {}, "lines": {}, "ev": {"n": 1, "ids": {}}}


def upgrade_v1(state: dict[str, Any]) -> dict[str, Any]:
    """Version 1 kept evidence as frame ids inline; intern them into ``ev`` refs so a
    worker upgraded mid-scenario keeps its tracks and presences."""
    ids: dict[str, str] = {}
    refs: dict[str, int] = {}

    def intern(fid: str) -> int:
        if fid not in refs:
            refs[fid] = len(refs) + 1
            ids[str(refs[fid])] = fid
        return refs[fid]

    loiter = {rid: {tid: dict(p, evidence=[intern(f) for f in p["evidence"]])
                    for tid, p in pres.items()}
              for rid, pres in state.get("loiter", {}).items()}
    crowd_state = {}
    for rid, cs in state.get("crowd", {}).items():
        windows = {k: dict(w, evidence=[intern(f) for f in w["evidence"]])
                   for k, w in cs.get("windows", {}).items()}
        crowd_state[rid] = dict(cs, windows=windows)
    return dict(state, v=STATE_VERSION, loiter=loiter, crowd=crowd_state,
                ev={"n": len(refs) + 1, "ids": ids})


def _live_evidence(loiter_state: dict[str, Any], crowd_state: dict[str, Any],
                   ids: dict[str, str]) -> dict[str, str]:
    """The ref -> frame id entries some evidence list still points at."""
    live: set[int] = set()
    for pres in loiter_state.values():
        for p in pres.values():
            live.update(p["evidence"])
    for cs in crowd_state.values():
        for w in cs["windows"].values():
            live.update(w["evidence"])
    return {str(r): ids[str(r)] for r in sorted(live)}


class _Out:
    """Collects output events with derived ids and the frame as cause."""

    def __init__(self, frame: FrameAnalyzed):
        self.frame = frame
        self.events: list[Event] = []

    def trigger(self, rule: RuleConfigured, *id_parts: object, **fields: Any) -> None:
        """A RuleTriggered carrying the rule's own alert policy (auto-resolve, cooldown),
        so the alerts stage applies what the rule says without reading the config."""
        self.emit(RuleTriggered, rule.rule_id, *id_parts, auto_resolve=rule.auto_resolve,
                  cooldown_s=rule.cooldown_s, **fields)

    def emit(self, cls: type[E], *id_parts: object, **fields: Any) -> None:
        f = self.frame
        self.events.append(
            cls.create(
                producer=PRODUCER,
                occurred_at=f.occurred_at,
                cause=f,
                event_id=derived_event_id(cls.__name__, f.event_id, *id_parts),
                camera_id=f.camera_id,
                **fields,
            )
        )


def _armed(rule: RuleConfigured, spec: CameraSpec, at: datetime) -> bool:
    s = rule.schedule
    return is_armed(s.kind, s.start, s.end, at, spec.timezone)


def process(
    spec: CameraSpec,
    frame: FrameAnalyzed,
    state: dict[str, Any] | None,
    params: EngineParams | None = None,
) -> tuple[dict[str, Any], list[Event]]:
    """Apply one frame to one camera's state; returns (new state, events to publish)."""
    params = params or EngineParams()
    if state and state.get("v") == 1:
        state = upgrade_v1(state)
    state = state if state and state.get("v") == STATE_VERSION else new_state()
    out = _Out(frame)
    if not spec.enabled:
        return state, []
    t_us = to_us(frame.occurred_at)
    t = t_us / 1_000_000
    ev_id = frame.event_id
    cap = params.evidence_cap
    # this frame's evidence ref (see the module docstring)
    ev_ref = int(state["ev"]["n"])
    ev_ids = {**state["ev"]["ids"], str(ev_ref): ev_id}

    # ---- tracking
    tparams = tracker.TrackerParams(**{**params.tracker.__dict__, "labels": spec.labels})
    if frame.skipped:
        tstate, tstep = tracker.hold(state["tracker"], t)
    else:
        dets = [(d.detection_id, d.label, (d.x1, d.y1, d.x2, d.y2)) for d in frame.detections]
        tstate, tstep = tracker.update(state["tracker"], frame.camera_id, t, dets, tparams)
    ended = frozenset(e.track_id for e in tstep.ended)
    obs = {o.track_id: o for o in tstep.observed}
    positions: dict[str, tuple[Pt, bool]] = {
        tid: (bottom_centre(o.box), o.confirmed) for tid, o in sorted(obs.items())
    }
    inside: dict[str, set[str]] = {
        zid: {tid for tid, (p, _) in positions.items() if z.contains(p)}
        for zid, z in spec.zones.items()
    }
    rules_by_zone: dict[str, list[RuleConfigured]] = {}
    for r in spec.rules:
        if r.zone_id is not None:
            rules_by_zone.setdefault(r.zone_id, []).append(r)

    # ---- zone entry / exit (+ perimeter)
    grace_us = int(params.zone_exit_grace_s * 1_000_000)
    zones_state: dict[str, Any] = {}
    for zid in spec.zones:
        zst = state["zones"].get(zid, {})
        nz: dict[str, Any] = {}
        perimeter_rules = [r for r in rules_by_zone.get(zid, []) if r.rule_type == "perimeter"]
        for tid in sorted(set(zst) | inside[zid]):
            pres = zst.get(tid)
            if pres is not None and (
                tid in ended or (tid not in inside[zid] and t_us - pres["last_in"] > grace_us)
            ):
                if pres["announced"]:
                    out.emit(ZoneExited, zid, tid, zone_id=zid, track_id=tid,
                             entered_at=from_us(pres["entered"]),
                             dwell_s=(pres["last_in"] - pres["entered"]) / 1_000_000)
                for rid in pres["fired"]:
                    out.emit(RuleCleared, rid, tid, zone_id=zid, rule_id=rid,
                             rule_type="perimeter",
                             reason=f"track {tid} left zone {zid}")
                pres = None
            if tid not in inside[zid]:
                if pres is not None:
                    nz[tid] = pres
                continue
            if pres is None:
                pres = {"entered": t_us, "last_in": t_us, "announced": False, "fired": []}
            else:
                pres = dict(pres)
            pres["last_in"] = t_us
            o = obs[tid]
            if o.confirmed and not pres["announced"]:
                pres["announced"] = True
                out.emit(ZoneEntered, zid, tid, zone_id=zid, track_id=tid)
                fired = []
                for r in perimeter_rules:
                    if o.label in r.classes and _armed(r, spec, frame.occurred_at):
                        fired.append(r.rule_id)
                        out.trigger(r, tid, zone_id=zid,
                                 rule_id=r.rule_id, rule_type="perimeter",
                                 severity=r.severity, value=1.0, threshold=1.0,
                                 track_ids=[tid], first_evidence_at=from_us(pres["entered"]),
                                 last_evidence_at=frame.occurred_at,
                                 evidence_event_ids=[ev_id], frame_ref=frame.frame_ref)
                pres["fired"] = fired
            nz[tid] = pres
        if nz:
            zones_state[zid] = nz

    # ---- directed lines
    lines_state: dict[str, Any] = {}
    for lid, ln in spec.lines.items():
        lst, crossings = lines.step(state["lines"].get(lid, {}), t, positions, ln.a, ln.b,
                                    forget=ended)
        if lst:
            lines_state[lid] = lst
        for tid, direction in crossings:
            out.emit(LineCrossed, lid, tid, line_id=lid, track_id=tid, direction=direction)
            for r in spec.rules:
                if r.rule_type != "line_crossing" or r.line_id != lid:
                    continue
                if r.direction not in (None, direction) or obs[tid].label not in r.classes:
                    continue
                if not _armed(r, spec, frame.occurred_at):
                    continue
                out.trigger(r, tid, zone_id=r.zone_id, rule_id=r.rule_id,
                         rule_type="line_crossing", severity=r.severity, value=1.0,
                         threshold=1.0, track_ids=[tid], first_evidence_at=frame.occurred_at,
                         last_evidence_at=frame.occurred_at, evidence_event_ids=[ev_id],
                         frame_ref=frame.frame_ref)

    # ---- loitering and crowd
    loiter_state: dict[str, Any] = {}
    crowd_state: dict[str, Any] = {}
    for r in spec.rules:
        if r.rule_type == "loitering":
            assert r.zone_id is not None
            zin = {
                tid: (ev_ref, obs[tid].confirmed)
                for tid in sorted(inside[r.zone_id]) if obs[tid].label in r.classes
            }
            lp = loitering.LoiterParams(r.dwell_s, r.gap_tolerance_s, cap)
            lst, lstep = loitering.step(state["loiter"].get(r.rule_id, {}), t_us, zin,
                                        _armed(r, spec, frame.occurred_at), lp, ended)
            if lst:
                loiter_state[r.rule_id] = lst
            for tid, _p in lstep.cleared:
                out.emit(RuleCleared, r.rule_id, tid, zone_id=r.zone_id, rule_id=r.rule_id,
                         rule_type="loitering",
                         reason=f"track {tid} away from zone {r.zone_id} "
                                f"> {r.gap_tolerance_s:g}s")
            for tid, p in lstep.fired:
                out.trigger(r, tid, zone_id=r.zone_id, rule_id=r.rule_id,
                         rule_type="loitering", severity=r.severity,
                         value=(t_us - p["entered"]) / 1_000_000, threshold=r.dwell_s,
                         track_ids=[tid], first_evidence_at=from_us(p["entered"]),
                         last_evidence_at=frame.occurred_at,
                         evidence_event_ids=[ev_ids[str(r)] for r in p["evidence"]],
                         frame_ref=frame.frame_ref)
        elif r.rule_type == "crowd":
            members = sorted(
                tid for tid, o in obs.items()
                if o.label in r.classes and (r.zone_id is None or tid in inside[r.zone_id])
            )
            cp = crowd.CrowdParams(r.min_people, r.clear_below, r.window_s,
                                   params.crowd_grace_s, cap)
            cst, cstep = crowd.step(state["crowd"].get(r.rule_id, crowd.new_state()), t_us,
                                    len(members), members, ev_ref,
                                    _armed(r, spec, frame.occurred_at), cp)
            crowd_state[r.rule_id] = cst
            for w in cstep.cleared:
                out.emit(RuleCleared, r.rule_id, w["start"], zone_id=r.zone_id,
                         rule_id=r.rule_id, rule_type="crowd",
                         reason=f"at most {w['max']} people (< {r.clear_below}) "
                                f"for {r.window_s:g}s")
            for w in cstep.fired:
                out.trigger(r, w["start"], zone_id=r.zone_id,
                         rule_id=r.rule_id, rule_type="crowd", severity=r.severity,
                         value=float(w["min"]), threshold=float(r.min_people),
                         track_ids=list(w["tracks"]), first_evidence_at=from_us(w["first"]),
                         last_evidence_at=from_us(w["last"]),
                         evidence_event_ids=[ev_ids[str(r)] for r in w["evidence"]],
                         frame_ref=frame.frame_ref)

    # ---- ended tracks
    for e in sorted(tstep.ended, key=lambda e: e.track_id):
        if e.confirmed:
            out.emit(TrackSummary, e.track_id, track_id=e.track_id, label=e.label,
                     first_seen_at=from_us(round(e.first_seen * 1_000_000)),
                     last_seen_at=from_us(round(e.last_seen * 1_000_000)),
                     observations=e.observations)

    new = {"v": STATE_VERSION, "tracker": tstate, "zones": zones_state, "loiter": loiter_state,
           "crowd": crowd_state, "lines": lines_state,
           "ev": {"n": ev_ref + 1, "ids": _live_evidence(loiter_state, crowd_state, ev_ids)}}
    return new, out.events
