"""Zones, lines, rules and notification routes: validated here, then published as config
events on the compacted ``vigil.config`` topic (key ``zone/ID`` / ``line/ID`` / ``rule/ID``
/ ``route/ID``), where every agent reads them.

The API does not write the read model: the projector folds the published event like any
other, so the zones table, the scene agent and a replay all agree. Validation happens
before publishing, because a bad polygon on a compacted topic would live forever.
"""

from __future__ import annotations

import math
from typing import Any, Literal

import sqlalchemy as sa
from pydantic import BaseModel, Field, ValidationInfo, field_validator, model_validator
from starlette.requests import Request
from starlette.responses import Response

from api.auth import principal_of
from api.cameras import LineOut, RuleOut, ZoneOut, visible_camera
from api.common import check_id, json_response, site_filter
from api.deps import deps_of
from api.errors import ApiError
from api.routing import Endpoint
from schemas.events import (
    EntityDeleted,
    LineConfigured,
    Point,
    RuleConfigured,
    Schedule,
    ZoneConfigured,
)
from schemas.geometry import polygon_area, polygon_self_intersects
from schemas.site_config import RouteModel, route_event
from schemas.tables import cameras, lines, rules, zones
from schemas.topics import topic_name

PRODUCER = "vigil-api"
ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$"


class PointIn(BaseModel):
    x: float = Field(..., ge=0, le=1)
    y: float = Field(..., ge=0, le=1)


class ZoneIn(BaseModel):
    camera_id: str = Field(..., min_length=1, max_length=200)
    name: str = Field(..., min_length=1, max_length=200)
    kind: Literal["zone", "perimeter"] = "zone"
    polygon: list[PointIn] = Field(..., min_length=3, max_length=256)

    @model_validator(mode="after")
    def _simple(self) -> ZoneIn:
        pts = self.polygon
        if len({(p.x, p.y) for p in pts}) != len(pts):
            raise ValueError("polygon has repeated vertices")
        coords = [(p.x, p.y) for p in pts]
        if polygon_self_intersects(coords):
            raise ValueError("polygon is self-intersecting")
        if polygon_area(coords) < 1e-12:
            raise ValueError("polygon has no area")
        return self


class LineIn(BaseModel):
    """A directed line a->b in normalised image coordinates; "forward" is crossing from
    its left side to its right side (agents/lines.py)."""

    camera_id: str = Field(..., min_length=1, max_length=200)
    name: str = Field(..., min_length=1, max_length=200)
    a: PointIn
    b: PointIn

    @field_validator("b")
    @classmethod
    def _not_degenerate(cls, b: PointIn, info: ValidationInfo) -> PointIn:
        # Checked on `b` so the 422 names the field; a zero-length line has no sides,
        # so nothing could ever cross it.
        a = info.data.get("a")
        if isinstance(a, PointIn) and math.dist((a.x, a.y), (b.x, b.y)) < 1e-9:
            raise ValueError("degenerate line: a and b are the same point")
        return b


class ScheduleIn(BaseModel):
    kind: Literal["always", "night", "custom"] = "always"
    start: str | None = Field(None, pattern=r"^([01]\d|2[0-3]):[0-5]\d$")
    end: str | None = Field(None, pattern=r"^([01]\d|2[0-3]):[0-5]\d$")

    @model_validator(mode="after")
    def _custom(self) -> ScheduleIn:
        if self.kind == "custom" and (self.start is None or self.end is None):
            raise ValueError("a custom schedule needs start and end (HH:MM)")
        return self


