"""The site file: cameras, zones, lines, rules and notification routes, validated before
anything is published.

The YAML uses the field names of the config events (``camera_id``, ``zone_id``,
``rule_type``, ``dwell_s`` …), so the file, the `vigil.config` topic and the read models
speak one vocabulary. The same shape is accepted as the ``site:`` section of a synthetic
scenario (edge_producer/scenarios/*.yaml); there, zones, lines and rules may omit
``camera_id`` when the site has exactly one camera.

Validation is strict (``extra="forbid"``) and names the item: a bow-tie polygon, a
negative threshold or a rule pointing at an unknown camera/zone/line is rejected with a
message like ``rules[2] (gate-in): line_id 'gte' is not a line of camera 'cam-1'``. The
scene engine would silently ignore such a rule; catching it here is the point.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

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

_ID = r"^[A-Za-z0-9_.:-]+$"
Coord = tuple[float, float]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _check_coord(p: Coord) -> Coord:
    if not (0.0 <= p[0] <= 1.0 and 0.0 <= p[1] <= 1.0):
        raise ValueError(f"point {list(p)} is outside the normalised image [0, 1] x [0, 1]")
    return p


class CameraModel(_Model):
    camera_id: str = Field(min_length=1, pattern=_ID)
    name: str = ""
    site_id: str | None = None
    edge_id: str | None = None
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
    zone_id: str = Field(min_length=1, pattern=_ID)
    camera_id: str | None = None
    name: str = ""
    kind: Literal["zone", "perimeter"] = "zone"
    polygon: list[Coord] = Field(min_length=3)

    @field_validator("polygon")
    @classmethod
    def _polygon(cls, v: list[Coord]) -> list[Coord]:
        for p in v:
            _check_coord(p)
        if polygon_self_intersects(v):
            raise ValueError("polygon is self-intersecting (edges cross): its inside is undefined")
        if polygon_area(v) <= 1e-9:
            raise ValueError("polygon has no area (points are collinear)")
        return v


class LineModel(_Model):
    line_id: str = Field(min_length=1, pattern=_ID)
    camera_id: str | None = None
    name: str = ""
    a: Coord
    b: Coord

    @model_validator(mode="after")
    def _distinct(self) -> LineModel:
        _check_coord(self.a)
        _check_coord(self.b)
        if self.a == self.b:
            raise ValueError("a and b are the same point: a line needs a direction")
        return self


class ScheduleModel(_Model):
    kind: Literal["always", "night", "custom"] = "always"
    start: str | None = None
    end: str | None = None

    @model_validator(mode="after")
    def _custom(self) -> ScheduleModel:
        if self.kind == "custom":
            if self.start is None or self.end is None:
                raise ValueError("a custom schedule needs start and end (HH:MM)")
            parse_hhmm(self.start)
            parse_hhmm(self.end)
        return self


class RuleModel(_Model):
    rule_id: str = Field(min_length=1, pattern=_ID)
    camera_id: str | None = None
    rule_type: Literal["loitering", "crowd", "perimeter", "line_crossing"]
    zone_id: str | None = None
    line_id: str | None = None
    severity: Literal["info", "warning", "critical"] = "warning"
    enabled: bool = True
    schedule: ScheduleModel = ScheduleModel()
    classes: list[str] = Field(default_factory=lambda: ["person"], min_length=1)
    dwell_s: float = Field(300.0, gt=0)
    gap_tolerance_s: float = Field(10.0, ge=0)
    min_people: int = Field(5, ge=1)
    clear_below: int = Field(3, ge=0)
    window_s: float = Field(10.0, gt=0)
    direction: Literal["forward", "backward"] | None = None
    cooldown_s: float = Field(300.0, ge=0)
    escalation_s: float = Field(900.0, gt=0)
    max_escalation_level: int = Field(3, ge=0)
    auto_resolve: bool = False

    @model_validator(mode="after")
    def _shape(self) -> RuleModel:
        if self.rule_type in ("loitering", "perimeter") and not self.zone_id:
            raise ValueError(f"a {self.rule_type} rule needs zone_id")
        if self.rule_type == "line_crossing" and not self.line_id:
            raise ValueError("a line_crossing rule needs line_id")
        if self.rule_type != "line_crossing" and self.direction is not None:
            raise ValueError("direction only applies to line_crossing rules")
        if self.rule_type == "crowd" and self.clear_below > self.min_people:
            raise ValueError(
                f"clear_below ({self.clear_below}) must not exceed min_people "
                f"({self.min_people}): the crowd would clear and fire at once")
        return self


RULE_TYPES = ("loitering", "crowd", "perimeter", "line_crossing", "edge_offline",
              "stream_down", "inference_degraded")
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
        parse_hhmm(self.start)
        parse_hhmm(self.end)
        if self.timezone is not None:
            zone_info(self.timezone)
        return self


class RouteModel(_Model):
    """Which alert events reach which channels and recipients (docs/notifications.md).

    Every filter left empty matches anything; `levels` are escalation levels (0 = not
    escalated), so a route with ``levels: [2]`` is the level-2 (admin) route. `channels`
    are names from the notifier's channel configuration (which holds the secrets)."""

    route_id: str = Field(min_length=1, pattern=_ID)
    site_id: str | None = None
    cameras: list[str] = Field(default_factory=list)
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

    site_id: str = "default"
    edge_id: str = "edge-1"
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
        assert z.camera_id is not None
        out.append((f"zone/{z.zone_id}", ZoneConfigured.create(
            zone_id=z.zone_id, camera_id=z.camera_id, name=z.name or z.zone_id, kind=z.kind,
            polygon=[Point(x=x, y=y) for x, y in z.polygon], **common)))
    for ln in site.lines:
        assert ln.camera_id is not None
        out.append((f"line/{ln.line_id}", LineConfigured.create(
            line_id=ln.line_id, camera_id=ln.camera_id, name=ln.name or ln.line_id,
            a=Point(x=ln.a[0], y=ln.a[1]), b=Point(x=ln.b[0], y=ln.b[1]), **common)))
    for r in site.rules:
        fields = r.model_dump(exclude={"schedule"})
        out.append((f"rule/{r.rule_id}", RuleConfigured.create(
            schedule=Schedule(kind=r.schedule.kind, start=r.schedule.start, end=r.schedule.end),
            **fields, **common)))
    for rt in site.routes:
        out.append((f"route/{rt.route_id}", route_event(rt, common)))
    return out
