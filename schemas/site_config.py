"""The site configuration model: cameras, zones, lines, rules and notification routes,
validated before anything is published. The one model: `vigil config validate|apply`
reads site files with it, the API validates its request bodies with models derived from
it (api/config_routes.py) and builds its events with the same functions, so one input
gets one verdict everywhere (tests/integration/test_config_verdicts.py feeds generated
configurations to both paths).

The YAML uses the field names of the config events (``camera_id``, ``zone_id``,
``rule_type``, ``dwell_s`` …), so the file, the `vigil.config` topic and the read models
speak one vocabulary. The same shape is accepted as the ``site:`` section of a synthetic
scenario (edge_producer/scenarios/*.yaml); there, zones, lines and rules may omit
``camera_id`` when the site has exactly one camera.

Validation is strict (``extra="forbid"``) and names the item: a bow-tie polygon, a
negative threshold or a rule pointing at an unknown camera/zone/line is rejected with a
message like ``rules[2] (gate-in): line_id 'gte' is not a line of camera 'cam-1'``. The
scene engine would silently ignore such a rule; catching it here is the point.

Where the file and the API used to disagree, the stricter bound that is still correct
won; each field says why.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from schemas.events import (
    CameraConfigured,
    Event,
    LineConfigured,
    Point,
    RouteConfigured,
    RuleConfigured,
    Schedule,
    ZoneConfigured,
)
from schemas.geometry import polygon_area, polygon_self_intersects
from schemas.schedule import parse_hhmm, zone_info
from vigil.errors import ConfigError
from vigil.yamlfile import load_yaml

#: Entity ids (cameras, zones, lines, rules, routes, sites, edges). Starts with a letter or
#: digit and is at most 128 characters: the API's rule, the stricter one. An id ends up in
#: a compacted topic key (``zone/<id>``), URL paths, metric labels and file names, where
#: a leading "." or "-" or an unbounded length makes trouble; "/" would break the key.
ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$"
EntityId = Annotated[str, Field(pattern=ID_PATTERN)]
#: Display names: optional (the id stands in), at most 200 characters (the API's bound:
#: a name is shown in the console and in notifications, not a document).
Name = Annotated[str, Field(max_length=200)]
#: A normalised image coordinate: 0..1, (0, 0) top-left.
Unit = Annotated[float, Field(ge=0.0, le=1.0)]
Coord = tuple[Unit, Unit]
#: 24 h "HH:MM" with two digits each, as the API required; the file's parser also took
#: "7:5" or " 07:05", which reads as a typo more often than as a time.
HHMM_PATTERN = r"^([01]\d|2[0-3]):[0-5]\d$"
HHMM = Annotated[str, Field(pattern=HHMM_PATTERN)]
#: A zone has at most this many vertices (the API's bound): every vertex costs the scene
#: engine time on every frame, and hand-drawn zones need a few dozen at most.
MAX_VERTICES = 256
#: Below this area (in normalised units: a few thousandths of a pixel on a 1080p frame)
#: a polygon is degenerate. The file used 1e-9, the API 1e-12; nobody stands in either.
MIN_AREA = 1e-9
#: Two line end points closer than this are one point (the API's check; the file only
#: rejected exact equality, which let a line of length 1e-15 through: it has no sides).
MIN_LENGTH = 1e-9
ClassName = Annotated[str, Field(min_length=1, max_length=64)]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class PointModel(_Model):
    """A point as the API's JSON carries it, ``{"x": .., "y": ..}``; the file writes
    ``[x, y]``. Same bounds (`Unit`)."""

    x: Unit
    y: Unit


def xy(p: Coord | PointModel | Sequence[float]) -> tuple[float, float]:
    if isinstance(p, PointModel):
        return (p.x, p.y)
    return (float(p[0]), float(p[1]))


def check_polygon(coords: Sequence[tuple[float, float]]) -> None:
    """A zone's polygon must have an inside: no repeated vertex, no crossing edges, an
    area. Raises ValueError saying which."""
    if len(set(coords)) != len(coords):
        raise ValueError("polygon has repeated vertices")
    if polygon_self_intersects(coords):
        raise ValueError("polygon is self-intersecting (edges cross): its inside is undefined")
    if polygon_area(coords) <= MIN_AREA:
        raise ValueError("polygon has no area (points are collinear)")


def check_hhmm(value: str) -> str:
    if not re.match(HHMM_PATTERN, value):
        raise ValueError(f"not a HH:MM time: {value!r}")
    parse_hhmm(value)
    return value


class CameraModel(_Model):
    camera_id: EntityId
    name: Name = ""
    site_id: EntityId | None = None
    edge_id: EntityId | None = None
    timezone: str = "UTC"
    enabled: bool = True

    @field_validator("camera_id", "edge_id")
    @classmethod
    def _not_reserved(cls, v: str | None) -> str | None:
        from schemas.synthetic import RESERVED_PREFIX

        if v is not None and v.startswith(RESERVED_PREFIX):
            raise ValueError(f"ids starting with {RESERVED_PREFIX!r} are reserved for the "
                             "synthetic probe")
        return v

    @field_validator("timezone")
    @classmethod
    def _tz(cls, v: str) -> str:
        zone_info(v)  # raises ValueError naming the zone
        return v


class ZoneModel(_Model):
    zone_id: EntityId
    camera_id: EntityId | None = None
    name: Name = ""
    kind: Literal["zone", "perimeter"] = "zone"
    polygon: list[Coord] = Field(min_length=3, max_length=MAX_VERTICES)

    @field_validator("polygon")
    @classmethod
    def _polygon(cls, v: list[Any]) -> list[Any]:
        check_polygon([xy(p) for p in v])
        return v


class LineModel(_Model):
    """A directed line a->b; "forward" is crossing from its left side to its right side
    (agents/lines.py)."""

    line_id: EntityId
    camera_id: EntityId | None = None
    name: Name = ""
    a: Coord
    b: Coord

    @field_validator("b")
    @classmethod
    def _distinct(cls, b: Any, info: Any) -> Any:
        # Checked on `b` so the error names a field; a zero-length line has no sides, so
        # nothing could ever cross it.
        a = info.data.get("a")
        if a is not None and math.dist(xy(a), xy(b)) < MIN_LENGTH:
            raise ValueError("a and b are the same point: a line needs a direction")
        return b


class ScheduleModel(_Model):
    kind: Literal["always", "night", "custom"] = "always"
    start: HHMM | None = None
    end: HHMM | None = None

    @model_validator(mode="after")
    def _custom(self) -> ScheduleModel:
        if self.kind == "custom" and (self.start is None or self.end is None):
            raise ValueError("a custom schedule needs start and end (HH:MM)")
        return self


class RuleModel(_Model):
    """A scene rule. Bounds, where the file and the API differed:

    - `dwell_s` and `window_s` > 0 (the file's): a zero dwell fires on the first frame a
      person is seen, a zero window counts nobody; the API's ``>= 0`` let both through.
      At most a day (the API's): longer is a typo, and the state kept grows with it.
    - `min_people` >= 1 (the file's): a crowd of zero is every empty frame.
    - `max_escalation_level` 0..10: escalation levels are 0..10 everywhere else (routes'
      `levels`, VIGIL_ALERTS_MAX_LEVEL); the API's 100 named levels no route can match.
    - `escalation_s` > 0 (the file's): an escalation due at once re-escalates on every
      tick; at most a week (the API's).
    - a crowd rule may omit `zone_id` (the file's): it then counts the whole frame, which
      the scene engine supports; the API's "needs zone_id" refused a working rule.
    - `direction` only on line-crossing rules, `zone_id` not on them and `line_id` only on
      them: a field the engine ignores is a mistake to name, not to publish.
    - `classes`: 1..20 names of 1..64 characters (the API's).

    The alert policy fields (`cooldown_s`, `escalation_s`, `max_escalation_level`,
    `auto_resolve`) are optional: unset, the site-wide policy (VIGIL_ALERTS_*) applies;
    set, they win over it for this rule's alerts.
    """

    rule_id: EntityId
    camera_id: EntityId | None = None
    rule_type: Literal["loitering", "crowd", "perimeter", "line_crossing"]
    # validated when absent too: a rule type that needs one says so (see below)
    zone_id: EntityId | None = Field(None, validate_default=True)
    line_id: EntityId | None = Field(None, validate_default=True)
    severity: Literal["info", "warning", "critical"] = "warning"
    enabled: bool = True
    schedule: ScheduleModel = ScheduleModel()
    classes: list[ClassName] = Field(default_factory=lambda: ["person"], min_length=1,
                                     max_length=20)
    dwell_s: float = Field(300.0, gt=0, le=86_400)
    gap_tolerance_s: float = Field(10.0, ge=0, le=3600)
    min_people: int = Field(5, ge=1, le=10_000)
    clear_below: int = Field(3, ge=0, le=10_000)
    window_s: float = Field(10.0, gt=0, le=86_400)
    direction: Literal["forward", "backward"] | None = None
    cooldown_s: float | None = Field(None, ge=0, le=86_400)
    escalation_s: float | None = Field(None, gt=0, le=604_800)
    max_escalation_level: int | None = Field(None, ge=0, le=10)
    auto_resolve: bool | None = None

    # One field validator per check (not one model validator), so an error names its
    # field: `rules[2] (gate).line_id: ...` in a site file, `body.line_id` in the API's
    # 422, which the console's editor shows next to that field.
    @field_validator("zone_id")
    @classmethod
    def _zone_target(cls, v: str | None, info: ValidationInfo) -> str | None:
        kind = info.data.get("rule_type")
        if kind in ("loitering", "perimeter") and not v:
            raise ValueError(f"a {kind} rule needs zone_id")
        if kind == "line_crossing" and v is not None:
            raise ValueError("zone_id does not apply to line_crossing rules")
        return v

    @field_validator("line_id")
    @classmethod
    def _line_target(cls, v: str | None, info: ValidationInfo) -> str | None:
        kind = info.data.get("rule_type")
        if kind == "line_crossing" and not v:
            raise ValueError("a line_crossing rule needs line_id")
        if kind is not None and kind != "line_crossing" and v is not None:
            raise ValueError(f"line_id only applies to line_crossing rules, not {kind}")
        return v

    @field_validator("clear_below")
    @classmethod
    def _hysteresis(cls, v: int, info: ValidationInfo) -> int:
        people = info.data.get("min_people")
        if info.data.get("rule_type") == "crowd" and people is not None and v > people:
            raise ValueError(f"clear_below ({v}) must not exceed min_people ({people}): "
                             "the crowd would clear and fire at once")
        return v

    @field_validator("direction")
    @classmethod
    def _direction(cls, v: str | None, info: ValidationInfo) -> str | None:
        kind = info.data.get("rule_type")
        if kind is not None and kind != "line_crossing" and v is not None:
            raise ValueError("direction only applies to line_crossing rules")
        return v


#: rule types evaluated on the scene: their hits get still evidence (docs/evidence.md)
SCENE_RULE_TYPES = ("loitering", "crowd", "perimeter", "line_crossing")
RULE_TYPES = (*SCENE_RULE_TYPES, "edge_offline", "stream_down", "inference_degraded")
ALERT_EVENT_TYPES = ("AlertRaised", "AlertRepeated", "AlertEscalated", "AlertAcknowledged",
                     "AlertResolved")


class QuietHoursModel(_Model):
    """Local HH:MM window (may wrap midnight); critical alerts are sent regardless."""

    start: str
    end: str
    #: the zone the window is read in; default: the alert's camera's time zone
    timezone: str | None = None

    @model_validator(mode="after")
    def _times(self) -> QuietHoursModel:
        check_hhmm(self.start)
        check_hhmm(self.end)
        if self.timezone is not None:
            zone_info(self.timezone)
        return self


class RouteModel(_Model):
    """Which alert events reach which channels and recipients (docs/notifications.md).

    Every filter left empty matches anything; `levels` are escalation levels (0 = not
    escalated), so a route with ``levels: [2]`` is the level-2 (admin) route. `channels`
    are names from the notifier's channel configuration (which holds the secrets)."""

    route_id: EntityId
    site_id: EntityId | None = None
    cameras: list[EntityId] = Field(default_factory=list)
    rule_types: list[Literal[RULE_TYPES]] = Field(default_factory=list)  # type: ignore[valid-type]
    severities: list[Literal["info", "warning", "critical"]] = Field(default_factory=list)
    event_types: list[Literal[ALERT_EVENT_TYPES]] = Field(  # type: ignore[valid-type]
        default_factory=list)
    levels: list[int] = Field(default_factory=list)
    channels: list[str] = Field(min_length=1)
    recipients: list[str] = Field(default_factory=list)
    quiet_hours: QuietHoursModel | None = None
    enabled: bool = True

    @field_validator("levels")
    @classmethod
    def _levels(cls, v: list[int]) -> list[int]:
        if any(lv < 0 or lv > 10 for lv in v):
            raise ValueError("escalation levels are 0 (not escalated) to 10")
        return v

    @field_validator("channels")
    @classmethod
    def _channels(cls, v: list[str]) -> list[str]:
        for ch in v:
            if not ch or not all(c.isalnum() or c in "_.:-" for c in ch):
                raise ValueError(f"channel {ch!r} is not a channel name")
        return v

    @field_validator("recipients")
    @classmethod
    def _recipients(cls, v: list[str]) -> list[str]:
        if any(not r.strip() for r in v):
            raise ValueError("a recipient must not be empty")
        return v


def route_event(r: RouteModel, common: dict[str, Any]) -> RouteConfigured:
    q = r.quiet_hours
    return RouteConfigured.create(
        route_id=r.route_id, site_id=r.site_id, cameras=list(r.cameras),
        rule_types=list(r.rule_types), severities=list(r.severities),
        event_types=list(r.event_types), levels=list(r.levels), channels=list(r.channels),
        recipients=list(r.recipients), quiet_start=q.start if q else None,
        quiet_end=q.end if q else None, timezone=q.timezone if q else None,
        enabled=r.enabled, **common)


class SiteConfig(_Model):
    """A whole site; after validation every zone/line/rule has its camera_id filled in."""

    site_id: EntityId = "default"
    edge_id: EntityId = "edge-1"
    cameras: list[CameraModel] = Field(min_length=1)
    zones: list[ZoneModel] = Field(default_factory=list)
    lines: list[LineModel] = Field(default_factory=list)
    rules: list[RuleModel] = Field(default_factory=list)
    routes: list[RouteModel] = Field(default_factory=list)

    @model_validator(mode="after")
    def _references(self) -> SiteConfig:
        cams = [c.camera_id for c in self.cameras]
        _unique("cameras", "camera_id", cams)
        _unique("zones", "zone_id", [z.zone_id for z in self.zones])
        _unique("lines", "line_id", [ln.line_id for ln in self.lines])
        _unique("rules", "rule_id", [r.rule_id for r in self.rules])
        _unique("routes", "route_id", [r.route_id for r in self.routes])
        for i, rt in enumerate(self.routes):
            unknown = sorted(set(rt.cameras) - set(cams))
            if unknown:
                raise ValueError(f"routes[{i}] ({rt.route_id}): unknown cameras {unknown}; "
                                 f"cameras are {cams}")
        only = cams[0] if len(cams) == 1 else None

        def camera_of(section: str, i: int, item_id: str, cam: str | None) -> str:
            if cam is None:
                if only is None:
                    raise ValueError(f"{section}[{i}] ({item_id}): camera_id is required "
                                     f"when the site has several cameras")
                return only
            if cam not in cams:
                raise ValueError(f"{section}[{i}] ({item_id}): unknown camera_id {cam!r}; "
                                 f"cameras are {cams}")
            return cam

        zones = [z.model_copy(update={"camera_id": camera_of("zones", i, z.zone_id, z.camera_id)})
                 for i, z in enumerate(self.zones)]
        lines = [ln.model_copy(update={"camera_id": camera_of("lines", i, ln.line_id,
                                                               ln.camera_id)})
                 for i, ln in enumerate(self.lines)]
        zone_cam = {z.zone_id: z.camera_id for z in zones}
        line_cam = {ln.line_id: ln.camera_id for ln in lines}
        rules = []
        for i, r in enumerate(self.rules):
            where = f"rules[{i}] ({r.rule_id})"
            if r.zone_id is not None and r.zone_id not in zone_cam:
                raise ValueError(f"{where}: unknown zone_id {r.zone_id!r}; zones are "
                                 f"{sorted(zone_cam)}")
            if r.line_id is not None and r.line_id not in line_cam:
                raise ValueError(f"{where}: unknown line_id {r.line_id!r}; lines are "
                                 f"{sorted(line_cam)}")
            cam = r.camera_id
            if cam is None and r.zone_id in zone_cam:
                cam = zone_cam[r.zone_id]
            elif cam is None and r.line_id in line_cam:
                cam = line_cam[r.line_id]
            cam = camera_of("rules", i, r.rule_id, cam)
            if r.zone_id is not None and zone_cam.get(r.zone_id) != cam:
                raise ValueError(f"{where}: zone_id {r.zone_id!r} is not a zone of camera "
                                 f"{cam!r}")
            if r.line_id is not None and line_cam.get(r.line_id) != cam:
                raise ValueError(f"{where}: line_id {r.line_id!r} is not a line of camera "
                                 f"{cam!r}")
            rules.append(r.model_copy(update={"camera_id": cam}))
        object.__setattr__(self, "zones", zones)
        object.__setattr__(self, "lines", lines)
        object.__setattr__(self, "rules", rules)
        return self


def _unique(section: str, field: str, ids: list[str]) -> None:
    dupes = sorted({i for i in ids if ids.count(i) > 1})
    if dupes:
        raise ValueError(f"{section}: duplicate {field} {dupes}")


def _describe(err: dict[str, Any], data: Any) -> str:
    """``rules[2] (gate-in).dwell_s: ...`` — the position and the id a person searches for."""
    loc = list(err["loc"])
    parts: list[str] = []
    node = data
    i = 0
    while i < len(loc):
        key = loc[i]
        if isinstance(key, int):
            label = f"[{key}]"
            try:
                node = node[key]
                item_id = next((node[k] for k in ("rule_id", "zone_id", "line_id", "camera_id",
                                                  "route_id")
                                if isinstance(node, dict) and k in node), None)
            except (IndexError, KeyError, TypeError):
                item_id = None
            if item_id is not None and i == 1:
                label += f" ({item_id})"
            parts.append(label)
        else:
            parts.append(("." if parts else "") + str(key))
            try:
                node = node[key] if isinstance(node, dict) else None
            except (KeyError, TypeError):
                node = None
        i += 1
    where = "".join(parts)
    msg = str(err["msg"]).removeprefix("Value error, ")
    return f"{where}: {msg}" if where else msg


def parse_site(data: Any, source: str = "site config") -> SiteConfig:
    """Validate a site document (or a scenario with a ``site:`` section)."""
    if isinstance(data, dict) and "site" in data and "cameras" not in data:
        data = data["site"]
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: expected a mapping with cameras, zones, lines, rules")
    try:
        return SiteConfig.model_validate(data)
    except ValidationError as exc:
        problems = "\n  ".join(_describe(e, data) for e in exc.errors())  # type: ignore[arg-type]
        raise ConfigError(f"{source} is invalid:\n  {problems}") from None


def load_site(path: str | Path) -> SiteConfig:
    return parse_site(load_yaml(path, "site config"), source=str(path))


def zone_event(z: ZoneModel, common: dict[str, Any]) -> ZoneConfigured:
    assert z.camera_id is not None
    return ZoneConfigured.create(
        zone_id=z.zone_id, camera_id=z.camera_id, name=z.name or z.zone_id, kind=z.kind,
        polygon=[Point(x=x, y=y) for x, y in (xy(p) for p in z.polygon)], **common)


def line_event(ln: LineModel, common: dict[str, Any]) -> LineConfigured:
    assert ln.camera_id is not None
    (ax, ay), (bx, by) = xy(ln.a), xy(ln.b)
    return LineConfigured.create(
        line_id=ln.line_id, camera_id=ln.camera_id, name=ln.name or ln.line_id,
        a=Point(x=ax, y=ay), b=Point(x=bx, y=by), **common)


def rule_event(r: RuleModel, common: dict[str, Any]) -> RuleConfigured:
    assert r.camera_id is not None
    fields = r.model_dump(exclude={"schedule", "classes"})
    return RuleConfigured.create(
        schedule=Schedule(kind=r.schedule.kind, start=r.schedule.start, end=r.schedule.end),
        classes=list(r.classes), **fields, **common)


def config_events(
    site: SiteConfig, producer: str = "vigil-config/1", correlation_id: str | None = None
) -> list[tuple[str, Event]]:
    """The desired state of the config topic: [(key, event)], keys "camera/ID" etc."""
    common: dict[str, Any] = {"producer": producer, "correlation_id": correlation_id}
    out: list[tuple[str, Event]] = []
    for c in site.cameras:
        out.append((f"camera/{c.camera_id}", CameraConfigured.create(
            camera_id=c.camera_id, site_id=c.site_id or site.site_id,
            edge_id=c.edge_id or site.edge_id, name=c.name or c.camera_id,
            timezone=c.timezone, enabled=c.enabled, **common)))
    for z in site.zones:
        out.append((f"zone/{z.zone_id}", zone_event(z, common)))
    for ln in site.lines:
        out.append((f"line/{ln.line_id}", line_event(ln, common)))
    for r in site.rules:
        out.append((f"rule/{r.rule_id}", rule_event(r, common)))
    for rt in site.routes:
        out.append((f"route/{rt.route_id}", route_event(rt, common)))
    return out