class RuleIn(BaseModel):
    camera_id: str = Field(..., min_length=1, max_length=200)
    rule_type: Literal["loitering", "crowd", "perimeter", "line_crossing"]
    zone_id: str | None = Field(None, max_length=200)
    line_id: str | None = Field(None, max_length=200)
    severity: Literal["info", "warning", "critical"] = "warning"
    enabled: bool = True
    schedule: ScheduleIn = Field(default_factory=ScheduleIn)
    classes: list[str] = Field(default_factory=lambda: ["person"], min_length=1, max_length=20)
    dwell_s: float = Field(300.0, ge=0, le=86_400)
    gap_tolerance_s: float = Field(10.0, ge=0, le=3600)
    min_people: int = Field(5, ge=0, le=10_000)
    clear_below: int = Field(3, ge=0, le=10_000)
    window_s: float = Field(10.0, ge=0, le=86_400)
    direction: Literal["forward", "backward"] | None = None
    cooldown_s: float = Field(300.0, ge=0, le=86_400)
    escalation_s: float = Field(900.0, ge=0, le=604_800)
    max_escalation_level: int = Field(3, ge=0, le=100)
    auto_resolve: bool = False

    @field_validator("classes")
    @classmethod
    def _classes(cls, v: list[str]) -> list[str]:
        if any(not c or len(c) > 64 for c in v):
            raise ValueError("class names are 1-64 characters")
        return v

    @model_validator(mode="after")
    def _target(self) -> RuleIn:
        if self.rule_type == "line_crossing":
            if not self.line_id:
                raise ValueError("a line_crossing rule needs line_id")
        elif not self.zone_id:
            raise ValueError(f"a {self.rule_type} rule needs zone_id")
        if self.rule_type == "crowd" and self.clear_below > self.min_people:
            raise ValueError("clear_below must not exceed min_people (hysteresis)")
        return self


class Published(BaseModel):
    event_id: str
    key: str
    topic: str


class ZoneList(BaseModel):
    items: list[ZoneOut]


class RuleList(BaseModel):
    items: list[RuleOut]


class LineList(BaseModel):
    items: list[LineOut]


class ConfigQuery(BaseModel):
    camera: str | None = Field(None, max_length=200)


def _check_entity_id(value: str, what: str) -> str:
    import re

    if not re.match(ID_PATTERN, value):
        raise ApiError(422, f"invalid {what} id", details={
            "errors": [{"loc": ["path", f"{what}_id"], "msg": f"must match {ID_PATTERN}"}]})
    return value


async def _known_camera(request: Request, camera_id: str) -> None:
    """The camera must exist and be in the key's sites; unknown is a 422 with details."""
    try:
        await visible_camera(request, camera_id)
    except ApiError:
        raise ApiError(422, "unknown camera", details={
            "errors": [{"loc": ["body", "camera_id"], "msg": "no such camera"}]}) from None


async def _publish(request: Request, key: str, event: Any) -> Response:
    deps = deps_of(request)
    await deps.publisher.publish("config", key, event)
    deps.metrics.config_events.labels(event.event_type).inc()
    return json_response(Published(event_id=event.event_id, key=key,
                                   topic=topic_name("config")), status=202)


async def put_zone(request: Request, body: ZoneIn) -> Response:
    zone_id = _check_entity_id(request.path_params["zone_id"], "zone")
    await _known_camera(request, body.camera_id)
    event = ZoneConfigured.create(
        producer=PRODUCER, zone_id=zone_id, camera_id=body.camera_id, name=body.name,
        kind=body.kind, polygon=[Point(x=p.x, y=p.y) for p in body.polygon],
    )
    return await _publish(request, f"zone/{zone_id}", event)


async def put_line(request: Request, body: LineIn) -> Response:
    line_id = _check_entity_id(request.path_params["line_id"], "line")
    await _known_camera(request, body.camera_id)
    event = LineConfigured.create(
        producer=PRODUCER, line_id=line_id, camera_id=body.camera_id, name=body.name,
        a=Point(x=body.a.x, y=body.a.y), b=Point(x=body.b.x, y=body.b.y),
    )
    return await _publish(request, f"line/{line_id}", event)


