"""Daily report and the audit trail of operator commands.

The report is computed from the read models on request (a day of one site is a few
thousand rows at most), in UTC days so that it is the same whoever asks.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from datetime import UTC, datetime, time, timedelta
from typing import Any

import sqlalchemy as sa
from pydantic import BaseModel, Field
from starlette.requests import Request
from starlette.responses import Response

from api.auth import principal_of
from api.common import (
    Page,
    PageQuery,
    decode_cursor,
    encode_cursor,
    json_response,
    page_size,
    site_filter,
)
from api.deps import deps_of
from api.routing import Endpoint
from schemas.tables import (
    alert_events,
    alerts,
    cameras,
    commands,
    detection_daily_counts,
    detections,
    scene_events,
)


class DailyQuery(BaseModel):
    date: dt.date = Field(..., description="UTC day, YYYY-MM-DD")
    site: str | None = Field(None, max_length=200)


class ZoneHour(BaseModel):
    """Objects of one class that entered one zone in one UTC hour (ZoneEntered per track)."""

    zone_id: str
    hour: int = Field(..., ge=0, le=23, description="UTC hour of the day")
    label: str = Field(..., description="object class: person, car, bus, truck, ...")
    entries: int


class CameraDay(BaseModel):
    camera_id: str
    site_id: str | None
    alerts_raised: int
    alerts_by_severity: dict[str, int]
    alerts_by_rule_type: dict[str, int]
    acknowledged: int
    resolved: int
    escalated: int
    mean_seconds_to_ack: float | None
    detections: int
    detections_by_label: dict[str, int] = Field(default_factory=dict)
    zone_entries: list[ZoneHour] = Field(default_factory=list)


class DailyReport(BaseModel):
    date: dt.date
    site: str | None
    alerts_raised: int
    detections: int
    cameras: list[CameraDay]


async def daily_report(request: Request, query: DailyQuery) -> Response:
    principal = principal_of(request)
    start = datetime.combine(query.date, time(0), tzinfo=UTC)
    end = start + timedelta(days=1)
    site = sa.func.coalesce(alerts.c.site_id, cameras.c.site_id)

    def load(conn: sa.Connection) -> tuple[Sequence[Any], Sequence[Any], Sequence[Any],
                                           Sequence[Any]]:
        where = [alerts.c.raised_at >= start, alerts.c.raised_at < end,
                 site_filter(principal, site)]
        if query.site:
            where.append(site == query.site)
        a = conn.execute(
            sa.select(alerts.c.camera_id, site.label("site_id"), alerts.c.severity,
                      alerts.c.rule_type, alerts.c.acknowledged_at, alerts.c.resolved_at,
                      alerts.c.escalated_at, alerts.c.raised_at)
            .select_from(alerts.outerjoin(cameras, cameras.c.camera_id == alerts.c.camera_id))
            .where(*where)).all()
        cam_where = [site_filter(principal, cameras.c.site_id)]
        if query.site:
            cam_where.append(cameras.c.site_id == query.site)
        d = conn.execute(
            sa.select(detections.c.camera_id, cameras.c.site_id, detections.c.label,
                      sa.func.count())
            .select_from(detections.join(cameras, cameras.c.camera_id == detections.c.camera_id))
            .where(detections.c.occurred_at >= start, detections.c.occurred_at < end,
                   *cam_where)
            .group_by(detections.c.camera_id, cameras.c.site_id, detections.c.label)).all()
        old = conn.execute(
            sa.select(detection_daily_counts.c.camera_id, cameras.c.site_id,
                      detection_daily_counts.c.label,
                      sa.func.sum(detection_daily_counts.c.detections))
            .select_from(detection_daily_counts.join(
                cameras, cameras.c.camera_id == detection_daily_counts.c.camera_id))
            .where(detection_daily_counts.c.day == query.date, *cam_where)
            .group_by(detection_daily_counts.c.camera_id, cameras.c.site_id,
                      detection_daily_counts.c.label)).all()
        return a, d, old, zone_hour_counts(conn, start, end, cam_where)

    a, d, old, zones = await deps_of(request).read(load)
    per: dict[str, dict[str, Any]] = {}

    def cam(camera_id: str, site_id: str | None) -> dict[str, Any]:
        return per.setdefault(camera_id, {
            "camera_id": camera_id, "site_id": site_id, "alerts_raised": 0,
            "alerts_by_severity": {}, "alerts_by_rule_type": {}, "acknowledged": 0,
            "resolved": 0, "escalated": 0, "ack_secs": [], "detections": 0,
            "detections_by_label": {}, "zone_entries": []})

    for row in a:
        c = cam(row.camera_id, row.site_id)
        c["alerts_raised"] += 1
        c["alerts_by_severity"][row.severity] = c["alerts_by_severity"].get(row.severity, 0) + 1
        c["alerts_by_rule_type"][row.rule_type] = (
            c["alerts_by_rule_type"].get(row.rule_type, 0) + 1)
        if row.acknowledged_at:
            c["acknowledged"] += 1
            c["ack_secs"].append((row.acknowledged_at - row.raised_at).total_seconds())
        c["resolved"] += bool(row.resolved_at)
        c["escalated"] += bool(row.escalated_at)
    for camera_id, site_id, label, n in [*d, *old]:
        c = cam(camera_id, site_id)
        c["detections"] += int(n or 0)
        c["detections_by_label"][label] = c["detections_by_label"].get(label, 0) + int(n or 0)
    for row in zones:
        cam(row.camera_id, row.site_id)["zone_entries"].append(
            ZoneHour(zone_id=row.zone_id, hour=row.hour, label=row.label, entries=row.entries))
    out = []
    for camera_id in sorted(per):
        c = per[camera_id]
        secs = c.pop("ack_secs")
        c["mean_seconds_to_ack"] = sum(secs) / len(secs) if secs else None
        out.append(CameraDay(**c))
    report = DailyReport(date=query.date, site=query.site,
                         alerts_raised=sum(c.alerts_raised for c in out),
                         detections=sum(c.detections for c in out), cameras=out)
    return json_response(report)


def zone_hour_counts(conn: sa.Connection, start: datetime, end: datetime,
                     cam_where: list[Any]) -> Sequence[Any]:
    """ZoneEntered per (camera, zone, UTC hour, object class) in [start, end): how many
    people, cars, ... entered each zone each hour. Every track enters a zone once per
    visit, so this counts visits, not frames. ZoneEntered written before the event
    carried a class (schema v1) are people, the only class tracked then."""
    label = sa.func.coalesce(scene_events.c.payload["label"].astext, "person")
    hour = sa.cast(sa.extract("hour", sa.func.timezone("UTC", scene_events.c.occurred_at)),
                   sa.Integer)
    return conn.execute(
        sa.select(scene_events.c.camera_id, cameras.c.site_id, scene_events.c.zone_id,
                  hour.label("hour"), label.label("label"), sa.func.count().label("entries"))
        .select_from(scene_events.join(cameras,
                                       cameras.c.camera_id == scene_events.c.camera_id))
        .where(scene_events.c.event_type == "ZoneEntered",
               scene_events.c.occurred_at >= start, scene_events.c.occurred_at < end,
               *cam_where)
        .group_by(scene_events.c.camera_id, cameras.c.site_id, scene_events.c.zone_id,
                  hour, label)
        .order_by(scene_events.c.camera_id, scene_events.c.zone_id, hour, label)).all()


class AuditCommand(BaseModel):
    command_id: str
    command_type: str
    alert_id: str
    operator: str
    occurred_at: datetime
    expected_version: int | None
    outcome: str | None = Field(None, description="the alerts agent's answer, if projected")
    reason: str | None = None


class AuditPage(Page):
    items: list[AuditCommand]


class AuditQuery(PageQuery):
    alert_id: str | None = Field(None, max_length=200)
    operator: str | None = Field(None, max_length=200)


async def audit_commands(request: Request, query: AuditQuery) -> Response:
    """Who asked what of which alert, and what the agent answered (auditor, admin)."""
    principal = principal_of(request)
    limit = page_size(request, query.limit)
    site = sa.func.coalesce(alerts.c.site_id, cameras.c.site_id)
    outcome = (
        sa.select(alert_events.c.event_type, alert_events.c.payload)
        .where(alert_events.c.event_type.in_(
            ("AlertAcknowledged", "AlertResolved", "CommandRejected")),
            sa.or_(alert_events.c.causation_id == commands.c.event_id,
                   alert_events.c.payload["command_id"].astext == commands.c.event_id))
        .limit(1).lateral("outcome")
    )
    stmt = (
        sa.select(commands.c.event_id.label("command_id"), commands.c.command_type,
                  commands.c.alert_id, commands.c.operator, commands.c.occurred_at,
                  commands.c.expected_version, outcome.c.event_type.label("outcome"),
                  outcome.c.payload["reason"].astext.label("reason"))
        .select_from(commands
                     .outerjoin(alerts, alerts.c.alert_id == commands.c.alert_id)
                     .outerjoin(cameras, cameras.c.camera_id == alerts.c.camera_id)
                     .outerjoin(outcome, sa.true()))
        .where(site_filter(principal, site))
    )
    if query.alert_id:
        stmt = stmt.where(commands.c.alert_id == query.alert_id)
    if query.operator:
        stmt = stmt.where(commands.c.operator == query.operator)
    if query.cursor:
        at, cid = decode_cursor(query.cursor, (datetime, str))
        stmt = stmt.where(sa.tuple_(commands.c.occurred_at, commands.c.event_id) < (at, cid))
    stmt = stmt.order_by(commands.c.occurred_at.desc(), commands.c.event_id.desc()
                         ).limit(limit + 1)
    rows = await deps_of(request).read(lambda conn: conn.execute(stmt).all())
    items = [AuditCommand.model_validate(r._mapping) for r in rows[:limit]]
    cursor = None
    if len(rows) > limit:
        cursor = encode_cursor(items[-1].occurred_at, items[-1].command_id)
    return json_response(AuditPage(items=items, next_cursor=cursor))


ROUTES = [
    Endpoint("GET", "/api/v1/reports/daily", daily_report,
             "Alerts and detections per camera for one UTC day", query=DailyQuery,
             responses={200: DailyReport}, tag="reports"),
    Endpoint("GET", "/api/v1/audit/commands", audit_commands,
             "Operator commands with the alerts agent's outcome (auditor, admin)",
             permission="audit", query=AuditQuery, responses={200: AuditPage}, tag="audit"),
]
