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
from schemas.geometry import Pt, bottom_centre, polygon_test
from schemas.schedule import is_armed

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
    #: object classes any rule looks at (the tracker follows only these); computed once
    labels: tuple[str, ...] = field(init=False, compare=False)
    #: the last `_Plan` built for this spec (engine params and rules pre-digested)
    _plan: list[_Plan] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        found = {c for r in self.rules for c in r.classes} or {"person"}
        object.__setattr__(self, "labels", tuple(sorted(found)))
        object.__setattr__(self, "_plan", [])


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
                   ids: dict[str, str], ref: int, frame_id: str) -> dict[str, str]:
    """The ref -> frame id entries some evidence list still points at (`ids` holds the
    earlier frames' entries, `ref` is this frame's, for `frame_id`), in ref order."""
    live: set[int] = set()
    for pres in loiter_state.values():
        for p in pres.values():
            ev = p["evidence"]
            if ev:
                live.update(ev)
    for cs in crowd_state.values():
        for w in cs["windows"].values():
            live.update(w["evidence"])
    order = sorted(live)
    # this frame's ref is the state's next ref, above every earlier one: last if live
    mine = bool(order) and order[-1] == ref
    if mine:
        order.pop()
    keys = list(map(str, order))
    out = dict(zip(keys, map(ids.__getitem__, keys), strict=True))
    if mine:
        out[str(ref)] = frame_id
    return out


class _Out:
    """Collects output events with derived ids and the frame as cause."""

    def __init__(self, frame: FrameAnalyzed):
        self.frame = frame
        self.events: list[Event] = []
        #: this frame's observations by track id (set once the tracker has run)
        self.obs: dict[str, Any] = {}

    def trigger(self, rule: RuleConfigured, *id_parts: object, **fields: Any) -> None:
        """A RuleTriggered carrying the rule's own alert policy (auto-resolve, cooldown,
        escalation), so the alerts stage applies what the rule says without reading the
        config, and the detection of each of its tracks in this frame, so the evidence
        stage can highlight them (docs/evidence.md)."""
        obs = self.obs
        dets = [obs[t].detection_id for t in fields["track_ids"] if t in obs]
        self.emit(RuleTriggered, rule.rule_id, *id_parts, auto_resolve=rule.auto_resolve,
                  cooldown_s=rule.cooldown_s, escalation_s=rule.escalation_s,
                  max_escalation_level=rule.max_escalation_level, detection_ids=dets,
                  **fields)

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


class _Plan:
    """What `process` needs from a (CameraSpec, EngineParams) pair, derived once instead
    of on every frame (tracker params with the spec's labels, the rules per zone and per
    line, loitering and crowd params): at 1000 cameras x 1 fps the engine runs 1000
    times a second and this used to be rebuilt each time."""

    __slots__ = ("area_rules", "grace_us", "line_rules", "params", "perimeter", "tparams")

    def __init__(self, spec: CameraSpec, params: EngineParams):
        self.params = params
        self.tparams = tracker.TrackerParams(**{**params.tracker.__dict__,
                                                "labels": spec.labels})
        self.grace_us = int(params.zone_exit_grace_s * 1_000_000)
        #: zone id -> its perimeter rules, in rule order
        self.perimeter: dict[str, list[RuleConfigured]] = {zid: [] for zid in spec.zones}
        #: line id -> its line-crossing rules, in rule order
        self.line_rules: dict[str, list[RuleConfigured]] = {lid: [] for lid in spec.lines}
        #: loitering and crowd rules in rule order: (rule, params, always armed)
        self.area_rules: list[tuple[RuleConfigured, Any, bool]] = []
        cap = params.evidence_cap
        for r in spec.rules:
            always = r.schedule.kind == "always"
            if r.rule_type == "perimeter" and r.zone_id in self.perimeter:
                self.perimeter[r.zone_id].append(r)
            elif r.rule_type == "line_crossing" and r.line_id in self.line_rules:
                self.line_rules[r.line_id].append(r)
            elif r.rule_type == "loitering":
                self.area_rules.append(
                    (r, loitering.LoiterParams(r.dwell_s, r.gap_tolerance_s, cap), always))
            elif r.rule_type == "crowd":
                self.area_rules.append(
                    (r, crowd.CrowdParams(r.min_people, r.clear_below, r.window_s,
                                          params.crowd_grace_s, cap), always))


def _plan_for(spec: CameraSpec, params: EngineParams) -> _Plan:
    """The spec's cached plan if it was built for these params, else a new one."""
    held = spec._plan
    if held and (held[0].params is params or held[0].params == params):
        return held[0]
    plan = _Plan(spec, params)
    held[:] = [plan]
    return plan


