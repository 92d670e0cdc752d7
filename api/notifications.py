"""Notifications: what was delivered or failed (read model), and an operator's retry.

A retry is a command to the notifier, like an acknowledgement is a command to the
alerts agent: the API publishes ``RetryNotification`` on ``vigil.notifications`` (keyed by
alert id) and answers 202; the notifier re-arms the failed delivery in its outbox, and its
next ``NotificationDelivered`` / ``NotificationFailed`` shows up here
(docs/notifications.md).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

import sqlalchemy as sa
from pydantic import BaseModel, Field
from starlette.requests import Request
from starlette.responses import Response

from api.alerts import _visible_alert
from api.auth import principal_of
from api.common import check_id, json_response
from api.deps import deps_of
from api.errors import ApiError
from api.routing import Endpoint
from schemas.events import RetryNotification
from schemas.tables import notifications

PRODUCER = "vigil-api"


class NotificationOut(BaseModel):
    event_id: str
    alert_id: str
    alert_event_id: str
    status: str
    destination: str
    channel: str
    attempts: int
    status_code: int | None
    reason: str | None
    occurred_at: datetime


class NotificationList(BaseModel):
    items: list[NotificationOut]


class NotificationQuery(BaseModel):
    alert_id: str | None = Field(None, max_length=200)
    status: Literal["delivered", "failed", "retry-requested"] | None = None
    limit: int = Field(100, ge=1, le=1000)


class RetryAccepted(BaseModel):
    command_id: str
    notification_event_id: str
    alert_id: str
    status: Literal["pending"] = "pending"


async def list_notifications(request: Request, query: NotificationQuery) -> Response:
    """Newest first; an alert id narrows to that alert (which the key must be able to see)."""
    stmt = sa.select(*[notifications.c[k] for k in NotificationOut.model_fields]).order_by(
        notifications.c.occurred_at.desc()).limit(query.limit)
    if query.alert_id is not None:
        await _visible_alert(request, query.alert_id)
        stmt = stmt.where(notifications.c.alert_id == query.alert_id)
    elif principal_of(request).sites is not None:
        raise ApiError(422, "alert_id is required for a site-scoped key", details={
            "errors": [{"loc": ["query", "alert_id"], "msg": "required for site-scoped keys"}]})
    if query.status is not None:
        stmt = stmt.where(notifications.c.status == query.status)
    rows = await deps_of(request).read(lambda conn: conn.execute(stmt).all())
    return json_response(NotificationList(
        items=[NotificationOut.model_validate(r._mapping) for r in rows]))


async def retry_notification(request: Request) -> Response:
    event_id = check_id(request.path_params["event_id"], "notification")
    stmt = sa.select(notifications.c.alert_id, notifications.c.status).where(
        notifications.c.event_id == event_id)
    row: Any = await deps_of(request).read(lambda conn: conn.execute(stmt).first())
    if row is None:
        raise ApiError(404, "notification not found", details={"event_id": event_id})
    await _visible_alert(request, row.alert_id)
    if row.status != "failed":
        raise ApiError(409, f"only a failed notification can be retried; this one is "
                            f"{row.status}", details={"event_id": event_id})
    principal = principal_of(request)
    cmd = RetryNotification.create(producer=PRODUCER, notification_event_id=event_id,
                                   alert_id=row.alert_id, requested_by=principal.key_id)
    await deps_of(request).publisher.publish("notifications", row.alert_id, cmd)
    return json_response(RetryAccepted(command_id=cmd.event_id, notification_event_id=event_id,
                                       alert_id=row.alert_id), status=202)


ROUTES = [
    Endpoint("GET", "/api/v1/notifications", list_notifications,
             "Notification outcomes (delivered, failed, retry requested), newest first",
             query=NotificationQuery, responses={200: NotificationList},
             errors=(404,),  # alert_id of an alert the key cannot see (or none)
             tag="alerts"),
    Endpoint("POST", "/api/v1/notifications/{event_id}/retry", retry_notification,
             "Deliver a failed notification again: publishes RetryNotification",
             permission="act", responses={202: RetryAccepted, 503: None},
             errors=(404, 409), tag="alerts"),
]
