"""Alerts: list and detail from the read model; acknowledge and resolve as commands.

Acting on an alert is asking the alerts agent to do it: the API publishes
AcknowledgeAlert / ResolveAlert on ``vigil.commands`` keyed by the alert's incident key
(the agent is partitioned by incident, so every command of an incident is applied in
order by one worker), answers 202 with the command id, and lets the client wait for the
outcome that the agent writes to ``vigil.alerts`` (AlertAcknowledged, AlertResolved or
CommandRejected with its reason). The API never decides whether a command is valid:
fifty concurrent acks are fifty commands, and the agent applies exactly one.
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections import OrderedDict
from datetime import datetime
from typing import Any, Literal

import sqlalchemy as sa
from pydantic import BaseModel, Field
from starlette.requests import Request
from starlette.responses import Response

from api.auth import Principal, principal_of
from api.common import (
    Page,
    PageQuery,
    bound_page,
    bound_sites,
    check_id,
    check_range,
    decode_cursor,
    json_response,
    page_response,
    page_size,
    site_filter,
)
from api.deps import deps_of
from api.errors import ApiError
from api.evidence import EvidenceOut, evidence_for
from api.routing import Endpoint
from schemas.events import (
    AcknowledgeAlert,
    AssignAlert,
    CommentOnAlert,
    ResolveAlert,
    new_event_id,
)
from schemas.tables import TS, alert_events, alerts, cameras, commands

PRODUCER = "vigil-api"

State = Literal["NEW", "ACKNOWLEDGED", "ESCALATED", "RESOLVED"]
Severity = Literal["info", "warning", "critical"]
OUTCOME_TYPES = ("AlertAcknowledged", "AlertResolved", "AlertAssigned", "AlertCommented",
                 "CommandRejected")


class AlertOut(BaseModel):
    alert_id: str
    incident_key: str
    state: str
    severity: str
    site_id: str | None
    camera_id: str
    zone_id: str | None
    rule_id: str
    rule_type: str
    level: int
    occurrences: int
    version: int
    raised_at: datetime
    updated_at: datetime
    first_evidence_at: datetime
    last_evidence_at: datetime
    escalated_at: datetime | None
    acknowledged_at: datetime | None
    acknowledged_by: str | None
    ack_note: str | None
    resolved_at: datetime | None
    resolved_by: str | None
    resolution: str | None
    auto_resolved: bool | None
    assigned_to: str | None = None


class AlertEventOut(BaseModel):
    event_id: str
    event_type: str
    occurred_at: datetime
    version: int | None
    causation_id: str | None
    correlation_id: str | None
    payload: dict[str, Any]


class AlertPage(Page):
    items: list[AlertOut]


class AlertDetail(AlertOut):
    history: list[AlertEventOut]
    #: the still evidence of each rule hit of the alert (raised, then every repeat)
    evidence: list[EvidenceOut] = Field(default_factory=list)


class AlertQuery(PageQuery):
    state: list[State] | None = Field(None, description="repeatable")
    severity: list[Severity] | None = Field(None, description="repeatable")
    camera: str | None = Field(None, max_length=200)
    zone: str | None = Field(None, max_length=200, description="the zone the rule watches")
    rule: str | None = Field(None, max_length=200, description="the rule id")
    since: datetime | None = Field(None, description="raised at or after (ISO 8601)")
    until: datetime | None = Field(None, description="raised before (ISO 8601)")


class AckBody(BaseModel):
    note: str = Field("", max_length=2000)
    expected_version: int | None = Field(None, ge=0, le=2**31 - 1)


class ResolveBody(BaseModel):
    resolution: str = Field("", max_length=2000)
    expected_version: int | None = Field(None, ge=0, le=2**31 - 1)


class AssignBody(BaseModel):
    assignee: str = Field(..., max_length=200,
                          description="a console user name or team; empty = unassign")
    expected_version: int | None = Field(None, ge=0, le=2**31 - 1)


class CommentBody(BaseModel):
    text: str = Field(..., min_length=1, max_length=4000)


class WaitQuery(BaseModel):
    wait: float | None = Field(
        None, ge=0, le=30, description="seconds to wait for the outcome (long poll)"
    )


class CommandStatus(BaseModel):
    """`pending` until the alerts agent's outcome is projected; then `applied` (with the
    resulting event) or `rejected` (with the agent's reason)."""

    command_id: str
    status: Literal["pending", "applied", "rejected"]
    alert_id: str | None = None
    outcome_event_type: str | None = None
    reason: str | None = None
    version: int | None = None


# ----------------------------------------------------------------------------- queries
_SITE = sa.func.coalesce(alerts.c.site_id, cameras.c.site_id)
_FROM = alerts.outerjoin(cameras, cameras.c.camera_id == alerts.c.camera_id)
_ALERT_COLS = [c for c in alerts.c if c.name not in ("raised_event_id", "last_event_id",
                                                   "snapshot_ref", "site_id")]


def _alert_select(principal: Principal) -> sa.Select[Any]:
    return (
        sa.select(*_ALERT_COLS, _SITE.label("site_id"))
        .select_from(_FROM)
        .where(site_filter(principal, _SITE))
    )


async def _visible_alert(request: Request, alert_id: str) -> sa.Row[Any]:
    """The alert if the key may see it; another site's alert is a 404, like a missing one."""
    check_id(alert_id, "alert")
    principal = principal_of(request)
    stmt = _alert_select(principal).where(alerts.c.alert_id == alert_id)
    row = await deps_of(request).read(lambda conn: conn.execute(stmt).first())
    if row is None:
        raise ApiError(404, "alert not found", details={"alert_id": alert_id})
    return row


@functools.lru_cache(maxsize=256)
def _list_stmt(scoped: bool, state: bool, severity: bool, camera: bool, since: bool,
               until: bool, cursor: bool, zone: bool = False, rule: bool = False
               ) -> sa.Select[Any]:
    """The listing for one combination of filters, built once (see `bound_page`)."""
    stmt = sa.select(*_ALERT_COLS, _SITE.label("site_id")).select_from(_FROM)
    if scoped:
        stmt = stmt.where(bound_sites(_SITE))
    if state:
        stmt = stmt.where(alerts.c.state.in_(sa.bindparam("state", expanding=True)))
    if severity:
        stmt = stmt.where(alerts.c.severity.in_(sa.bindparam("severity", expanding=True)))
    if camera:
        stmt = stmt.where(alerts.c.camera_id == sa.bindparam("camera", type_=sa.Text))
    if zone:
        stmt = stmt.where(alerts.c.zone_id == sa.bindparam("zone", type_=sa.Text))
    if rule:
        stmt = stmt.where(alerts.c.rule_id == sa.bindparam("rule", type_=sa.Text))
    if since:
        stmt = stmt.where(alerts.c.raised_at >= sa.bindparam("since", type_=TS))
    if until:
        stmt = stmt.where(alerts.c.raised_at < sa.bindparam("until", type_=TS))
    if cursor:
        stmt = stmt.where(sa.tuple_(alerts.c.raised_at, alerts.c.alert_id) < sa.tuple_(
            sa.bindparam("c_at", type_=TS), sa.bindparam("c_id", type_=sa.Text)))
    order = [alerts.c.raised_at.desc(), alerts.c.alert_id.desc()]
    return bound_page(stmt, AlertOut, order, ("raised_at", "alert_id"))


async def list_alerts(request: Request, query: AlertQuery) -> Response:
    principal = principal_of(request)
    check_range(query.since, query.until)
    limit = page_size(request, query.limit)
    params: dict[str, Any] = {"lim": limit, "lim1": limit + 1}
    if principal.sites is not None:
        params["sites"] = sorted(principal.sites)
    if query.cursor:
        params["c_at"], params["c_id"] = decode_cursor(query.cursor, (datetime, str))
    for name in ("state", "severity", "camera", "zone", "rule", "since", "until"):
        value = getattr(query, name)
        if value:
            params[name] = value
    stmt = _list_stmt(principal.sites is not None, bool(query.state), bool(query.severity),
                      bool(query.camera), bool(query.since), bool(query.until),
                      bool(query.cursor), bool(query.zone), bool(query.rule))
    row = await deps_of(request).read(lambda conn: conn.execute(stmt, params).one())
    return page_response(row, limit)


async def get_alert(request: Request) -> Response:
    row = await _visible_alert(request, request.path_params["alert_id"])
    stmt = (
        sa.select(alert_events.c.event_id, alert_events.c.event_type,
                  alert_events.c.occurred_at, alert_events.c.version,
                  alert_events.c.causation_id, alert_events.c.correlation_id,
                  alert_events.c.payload)
        .where(alert_events.c.alert_id == row.alert_id)
        .order_by(alert_events.c.occurred_at, alert_events.c.log_partition,
                  alert_events.c.log_offset)
    )
    history = await deps_of(request).read(lambda conn: conn.execute(stmt).all())
    # each AlertRaised / AlertRepeated is caused by a RuleTriggered: its evidence
    hits = [h.causation_id for h in history
            if h.event_type in ("AlertRaised", "AlertRepeated") and h.causation_id]
    detail = AlertDetail(
        **AlertOut.model_validate(row._mapping).model_dump(),
        history=[AlertEventOut.model_validate(h._mapping) for h in history],
        evidence=await evidence_for(request, hits),
    )
    return json_response(detail)


# ----------------------------------------------------------------------------- commands
class _Published:
    """Commands this process published recently, so GET /commands/{id} can say
    "pending" before the projector has seen them (bounded; old entries fall out)."""

    def __init__(self, size: int = 10_000) -> None:
        self.size = size
        self._items: OrderedDict[str, tuple[str, str]] = OrderedDict()

    def add(self, command_id: str, alert_id: str, key_id: str) -> None:
        self._items[command_id] = (alert_id, key_id)
        while len(self._items) > self.size:
            self._items.popitem(last=False)

    def get(self, command_id: str) -> tuple[str, str] | None:
        return self._items.get(command_id)


def _published(request: Request) -> _Published:
    extra = deps_of(request).extra
    if "published" not in extra:
        extra["published"] = _Published()
    return extra["published"]  # type: ignore[no-any-return]


def _outcome_stmt(command_id: str) -> sa.Select[Any]:
    return (
        sa.select(alert_events.c.event_type, alert_events.c.alert_id,
                  alert_events.c.version, alert_events.c.payload)
        .where(
            alert_events.c.event_type.in_(OUTCOME_TYPES),
            sa.or_(alert_events.c.causation_id == command_id,
                   alert_events.c.payload["command_id"].astext == command_id),
        )
        .limit(1)
    )


async def command_outcome(request: Request, command_id: str) -> CommandStatus | None:
    row = await deps_of(request).read(
        lambda conn: conn.execute(_outcome_stmt(command_id)).first()
    )
    if row is None:
        return None
    if row.event_type == "CommandRejected":
        return CommandStatus(command_id=command_id, status="rejected", alert_id=row.alert_id,
                             outcome_event_type=row.event_type,
                             reason=str((row.payload or {}).get("reason", "")))
    return CommandStatus(command_id=command_id, status="applied", alert_id=row.alert_id,
                         outcome_event_type=row.event_type, version=row.version)


async def _wait_outcome(request: Request, command_id: str, wait: float) -> CommandStatus | None:
    """Long-poll the alert_events read model; backs off from 50 ms to 250 ms."""
    deadline = time.monotonic() + min(wait, deps_of(request).api.max_wait_s)
    delay = 0.05
    while True:
        outcome = await command_outcome(request, command_id)
        if outcome is not None or time.monotonic() >= deadline:
            return outcome
        await asyncio.sleep(min(delay, max(0.0, deadline - time.monotonic())))
        delay = min(delay * 2, 0.25)


async def _send_command(request: Request,
                        command: AcknowledgeAlert | ResolveAlert | AssignAlert | CommentOnAlert,
                        incident_key: str, wait: float | None) -> Response:
    deps = deps_of(request)
    principal = principal_of(request)
    await deps.publisher.publish("commands", incident_key, command)
    deps.metrics.commands.labels(command.event_type).inc()
    _published(request).add(command.event_id, command.alert_id, principal.key_id)
    if wait:
        outcome = await _wait_outcome(request, command.event_id, wait)
        if outcome is not None:
            return json_response(outcome, status=200)
    return json_response(
        CommandStatus(command_id=command.event_id, status="pending", alert_id=command.alert_id),
        status=202,
    )


async def ack_alert(request: Request, query: WaitQuery, body: AckBody) -> Response:
    row = await _visible_alert(request, request.path_params["alert_id"])
    principal = principal_of(request)
    command = AcknowledgeAlert.create(
        producer=PRODUCER, event_id=new_event_id(), alert_id=row.alert_id,
        operator=principal.name, note=body.note, expected_version=body.expected_version,
    )
    return await _send_command(request, command, row.incident_key, query.wait)


async def resolve_alert(request: Request, query: WaitQuery, body: ResolveBody) -> Response:
    row = await _visible_alert(request, request.path_params["alert_id"])
    principal = principal_of(request)
    command = ResolveAlert.create(
        producer=PRODUCER, event_id=new_event_id(), alert_id=row.alert_id,
        operator=principal.name, resolution=body.resolution,
        expected_version=body.expected_version,
    )
    return await _send_command(request, command, row.incident_key, query.wait)


async def assign_alert(request: Request, query: WaitQuery, body: AssignBody) -> Response:
    row = await _visible_alert(request, request.path_params["alert_id"])
    principal = principal_of(request)
    command = AssignAlert.create(
        producer=PRODUCER, event_id=new_event_id(), alert_id=row.alert_id,
        operator=principal.name, assignee=body.assignee.strip(),
        expected_version=body.expected_version,
    )
    return await _send_command(request, command, row.incident_key, query.wait)


async def comment_alert(request: Request, query: WaitQuery, body: CommentBody) -> Response:
    row = await _visible_alert(request, request.path_params["alert_id"])
    if not body.text.strip():
        raise ApiError(422, "a comment needs text",
                       details={"errors": [{"loc": ["body", "text"], "msg": "blank"}]})
    principal = principal_of(request)
    command = CommentOnAlert.create(
        producer=PRODUCER, event_id=new_event_id(), alert_id=row.alert_id,
        operator=principal.name, text=body.text,
    )
    return await _send_command(request, command, row.incident_key, query.wait)


async def get_command(request: Request, query: WaitQuery) -> Response:
    command_id = check_id(request.path_params["command_id"], "command")
    principal = principal_of(request)
    # Which alert is it about? Our own record, else the projected command, else the outcome.
    known = _published(request).get(command_id)
    alert_id = known[0] if known else None
    if alert_id is None:
        stmt = sa.select(commands.c.alert_id).where(commands.c.event_id == command_id)
        alert_id = await deps_of(request).read(lambda conn: conn.execute(stmt).scalar())
    outcome = None
    if alert_id is None:
        outcome = await command_outcome(request, command_id)
        alert_id = outcome.alert_id if outcome else None
    if alert_id is None:
        raise ApiError(404, "command not found", details={"command_id": command_id})
    if principal.sites is not None:
        await _visible_alert(request, alert_id)  # 404 for another site's command
    if query.wait:
        outcome = await _wait_outcome(request, command_id, query.wait)
    elif outcome is None:
        outcome = await command_outcome(request, command_id)
    return json_response(
        outcome or CommandStatus(command_id=command_id, status="pending", alert_id=alert_id)
    )


ROUTES = [
    Endpoint("GET", "/api/v1/alerts", list_alerts, "List alerts (newest first, keyset pages)",
             query=AlertQuery, responses={200: AlertPage}, tag="alerts"),
    Endpoint("GET", "/api/v1/alerts/{alert_id}", get_alert, "An alert with its history",
             responses={200: AlertDetail}, tag="alerts",
             personal_data=True),  # its evidence: snapshots and clip URLs
    Endpoint("POST", "/api/v1/alerts/{alert_id}/ack", ack_alert,
             "Acknowledge: publishes AcknowledgeAlert; 202 with the command id "
             "(200 with the outcome when ?wait= sees it in time)",
             permission="act", query=WaitQuery, body=AckBody,
             responses={202: CommandStatus, 200: CommandStatus, 503: None}, tag="alerts"),
    Endpoint("POST", "/api/v1/alerts/{alert_id}/resolve", resolve_alert,
             "Resolve: publishes ResolveAlert; 202 with the command id "
             "(200 with the outcome when ?wait= sees it in time)",
             permission="act", query=WaitQuery, body=ResolveBody,
             responses={202: CommandStatus, 200: CommandStatus, 503: None}, tag="alerts"),
    Endpoint("POST", "/api/v1/alerts/{alert_id}/assign", assign_alert,
             "Assign to an operator (empty = unassign): publishes AssignAlert; 202 with the "
             "command id (200 with the outcome when ?wait= sees it in time)",
             permission="act", query=WaitQuery, body=AssignBody,
             responses={202: CommandStatus, 200: CommandStatus, 503: None}, tag="alerts"),
    Endpoint("POST", "/api/v1/alerts/{alert_id}/comment", comment_alert,
             "Add a comment to the alert's history: publishes CommentOnAlert; 202 with the "
             "command id (200 with the outcome when ?wait= sees it in time)",
             permission="act", query=WaitQuery, body=CommentBody,
             responses={202: CommandStatus, 200: CommandStatus, 503: None}, tag="alerts"),
    Endpoint("GET", "/api/v1/commands/{command_id}", get_command,
             "A command's outcome: pending, applied or rejected (with the reason)",
             query=WaitQuery, responses={200: CommandStatus}, tag="alerts"),
]
