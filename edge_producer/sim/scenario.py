"""Scenario files for the synthetic scene: what is on screen, and what must come of it.

A scenario is a YAML file that describes a short piece of video (size, fps, duration, a
deterministic start time), the people in it (walkers, loiterers, groups, occlusions), the
site configuration that watches it (cameras, zones, lines, rules with the same fields as
`schemas.events.RuleConfigured`) and the alerts that configuration must raise. Because the
scene is generated from this file alone, the file is also its own ground truth: tests and
benchmarks compare the pipeline's output with `expected_alerts` and `truth.py`'s export.

Coordinates are normalised (0..1, origin top-left). An actor's position is its *foot
point* (bottom centre of the person), which is also the point zone rules test.
"""

from __future__ import annotations

import math
from datetime import datetime, timedelta
from pathlib import Path
from typing import Annotated, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from edge_producer.sim.vehicles import slots_of
from schemas.events import Direction, SceneRuleType, Severity
from vigil.errors import ConfigError
from vigil.yamlfile import load_yaml

SCENARIO_DIR = Path(__file__).resolve().parent.parent / "scenarios"

Point = tuple[Annotated[float, Field(ge=0.0, le=1.0)], Annotated[float, Field(ge=0.0, le=1.0)]]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def format_validation_error(exc: ValidationError, what: str) -> str:
    """Render pydantic errors as ``cameras[1].url: message`` lines, one per problem."""
    lines = []
    for err in exc.errors():
        path = ""
        for part in err["loc"]:
            path += f"[{part}]" if isinstance(part, int) else (f".{part}" if path else str(part))
        lines.append(f"{path or '(top level)'}: {err['msg']}")
    return f"invalid {what}: " + "; ".join(lines)


# --------------------------------------------------------------------------- scene


class Background(_Model):
    """A textured ground plane; `brightness` is the mean grey level (night scenes ~60)."""

    brightness: int = Field(150, ge=20, le=235)
    texture: float = Field(18.0, ge=0.0, le=60.0, description="std-dev of the texture")
    noise: float = Field(3.0, ge=0.0, le=30.0, description="per-frame sensor noise")
    tiles: bool = True


class _ActorBase(_Model):
    id: str = Field(min_length=1, pattern=r"^[A-Za-z0-9_.-]+$")
    height_px: int = Field(180, ge=120, le=300)
    speed: float = Field(0.08, gt=0.0, le=1.0, description="normalised units per second")
    start_s: float = Field(0.0, ge=0.0)


class Walker(_ActorBase):
    """Walks along `waypoints` at `speed`, then leaves the scene (disappears)."""

    kind: Literal["walker"]
    waypoints: list[Point] = Field(min_length=2)


class Loiterer(_ActorBase):
    """Walks from `enter` to `area` centre, lingers there for `stay_s`, leaves to `exit`."""

    kind: Literal["loiterer"]
    enter: Point
    area: Point
    radius: float = Field(0.04, ge=0.0, le=0.3, description="how far they wander")
    stay_s: float = Field(gt=0.0)
    exit: Point | None = None


class Group(_ActorBase):
    """`members` people walk in from `enter` points and gather side by side at `gather_at`
    (spaced so they do not overlap), stay `stay_s`, then leave to `exit`."""

    kind: Literal["group"]
    members: int = Field(ge=2, le=12)
    enter: list[Point] = Field(min_length=1, description="cycled over members")
    gather_at: Point
    spacing: float = Field(0.12, gt=0.0, le=0.5, description="between neighbours (x)")
    stay_s: float = Field(gt=0.0)
    exit: Point | None = None


class Vehicle(_Model):
    """A vehicle of class `cls` drives along `waypoints` at `speed`, parking `stops[i]`
    seconds at waypoint i, then leaves. Its position is the bottom centre of its box.
    Drawn in a saturated palette colour (`edge_producer.sim.vehicles`) that the scene's
    ONNX test detector recognises; `height_px` defaults per class."""

    kind: Literal["vehicle"]
    id: str = Field(min_length=1, pattern=r"^[A-Za-z0-9_.-]+$")
    cls: Literal["car", "bus", "truck", "motorcycle", "bicycle"]
    height_px: int | None = Field(None, ge=20, le=400)
    speed: float = Field(0.12, gt=0.0, le=2.0, description="normalised units per second")
    start_s: float = Field(0.0, ge=0.0)
    waypoints: list[Point] = Field(min_length=2)
    stops: dict[int, float] = Field(default_factory=dict,
                                    description="waypoint index -> seconds parked there")

    @model_validator(mode="after")
    def _stops(self) -> Vehicle:
        for i, s in self.stops.items():
            if not 0 <= i < len(self.waypoints) or s <= 0:
                raise ValueError(f"stops: {i}: {s} needs a waypoint index 0..."
                                 f"{len(self.waypoints) - 1} and a positive duration")
        return self