async def put_rule(request: Request, body: RuleIn) -> Response:
    rule_id = _check_entity_id(request.path_params["rule_id"], "rule")
    await _known_camera(request, body.camera_id)
    target_tbl, target_col, target = (
        (lines, lines.c.line_id, body.line_id) if body.rule_type == "line_crossing"
        else (zones, zones.c.zone_id, body.zone_id))
    stmt = sa.select(sa.literal(1)).select_from(target_tbl).where(
        target_col == target, target_tbl.c.camera_id == body.camera_id,
        target_tbl.c.deleted_at.is_(None))
    found = await deps_of(request).read(lambda conn: conn.execute(stmt).first())
    if found is None:
        field = "line_id" if body.rule_type == "line_crossing" else "zone_id"
        raise ApiError(422, f"unknown {field} on this camera", details={
            "errors": [{"loc": ["body", field], "msg": "not configured on camera"}]})
    event = RuleConfigured.create(
        producer=PRODUCER, rule_id=rule_id, camera_id=body.camera_id,
        rule_type=body.rule_type, zone_id=body.zone_id, line_id=body.line_id,
        severity=body.severity, enabled=body.enabled,
        schedule=Schedule(kind=body.schedule.kind, start=body.schedule.start,
                          end=body.schedule.end),
        classes=list(body.classes), dwell_s=body.dwell_s,
        gap_tolerance_s=body.gap_tolerance_s, min_people=body.min_people,
        clear_below=body.clear_below, window_s=body.window_s, direction=body.direction,
        cooldown_s=body.cooldown_s, escalation_s=body.escalation_s,
        max_escalation_level=body.max_escalation_level, auto_resolve=body.auto_resolve,
    )
    return await _publish(request, f"rule/{rule_id}", event)


async def _delete(request: Request, kind: str, table: sa.Table, id_col: sa.Column[Any]
                  ) -> Response:
    entity_id = check_id(request.path_params[f"{kind}_id"], kind)
    principal = principal_of(request)
    stmt = (sa.select(table.c.camera_id).select_from(
        table.join(cameras, cameras.c.camera_id == table.c.camera_id))
        .where(id_col == entity_id, table.c.deleted_at.is_(None),
               site_filter(principal, cameras.c.site_id)))
    found = await deps_of(request).read(lambda conn: conn.execute(stmt).first())
    if found is None:
        raise ApiError(404, f"{kind} not found", details={f"{kind}_id": entity_id})
    key = f"{kind}/{entity_id}"
    event = EntityDeleted.create(producer=PRODUCER, entity_kind=kind, entity_id=entity_id)
    response = await _publish(request, key, event)
    # The tombstone lets compaction drop the entity; EntityDeleted keeps the history.
    deps = deps_of(request)
    deps.publisher.producer.send_raw(topic_name("config"), key, None)
    return response


async def delete_zone(request: Request) -> Response:
    return await _delete(request, "zone", zones, zones.c.zone_id)


async def delete_line(request: Request) -> Response:
    return await _delete(request, "line", lines, lines.c.line_id)


async def delete_rule(request: Request) -> Response:
    return await _delete(request, "rule", rules, rules.c.rule_id)


class RouteIn(RouteModel):
    """A notification route (schemas/site_config.py RouteModel); its id is in the path."""

    route_id: str | None = None  # type: ignore[assignment]


def _routes_need_every_site(request: Request) -> None:
    """Routes are not site-scoped resources: one without `site_id` reaches every site's
    alerts, and with no read model of routes the API cannot tell whose route an id is,
    so a site-scoped admin could send another site's alerts to itself, or replace or
    delete that site's routes. Only a key for every site manages them."""
    principal = principal_of(request)
    if principal.sites is not None:
        raise ApiError(403, "notification routes span sites; managing them needs a key "
                            "for every site", details={"sites": sorted(principal.sites)})


async def put_route(request: Request, body: RouteIn) -> Response:
    _routes_need_every_site(request)
    route_id = _check_entity_id(request.path_params["route_id"], "route")
    if body.route_id not in (None, route_id):
        raise ApiError(422, "route_id in the body differs from the path", details={
            "errors": [{"loc": ["body", "route_id"], "msg": "must equal the path's route_id"}]})
    for i, cam in enumerate(body.cameras):
        try:
            await visible_camera(request, cam)
        except ApiError:
            raise ApiError(422, "unknown camera", details={
                "errors": [{"loc": ["body", "cameras", str(i)],
                            "msg": "no such camera"}]}) from None
    model = RouteModel.model_validate({**body.model_dump(), "route_id": route_id})
    return await _publish(request, f"route/{route_id}",
                          route_event(model, {"producer": PRODUCER}))


