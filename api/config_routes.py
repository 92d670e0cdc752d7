"""Zones, lines, rules and notification routes: validated here, then published as config
events on the compacted ``vigil.config`` topic (key ``zone/ID`` / ``line/ID`` / ``rule/ID``
/ ``route/ID``), where every agent reads them; read back from the projector's tables.

The API does not write the read model: the projector folds the published event like any
other, so the zones table, the scene agent and a replay all agree. Validation happens
before publishing, because a bad polygon on a compacted topic would live forever.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from pydantic import BaseModel, Field, ValidationError
from starlette.requests import Request
from starlette.responses import Response

from api.auth import principal_of
from api.cameras import LineOut, RuleOut, ZoneOut, visible_camera
from api.common import check_id, json_response, site_filter
from api.deps import deps_of
from api.errors import ApiError
from api.routing import Endpoint
from schemas.events import EntityDeleted
from schemas.site_config import (
    ID_PATTERN,
    MAX_VERTICES,
    EntityId,
    LineModel,
    PointModel,
    RouteModel,
    RuleModel,
    ZoneModel,
    line_event,
    route_event,
    rule_event,
    zone_event,
)
from schemas.tables import cameras, lines, routes, rules, zones
from schemas.topics import topic_name

PRODUCER = "vigil-api"


# Request bodies: the site file's models (schemas/site_config.py) with the entity's id in
# the path (in the body it is optional and must match), the camera always named (a site
# file may leave it out when it has one camera) and points as {"x", "y"} objects. Every
# bound and check is the site model's, so the API publishes nothing `vigil config
# validate` would reject, and the reverse.


class ZoneIn(ZoneModel):
    """A zone (schemas/site_config.py ZoneModel); its id is in the path."""

    # the id may be left out of the body (the path names it) where the site file requires
    # it: a wider type than the parent's, which mypy reports as an assignment
    zone_id: EntityId | None = None  # type: ignore[assignment]
    camera_id: EntityId
    # {x, y} objects in the API where the site file takes [x, y] pairs (another type)
    polygon: list[PointModel] = Field(  # type: ignore[assignment]
        min_length=3, max_length=MAX_VERTICES)


class LineIn(LineModel):
    """A directed line a->b in normalised image coordinates (schemas/site_config.py
    LineModel); "forward" is crossing from its left side to its right side
    (agents/lines.py). Its id is in the path."""

    # the id may be left out of the body (the path names it) where the site file requires
    # it: a wider type than the parent's, which mypy reports as an assignment
    line_id: EntityId | None = None  # type: ignore[assignment]
    camera_id: EntityId
    # {x, y} objects in the API where the site file takes [x, y] pairs (another type)
    a: PointModel  # type: ignore[assignment]
    b: PointModel  # type: ignore[assignment]


class RuleIn(RuleModel):
    """A rule (schemas/site_config.py RuleModel); its id is in the path."""

    # the id may be left out of the body (the path names it) where the site file requires
    # it: a wider type than the parent's, which mypy reports as an assignment
    rule_id: EntityId | None = None  # type: ignore[assignment]
    camera_id: EntityId


class RouteIn(RouteModel):
    """A notification route (schemas/site_config.py RouteModel); its id is in the path."""

    # the id may be left out of the body (the path names it) where the site file requires
    # it: a wider type than the parent's, which mypy reports as an assignment
    route_id: EntityId | None = None  # type: ignore[assignment]


def _as_site_model(model: type[BaseModel], body: BaseModel, id_field: str, entity_id: str
                   ) -> Any:
    """The body as the site file's model, with the path's id (which the body may repeat
    but not contradict)."""
    given = getattr(body, id_field)
    if given not in (None, entity_id):
        raise ApiError(422, f"{id_field} in the body differs from the path", details={
            "errors": [{"loc": ["body", id_field], "msg": f"must equal the path's {id_field}"}]})
    data = {name: getattr(body, name) for name in type(body).model_fields}
    data[id_field] = entity_id
    for name, value in data.items():  # {"x", "y"} objects -> the file's [x, y] pairs
        if isinstance(value, PointModel):
            data[name] = (value.x, value.y)
        elif isinstance(value, list) and value and isinstance(value[0], PointModel):
            data[name] = [(p.x, p.y) for p in value]
    try:
        return model.model_validate(data)
    except ValidationError as exc:  # not expected: the body passed the same checks
        raise ApiError(422, "invalid body", details={"errors": [
            {"loc": ["body", *map(str, e["loc"])], "msg": e["msg"]} for e in exc.errors()]}
            ) from None


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
    if not re.fullmatch(ID_PATTERN, value):  # re.match's $ lets a trailing newline in
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
    zone: ZoneModel = _as_site_model(ZoneModel, body, "zone_id", zone_id)
    await _known_camera(request, body.camera_id)
    return await _publish(request, f"zone/{zone_id}", zone_event(zone, {"producer": PRODUCER}))


async def put_line(request: Request, body: LineIn) -> Response:
    line_id = _check_entity_id(request.path_params["line_id"], "line")
    line: LineModel = _as_site_model(LineModel, body, "line_id", line_id)
    await _known_camera(request, body.camera_id)
    return await _publish(request, f"line/{line_id}", line_event(line, {"producer": PRODUCER}))


async def put_rule(request: Request, body: RuleIn) -> Response:
    """Like a site file's rule: its zone or line must be one of its camera's (a crowd
    rule without a zone counts the whole frame)."""
    rule_id = _check_entity_id(request.path_params["rule_id"], "rule")
    rule: RuleModel = _as_site_model(RuleModel, body, "rule_id", rule_id)
    await _known_camera(request, body.camera_id)
    target_tbl, target_col, target, field = (
        (lines, lines.c.line_id, body.line_id, "line_id") if body.rule_type == "line_crossing"
        else (zones, zones.c.zone_id, body.zone_id, "zone_id"))
    if target is not None:
        stmt = sa.select(sa.literal(1)).select_from(target_tbl).where(
            target_col == target, target_tbl.c.camera_id == body.camera_id,
            target_tbl.c.deleted_at.is_(None))
        found = await deps_of(request).read(lambda conn: conn.execute(stmt).first())
        if found is None:
            raise ApiError(422, f"unknown {field} on this camera", details={
                "errors": [{"loc": ["body", field], "msg": "not configured on camera"}]})
    return await _publish(request, f"rule/{rule_id}", rule_event(rule, {"producer": PRODUCER}))


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


def _routes_need_every_site(request: Request) -> None:
    """Creating, replacing or deleting a route needs a key for every site: a route
    without `site_id` reaches every site's alerts, and a route id may name another
    site's route that the read model does not show yet (it lags a PUT), so a site-scoped
    admin could send another site's alerts to itself or silence that site's routes."""
    principal = principal_of(request)
    if principal.sites is not None:
        raise ApiError(403, "notification routes span sites; managing them needs a key "
                            "for every site", details={"sites": sorted(principal.sites)})


async def put_route(request: Request, body: RouteIn) -> Response:
    _routes_need_every_site(request)
    route_id = _check_entity_id(request.path_params["route_id"], "route")
    route: RouteModel = _as_site_model(RouteModel, body, "route_id", route_id)
    for i, cam in enumerate(body.cameras):
        try:
            await visible_camera(request, cam)
        except ApiError:
            raise ApiError(422, "unknown camera", details={
                "errors": [{"loc": ["body", "cameras", str(i)],
                            "msg": "no such camera"}]}) from None
    return await _publish(request, f"route/{route_id}",
                          route_event(route, {"producer": PRODUCER}))


async def delete_route(request: Request) -> Response:
    """Published without an existence check (the notifier folds routes from vigil.config
    and the read model may lag behind a PUT); deleting twice is harmless."""
    _routes_need_every_site(request)
    route_id = _check_entity_id(request.path_params["route_id"], "route")
    key = f"route/{route_id}"
    response = await _publish(request, key, EntityDeleted.create(
        producer=PRODUCER, entity_kind="route", entity_id=route_id))
    deps_of(request).publisher.producer.send_raw(topic_name("config"), key, None)
    return response


async def _list(request: Request, query: ConfigQuery, table: sa.Table, id_col: str
                ) -> Sequence[sa.Row[Any]]:
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


class QuietHoursOut(BaseModel):
    start: str
    end: str
    timezone: str | None = None


class RouteOut(BaseModel):
    """A notification route as configured (schemas/site_config.py RouteModel); empty
    filters match anything."""

    route_id: str
    site_id: str | None
    cameras: list[str]
    rule_types: list[str]
    severities: list[str]
    event_types: list[str]
    levels: list[int]
    channels: list[str]
    recipients: list[str]
    quiet_hours: QuietHoursOut | None
    enabled: bool
    configured_at: datetime
    config_event_id: str


class RouteList(BaseModel):
    items: list[RouteOut]


class RouteQuery(BaseModel):
    site: str | None = Field(None, max_length=200)
    camera: str | None = Field(None, max_length=200)


def _route_out(r: Any) -> RouteOut:
    m = r._mapping
    quiet = (QuietHoursOut(start=m["quiet_start"], end=m["quiet_end"], timezone=m["timezone"])
             if m["quiet_start"] and m["quiet_end"] else None)
    return RouteOut(**{k: m[k] for k in (
        "route_id", "site_id", "cameras", "rule_types", "severities", "event_types",
        "levels", "channels", "recipients", "enabled", "configured_at", "config_event_id")},
        quiet_hours=quiet)


def _routes_visible(principal: Any) -> sa.ColumnElement[bool]:
    """A site-scoped key sees the routes that can reach its sites' alerts: those of one
    of its sites, and those of no site unless they name only other sites' cameras."""
    if principal.sites is None:
        return sa.true()
    sites = sorted(principal.sites)
    own_camera = (sa.select(sa.literal(1)).select_from(cameras)
                  .where(cameras.c.camera_id == sa.func.any(routes.c.cameras),
                         cameras.c.site_id.in_(sites)).exists())
    return sa.or_(routes.c.site_id.in_(sites),
                  sa.and_(routes.c.site_id.is_(None),
                          sa.or_(sa.func.cardinality(routes.c.cameras) == 0, own_camera)))