Actor = Annotated[Walker | Loiterer | Group | Vehicle, Field(discriminator="kind")]


class Occlusion(_Model):
    """`actor` (a person id; group members are ``<group>-<n>`` from 1) is hidden."""

    actor: str
    start_s: float = Field(ge=0.0)
    end_s: float = Field(gt=0.0)

    @model_validator(mode="after")
    def _order(self) -> Occlusion:
        if self.end_s <= self.start_s:
            raise ValueError("end_s must be after start_s")
        return self


# --------------------------------------------------------------------------- site


class ScheduleSpec(_Model):
    kind: Literal["always", "night", "custom"] = "always"
    start: str | None = Field(None, pattern=r"^\d{2}:\d{2}$")
    end: str | None = Field(None, pattern=r"^\d{2}:\d{2}$")


class CameraSpec(_Model):
    camera_id: str = Field(min_length=1)
    name: str = ""
    timezone: str | None = None


class ZoneSpec(_Model):
    zone_id: str = Field(min_length=1)
    camera_id: str | None = None
    name: str = ""
    kind: Literal["zone", "perimeter"] = "zone"
    polygon: list[Point] = Field(min_length=3)


class LineSpec(_Model):
    line_id: str = Field(min_length=1)
    camera_id: str | None = None
    name: str = ""
    a: Point
    b: Point


class RuleSpec(_Model):
    """Mirrors `schemas.events.RuleConfigured`; unused thresholds keep their defaults."""

    rule_id: str = Field(min_length=1)
    camera_id: str | None = None
    rule_type: SceneRuleType
    zone_id: str | None = None
    line_id: str | None = None
    severity: Severity = "warning"
    schedule: ScheduleSpec = ScheduleSpec()
    dwell_s: float = Field(300.0, gt=0)
    gap_tolerance_s: float = Field(10.0, ge=0)
    min_people: int = Field(5, ge=1)
    clear_below: int = Field(3, ge=0)
    window_s: float = Field(10.0, ge=0)
    direction: Direction | None = None
    cooldown_s: float = Field(300.0, ge=0)
    classes: list[str] = Field(default_factory=lambda: ["person"], min_length=1)


class SiteSpec(_Model):
    site_id: str = "sim-site"
    edge_id: str = "sim-edge"
    cameras: list[CameraSpec] = Field(default_factory=lambda: [CameraSpec(camera_id="cam-1")])
    zones: list[ZoneSpec] = Field(default_factory=list)
    lines: list[LineSpec] = Field(default_factory=list)
    rules: list[RuleSpec] = Field(default_factory=list)

    @model_validator(mode="after")
    def _refs(self) -> SiteSpec:
        zones = {z.zone_id for z in self.zones}
        lines = {ln.line_id for ln in self.lines}
        for r in self.rules:
            if r.rule_type in ("loitering", "crowd", "perimeter") and r.zone_id not in zones:
                raise ValueError(f"rule {r.rule_id}: zone_id {r.zone_id!r} is not a zone")
            if r.rule_type == "line_crossing" and r.line_id not in lines:
                raise ValueError(f"rule {r.rule_id}: line_id {r.line_id!r} is not a line")
        return self


class ExpectedAlert(_Model):
    """An alert the scene must raise: `at_s` seconds after start, give or take `tolerance_s`."""

    rule_id: str
    rule_type: SceneRuleType
    zone_id: str | None = None
    at_s: float = Field(ge=0)
    tolerance_s: float = Field(5.0, ge=0)
    actors: list[str] = Field(default_factory=list)


# --------------------------------------------------------------------------- scenario