async def delete_route(request: Request) -> Response:
    """Routes have no read-model table (the notifier folds them from vigil.config), so a
    delete is published without an existence check; deleting twice is harmless."""
    _routes_need_every_site(request)
    route_id = _check_entity_id(request.path_params["route_id"], "route")
    key = f"route/{route_id}"
    response = await _publish(request, key, EntityDeleted.create(
        producer=PRODUCER, entity_kind="route", entity_id=route_id))
    deps_of(request).publisher.producer.send_raw(topic_name("config"), key, None)
    return response


async def _list(request: Request, query: ConfigQuery, table: sa.Table, id_col: str
                ) -> list[sa.Row[Any]]:
    """Live (not deleted) entities on the key's sites' cameras, from the read model."""
    principal = principal_of(request)
    stmt = (sa.select(table).select_from(table.join(cameras,
                                                    cameras.c.camera_id == table.c.camera_id))
            .where(table.c.deleted_at.is_(None), site_filter(principal, cameras.c.site_id))
            .order_by(table.c[id_col]).limit(10_000))
    if query.camera:
        stmt = stmt.where(table.c.camera_id == query.camera)
    return await deps_of(request).read(lambda conn: conn.execute(stmt).all())


async def list_zones(request: Request, query: ConfigQuery) -> Response:
    rows = await _list(request, query, zones, "zone_id")
    return json_response(ZoneList(items=[ZoneOut.model_validate(r._mapping) for r in rows]))


async def list_lines(request: Request, query: ConfigQuery) -> Response:
    rows = await _list(request, query, lines, "line_id")
    return json_response(LineList(items=[LineOut.model_validate(r._mapping) for r in rows]))


async def list_rules(request: Request, query: ConfigQuery) -> Response:
    rows = await _list(request, query, rules, "rule_id")
    return json_response(RuleList(items=[RuleOut.model_validate(r._mapping) for r in rows]))



ROUTES = [
    Endpoint("GET", "/api/v1/zones", list_zones, "Configured zones", query=ConfigQuery,
             responses={200: ZoneList}, tag="config"),
    Endpoint("PUT", "/api/v1/zones/{zone_id}", put_zone,
             "Create or replace a zone: validated, published as ZoneConfigured",
             permission="configure", body=ZoneIn, responses={202: Published, 503: None},
             tag="config"),
    Endpoint("DELETE", "/api/v1/zones/{zone_id}", delete_zone,
             "Delete a zone: EntityDeleted plus a tombstone", permission="configure",
             responses={202: Published, 503: None}, tag="config"),
    Endpoint("GET", "/api/v1/lines", list_lines, "Configured directed lines",
             query=ConfigQuery, responses={200: LineList}, tag="config"),
    Endpoint("PUT", "/api/v1/lines/{line_id}", put_line,
             "Create or replace a directed line: validated, published as LineConfigured",
             permission="configure", body=LineIn, responses={202: Published, 503: None},
             tag="config"),
    Endpoint("DELETE", "/api/v1/lines/{line_id}", delete_line,
             "Delete a line: EntityDeleted plus a tombstone", permission="configure",
             responses={202: Published, 503: None}, tag="config"),
    Endpoint("GET", "/api/v1/rules", list_rules, "Configured rules", query=ConfigQuery,
             responses={200: RuleList}, tag="config"),
    Endpoint("PUT", "/api/v1/rules/{rule_id}", put_rule,
             "Create or replace a rule: validated, published as RuleConfigured",
             permission="configure", body=RuleIn, responses={202: Published, 503: None},
             tag="config"),
    Endpoint("DELETE", "/api/v1/rules/{rule_id}", delete_rule,
             "Delete a rule: EntityDeleted plus a tombstone", permission="configure",
             responses={202: Published, 503: None}, tag="config"),
    Endpoint("PUT", "/api/v1/routes/{route_id}", put_route,
             "Create or replace a notification route: validated, published as "
             "RouteConfigured", permission="configure", body=RouteIn,
             responses={202: Published, 503: None}, tag="config"),
    Endpoint("DELETE", "/api/v1/routes/{route_id}", delete_route,
             "Delete a notification route: EntityDeleted plus a tombstone",
             permission="configure", responses={202: Published, 503: None}, tag="config"),
]