#: `process` without explicit params (the agent): one instance, so `_plan_for` hits
_DEFAULT_PARAMS = EngineParams()
_NO_TRACKS: frozenset[str] = frozenset()


def process(
    spec: CameraSpec,
    frame: FrameAnalyzed,
    state: dict[str, Any] | None,
    params: EngineParams | None = None,
) -> tuple[dict[str, Any], list[Event]]:
    """Apply one frame to one camera's state; returns (new state, events to publish).

    The input state is never modified: the new state is built from new dicts where
    something changed and shares the unchanged parts (a track not seen in this frame,
    an evidence list) with the input, so the caller may keep the old state (the agent
    does, until the batch's write) at no copying cost.
    """
    params = params or _DEFAULT_PARAMS
    if state and state.get("v") == 1:
        state = upgrade_v1(state)
    state = state if state and state.get("v") == STATE_VERSION else new_state()
    if not spec.enabled:
        return state, []
    plan = _plan_for(spec, params)
    out = _Out(frame)
    emit, trigger = out.emit, out.trigger
    at = frame.occurred_at
    t_us = to_us(at)
    t = t_us / 1_000_000
    ev_id = frame.event_id
    # this frame's evidence ref (see the module docstring); earlier frames' ids
    ev_ref = int(state["ev"]["n"])
    old_ids: dict[str, str] = state["ev"]["ids"]

    def evidence_ids(refs: list[int]) -> list[str]:
        return [ev_id if r == ev_ref else old_ids[str(r)] for r in refs]

    # ---- tracking
    if frame.skipped:
        tstate, tstep = tracker.hold(state["tracker"], t)
    else:
        dets = [(d.detection_id, d.label, (d.x1, d.y1, d.x2, d.y2)) for d in frame.detections]
        tstate, tstep = tracker.update(state["tracker"], frame.camera_id, t, dets,
                                       plan.tparams)
    ended = frozenset(e.track_id for e in tstep.ended) if tstep.ended else _NO_TRACKS
    obs = {o.track_id: o for o in tstep.observed}
    out.obs = obs
    # where each track stands, and whether it is confirmed (consumers sort by track id)
    positions: dict[str, tuple[Pt, bool]] = {
        tid: (bottom_centre(o.box), o.confirmed) for tid, o in obs.items()
    }
    inside: dict[str, set[str]] = {
        zid: {tid for tid, (p, _) in positions.items() if z.contains(p)}
        for zid, z in spec.zones.items()
    }

    # ---- zone entry / exit (+ perimeter)
    grace_us = plan.grace_us
    zones_state: dict[str, Any] = {}
    old_zones = state["zones"]
    for zid in spec.zones:
        zst = old_zones.get(zid, {})
        zin = inside[zid]
        if not zst and not zin:
            continue
        nz: dict[str, Any] = {}
        perimeter_rules = plan.perimeter[zid]
        for tid in sorted(zst.keys() | zin):
            pres = zst.get(tid)
            if pres is not None and (
                tid in ended or (tid not in zin and t_us - pres["last_in"] > grace_us)
            ):
                if pres["announced"]:
                    emit(ZoneExited, zid, tid, zone_id=zid, track_id=tid,
                         entered_at=from_us(pres["entered"]),
                         dwell_s=(pres["last_in"] - pres["entered"]) / 1_000_000)
                for rid in pres["fired"]:
                    emit(RuleCleared, rid, tid, zone_id=zid, rule_id=rid,
                         rule_type="perimeter",
                         reason=f"track {tid} left zone {zid}")
                pres = None
            if tid not in zin:
                if pres is not None:
                    nz[tid] = pres
                continue
            if pres is None:
                pres = {"entered": t_us, "last_in": t_us, "announced": False, "fired": []}
            else:
                pres = {**pres, "last_in": t_us}
            o = obs[tid]
            if o.confirmed and not pres["announced"]:
                pres["announced"] = True
                emit(ZoneEntered, zid, tid, zone_id=zid, track_id=tid, label=o.label)
                fired = []
                for r in perimeter_rules:
                    if o.label in r.classes and _armed(r, spec, at):
                        fired.append(r.rule_id)
                        trigger(r, tid, zone_id=zid,
                                rule_id=r.rule_id, rule_type="perimeter",
                                severity=r.severity, value=1.0, threshold=1.0,
                                track_ids=[tid], first_evidence_at=from_us(pres["entered"]),
                                last_evidence_at=at,
                                evidence_event_ids=[ev_id], frame_ref=frame.frame_ref)
                pres["fired"] = fired
            nz[tid] = pres
        if nz:
            zones_state[zid] = nz

    # ---- directed lines
    lines_state: dict[str, Any] = {}
    old_lines = state["lines"]
    for lid, ln in spec.lines.items():
        lst, crossings = lines.step(old_lines.get(lid, {}), t, positions, ln.a, ln.b,
                                    forget=ended)
        if lst:
            lines_state[lid] = lst
        for tid, direction in crossings:
            emit(LineCrossed, lid, tid, line_id=lid, track_id=tid, direction=direction)
            for r in plan.line_rules[lid]:
                if r.direction not in (None, direction) or obs[tid].label not in r.classes:
                    continue
                if not _armed(r, spec, at):
                    continue
                trigger(r, tid, zone_id=r.zone_id, rule_id=r.rule_id,
                        rule_type="line_crossing", severity=r.severity, value=1.0,
                        threshold=1.0, track_ids=[tid], first_evidence_at=at,
                        last_evidence_at=at, evidence_event_ids=[ev_id],
                        frame_ref=frame.frame_ref)

    # ---- loitering and crowd
    loiter_state: dict[str, Any] = {}
    crowd_state: dict[str, Any] = {}
    old_loiter, old_crowd = state["loiter"], state["crowd"]
    for r, rp, always in plan.area_rules:
        armed = always or _armed(r, spec, at)
        if r.rule_type == "loitering":
            assert r.zone_id is not None
            classes = r.classes
            zin_l = {}
            for tid in inside[r.zone_id]:
                o = obs[tid]
                if o.label in classes:
                    zin_l[tid] = (ev_ref, o.confirmed)
            lst, lstep = loitering.step(old_loiter.get(r.rule_id, {}), t_us, zin_l, armed,
                                        rp, ended)
            if lst:
                loiter_state[r.rule_id] = lst
            for tid, _p in lstep.cleared:
                emit(RuleCleared, r.rule_id, tid, zone_id=r.zone_id, rule_id=r.rule_id,
                     rule_type="loitering",
                     reason=f"track {tid} away from zone {r.zone_id} "
                            f"> {r.gap_tolerance_s:g}s")
            for tid, p in lstep.fired:
                trigger(r, tid, zone_id=r.zone_id, rule_id=r.rule_id,
                        rule_type="loitering", severity=r.severity,
                        value=(t_us - p["entered"]) / 1_000_000, threshold=r.dwell_s,
                        track_ids=[tid], first_evidence_at=from_us(p["entered"]),
                        last_evidence_at=at,
                        evidence_event_ids=evidence_ids(p["evidence"]),
                        frame_ref=frame.frame_ref)
        else:  # crowd
            classes = r.classes
            zin_c = inside[r.zone_id] if r.zone_id is not None else None
            members = sorted(
                tid for tid, o in obs.items()
                if o.label in classes and (zin_c is None or tid in zin_c)
            )
            cs = old_crowd.get(r.rule_id)
            cst, cstep = crowd.step(cs if cs is not None else crowd.new_state(), t_us,
                                    len(members), members, ev_ref, armed, rp)
            crowd_state[r.rule_id] = cst
            for w in cstep.cleared:
                emit(RuleCleared, r.rule_id, w["start"], zone_id=r.zone_id,
                     rule_id=r.rule_id, rule_type="crowd",
                     reason=f"at most {w['max']} people (< {r.clear_below}) "
                            f"for {r.window_s:g}s")
            for w in cstep.fired:
                trigger(r, w["start"], zone_id=r.zone_id,
                        rule_id=r.rule_id, rule_type="crowd", severity=r.severity,
                        value=float(w["min"]), threshold=float(r.min_people),
                        track_ids=list(w["tracks"]), first_evidence_at=from_us(w["first"]),
                        last_evidence_at=from_us(w["last"]),
                        evidence_event_ids=evidence_ids(w["evidence"]),
                        frame_ref=frame.frame_ref)

    # ---- ended tracks
    for e in sorted(tstep.ended, key=lambda e: e.track_id):
        if e.confirmed:
            emit(TrackSummary, e.track_id, track_id=e.track_id, label=e.label,
                 first_seen_at=from_us(round(e.first_seen * 1_000_000)),
                 last_seen_at=from_us(round(e.last_seen * 1_000_000)),
                 observations=e.observations)

    new = {"v": STATE_VERSION, "tracker": tstate, "zones": zones_state, "loiter": loiter_state,
           "crowd": crowd_state, "lines": lines_state,
           "ev": {"n": ev_ref + 1,
                  "ids": _live_evidence(loiter_state, crowd_state, old_ids, ev_ref, ev_id)}}
    return new, out.events