async def list_routes(request: Request, query: RouteQuery) -> Response:
    """Live routes from the read model (the projector folds RouteConfigured); a PUT shows
    here once projected."""
    stmt = (sa.select(routes).where(routes.c.deleted_at.is_(None),
                                    _routes_visible(principal_of(request)))
            .order_by(routes.c.route_id).limit(10_000))
    if query.site:
        stmt = stmt.where(sa.or_(routes.c.site_id == query.site, routes.c.site_id.is_(None)))
    if query.camera:
        stmt = stmt.where(sa.or_(sa.func.cardinality(routes.c.cameras) == 0,
                                 sa.literal(query.camera) == sa.func.any(routes.c.cameras)))
    rows = await deps_of(request).read(lambda conn: conn.execute(stmt).all())
    return json_response(RouteList(items=[_route_out(r) for r in rows]))


async def get_route(request: Request) -> Response:
    route_id = check_id(request.path_params["route_id"], "route")
    stmt = sa.select(routes).where(routes.c.route_id == route_id,
                                   routes.c.deleted_at.is_(None),
                                   _routes_visible(principal_of(request)))
    row = await deps_of(request).read(lambda conn: conn.execute(stmt).first())
    if row is None:  # another site's route is as unknown as a missing one
        raise ApiError(404, "route not found", details={"route_id": route_id})
    return json_response(_route_out(row))


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
    Endpoint("GET", "/api/v1/routes", list_routes,
             "Configured notification routes (recipients are personal data: on the access "
             "record)", query=RouteQuery, responses={200: RouteList}, tag="config",
             personal_data=True),
    Endpoint("GET", "/api/v1/routes/{route_id}", get_route, "One notification route",
             responses={200: RouteOut, 404: None}, tag="config", personal_data=True),
    Endpoint("PUT", "/api/v1/routes/{route_id}", put_route,
             "Create or replace a notification route: validated, published as "
             "RouteConfigured", permission="configure", body=RouteIn,
             responses={202: Published, 503: None}, tag="config"),
    Endpoint("DELETE", "/api/v1/routes/{route_id}", delete_route,
             "Delete a notification route: EntityDeleted plus a tombstone",
             permission="configure", responses={202: Published, 503: None}, tag="config"),
]
