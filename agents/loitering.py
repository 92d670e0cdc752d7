"""Loitering: a track's dwell in a zone, in event time, tolerant of short gaps.

State is a JSON-able dict ``{track_id: presence}`` per rule, kept inside the camera's
scene state (a plain Faust table, not a windowed one: windowed tables expire by wall
clock). A presence starts when the track is first seen inside and survives the track
being outside or unseen (occluded, missed by the detector) for up to `gap_tolerance_s`,
so an occluded loiterer is still one presence and fires one alert. Times are integer
microseconds since the epoch so that state round-trips through JSON exactly.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

US = 1_000_000


@dataclass(frozen=True)
class LoiterParams:
    dwell_s: float
    gap_tolerance_s: float
    evidence_cap: int = 20


@dataclass
class LoiterStep:
    fired: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    cleared: list[tuple[str, dict[str, Any]]] = field(default_factory=list)


def step(
    state: dict[str, Any],
    t_us: int,
    inside: Mapping[str, tuple[str | int, bool]],
    armed: bool,
    params: LoiterParams,
    ended: frozenset[str] = frozenset(),
) -> tuple[dict[str, Any], LoiterStep]:
    """Advance one rule's presences to event time `t_us`.

    `inside` maps track ids seen inside the zone in this frame to (evidence event id,
    confirmed). Only confirmed tracks fire, but a presence starts with the first sighting
    so that dwell counts from the real entry. A presence whose track has been away longer
    than the gap tolerance (or whose track `ended`) is closed, with a clear if it fired.
    Fires once per presence, at the first armed frame where dwell >= dwell_s.
    """
    gap_us = int(params.gap_tolerance_s * US)
    dwell_us = int(params.dwell_s * US)
    cap = params.evidence_cap
    out = LoiterStep()
    new: dict[str, Any] = {}
    # presences are never modified in place (the caller may keep the old state): a
    # presence seen again is a new dict, one away is passed on as it is
    for tid in sorted(state.keys() | inside.keys()):
        p = state.get(tid)
        if p is not None and (t_us - p["last_in"] > gap_us or tid in ended):
            if p["fired"]:
                out.cleared.append((tid, p))
            p = None
        seen = inside.get(tid)
        if seen is None:
            if p is not None:
                new[tid] = p
            continue
        evidence_id, confirmed = seen
        if p is None:
            p = {"entered": t_us, "last_in": t_us, "fired": False, "evidence": []}
        else:
            p = {**p, "last_in": t_us}
        if p["fired"]:
            new[tid] = p  # evidence matters only for the trigger: no longer collected
            continue
        evidence = p["evidence"]
        if evidence_id and (not evidence or evidence[-1] != evidence_id):
            p["evidence"] = [*evidence, evidence_id][-cap:]
        if armed and confirmed and t_us - p["entered"] >= dwell_us:
            p["fired"] = True
            out.fired.append((tid, p))
            new[tid] = dict(p, evidence=[])  # the trigger keeps `p`; the state need not
            continue
        new[tid] = p
    return new, out