class Scenario(_Model):
    name: str = Field(min_length=1)
    description: str = ""
    seed: int = 0
    width: int = Field(640, ge=160, le=3840)
    height: int = Field(480, ge=120, le=2160)
    fps: float = Field(2.0, gt=0, le=60)
    duration_s: float = Field(gt=0, le=3600)
    start: datetime = Field(description="event time of frame 0 (ISO 8601 with offset)")
    timezone: str = "UTC"
    background: Background = Background()
    actors: list[Actor] = Field(default_factory=list)
    occlusions: list[Occlusion] = Field(default_factory=list)
    site: SiteSpec = SiteSpec()
    expected_alerts: list[ExpectedAlert] = Field(default_factory=list)

    @field_validator("start")
    @classmethod
    def _aware(cls, v: datetime) -> datetime:
        if v.tzinfo is None:
            raise ValueError("must carry a UTC offset, e.g. 2026-01-05T23:10:00+00:00")
        return v

    @field_validator("timezone")
    @classmethod
    def _tz(cls, v: str) -> str:
        try:
            ZoneInfo(v)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"unknown time zone {v!r}") from exc
        return v

    @model_validator(mode="after")
    def _cross(self) -> Scenario:
        ids = [a.id for a in self.actors]
        dupes = sorted({i for i in ids if ids.count(i) > 1})
        if dupes:
            raise ValueError(f"duplicate actor ids: {dupes}")
        people = set(self.person_ids())
        for i, occ in enumerate(self.occlusions):
            if occ.actor not in people:
                raise ValueError(
                    f"occlusions[{i}].actor {occ.actor!r} is not a person (known: {sorted(people)})"
                )
        rules = {r.rule_id: r for r in self.site.rules}
        for i, exp in enumerate(self.expected_alerts):
            if exp.rule_id not in rules:
                raise ValueError(f"expected_alerts[{i}].rule_id {exp.rule_id!r} is not a rule")
        for a in self.actors:
            if a.height_px is not None and a.height_px >= self.height:
                raise ValueError(f"actor {a.id}: height_px {a.height_px} >= frame height")
        for cls in {a.cls for a in self.actors if isinstance(a, Vehicle)}:
            n = sum(1 for a in self.actors if isinstance(a, Vehicle) and a.cls == cls)
            if n > len(slots_of(cls)):
                raise ValueError(f"{n} vehicles of class {cls}: the palette (and the scene's "
                                 f"ONNX detector) tells {len(slots_of(cls))} apart")
        return self

    # ------------------------------------------------------------------ helpers

    def person_ids(self) -> list[str]:
        """Every individual on screen; a group of n contributes ``<id>-1 .. <id>-n``."""
        out: list[str] = []
        for a in self.actors:
            if isinstance(a, Vehicle):
                continue
            if isinstance(a, Group):
                out.extend(f"{a.id}-{k + 1}" for k in range(a.members))
            else:
                out.append(a.id)
        return out

    @property
    def frame_count(self) -> int:
        return math.floor(self.duration_s * self.fps + 1e-9)

    def time_of(self, index: int) -> float:
        """Seconds since start of frame `index` (exact multiples of 1/fps)."""
        return index / self.fps

    def occurred_at(self, t: float) -> datetime:
        return self.start + timedelta(seconds=t)

    @property
    def camera_id(self) -> str:
        return self.site.cameras[0].camera_id if self.site.cameras else "cam-1"


def parse_scenario(data: object, source: str = "scenario") -> Scenario:
    """Validate a parsed YAML document; ConfigError names every bad field."""
    try:
        return Scenario.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, source)) from None


def load_scenario(path: str | Path) -> Scenario:
    """Load a scenario by path, or by bare name from the shipped `scenarios/` folder."""
    p = resolve_scenario_path(path)
    return parse_scenario(load_yaml(p, "scenario"), str(p))


def resolve_scenario_path(path: str | Path) -> Path:
    """`sim://x.yaml`, a path, or a shipped scenario name (``loiterer``)."""
    s = str(path)
    if s.startswith("sim://"):
        s = s[len("sim://"):]
    p = Path(s)
    if p.exists():
        return p
    for cand in (SCENARIO_DIR / s, SCENARIO_DIR / f"{s}.yaml"):
        if cand.exists():
            return cand
    raise ConfigError(f"scenario {path} not found (nor in {SCENARIO_DIR})")


def shipped_scenarios() -> list[Path]:
    return sorted(SCENARIO_DIR.glob("*.yaml"))
