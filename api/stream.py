"""Live alert stream (Server-Sent Events) fed from the alerts read model.

Fed from the read model rather than straight from Kafka so that what a client sees live
is exactly what a page reload shows (same rows, same site scope, same order), and an
event reaches clients only once it is queryable. One poller per app process (only while
someone listens) reads alert events past a per-partition watermark of their log
position and fans them out to per-subscriber queues; at the default 200 ms poll an alert
reaches clients well within a second of its projection. A slow client whose queue fills
is disconnected rather than allowed to hold memory; it reconnects with Last-Event-ID.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from pydantic import BaseModel, Field
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from api.auth import Principal, principal_of
from api.deps import Deps, deps_of
from api.routing import Endpoint
from projections.tables import alert_events, alerts, cameras

log = logging.getLogger(__name__)

QUEUE_SIZE = 1000


@dataclass(eq=False)
class _Subscriber:
    principal: Principal
    queue: asyncio.Queue[dict[str, Any] | None] = field(
        default_factory=lambda: asyncio.Queue(QUEUE_SIZE)
    )


class AlertHub:
    def __init__(self, deps: Deps) -> None:
        self.deps = deps
        self.subscribers: set[_Subscriber] = set()
        self._task: asyncio.Task[None] | None = None
        self._marks: dict[int, int] | None = None  # log_partition -> last log_offset seen

    def subscribe(self, principal: Principal) -> _Subscriber:
        sub = _Subscriber(principal)
        self.subscribers.add(sub)
        self.deps.metrics.stream_subscribers.set(len(self.subscribers))
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._run(), name="api-alert-hub")
        return sub

    def unsubscribe(self, sub: _Subscriber) -> None:
        self.subscribers.discard(sub)
        self.deps.metrics.stream_subscribers.set(len(self.subscribers))

    async def ready(self) -> None:
        """Wait until the watermark is set (tests subscribe, then produce)."""
        while self._marks is None:
            await asyncio.sleep(0.01)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        for sub in list(self.subscribers):
            with contextlib.suppress(asyncio.QueueFull):
                sub.queue.put_nowait(None)

    def _marks_stmt(self) -> sa.Select[Any]:
        return sa.select(alert_events.c.log_partition, sa.func.max(alert_events.c.log_offset)
                         ).group_by(alert_events.c.log_partition)

    def _new_stmt(self, marks: dict[int, int]) -> sa.Select[Any]:
        site = sa.func.coalesce(alerts.c.site_id, cameras.c.site_id)
        conds = [sa.and_(alert_events.c.log_partition == p, alert_events.c.log_offset > o)
                 for p, o in marks.items()]
        if marks:
            conds.append(alert_events.c.log_partition.not_in(list(marks)))
        else:
            conds.append(sa.true())
        return (
            sa.select(alert_events.c.event_id, alert_events.c.event_type,
                      alert_events.c.occurred_at, alert_events.c.alert_id,
                      alert_events.c.version, alert_events.c.payload,
                      alert_events.c.log_partition, alert_events.c.log_offset,
                      alerts.c.state, alerts.c.severity, alerts.c.camera_id,
                      site.label("site_id"))
            .select_from(alert_events
                         .outerjoin(alerts, alerts.c.alert_id == alert_events.c.alert_id)
                         .outerjoin(cameras, cameras.c.camera_id == alerts.c.camera_id))
            .where(sa.or_(*conds))
            .order_by(alert_events.c.occurred_at, alert_events.c.log_partition,
                      alert_events.c.log_offset)
            .limit(1000)
        )

    async def _run(self) -> None:
        try:
            rows = await self.deps.read(lambda c: c.execute(self._marks_stmt()).all())
            self._marks = {int(p): int(o) for p, o in rows}
            while self.subscribers:
                marks = dict(self._marks)
                stmt = self._new_stmt(marks)
                new = await self.deps.read(lambda c, s=stmt: c.execute(s).all())
                for row in new:
                    part, off = int(row.log_partition), int(row.log_offset)
                    if off > self._marks.get(part, -1):
                        self._marks[part] = off
                    self._fan_out(row)
                if len(new) < 1000:
                    await asyncio.sleep(self.deps.api.stream_poll_s)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("alert stream poller failed; subscribers are disconnected")
            for sub in list(self.subscribers):
                with contextlib.suppress(asyncio.QueueFull):
                    sub.queue.put_nowait(None)
        finally:
            self._marks = None

    def _fan_out(self, row: Any) -> None:
        message = {
            "event_id": row.event_id,
            "event_type": row.event_type,
            "occurred_at": row.occurred_at.isoformat() if row.occurred_at else None,
            "alert_id": row.alert_id,
            "version": row.version,
            "state": row.state,
            "severity": row.severity,
            "camera_id": row.camera_id,
            "site_id": row.site_id,
            "payload": row.payload,
        }
        for sub in list(self.subscribers):
            if not sub.principal.sees_site(row.site_id):
                continue
            try:
                sub.queue.put_nowait(message)
            except asyncio.QueueFull:  # too slow: cut it loose, it will reconnect
                self.unsubscribe(sub)
                with contextlib.suppress(asyncio.QueueEmpty):
                    sub.queue.get_nowait()
                sub.queue.put_nowait(None)


class StreamQuery(BaseModel):
    max_events: int | None = Field(None, ge=1, le=100_000,
                                   description="close after this many events")
    timeout_s: float | None = Field(None, gt=0, le=86_400,
                                    description="close after this many seconds")


class StreamEvent(BaseModel):
    """One SSE ``data:`` payload (``event:`` is the event type, ``id:`` the event id)."""

    event_id: str
    event_type: str
    occurred_at: datetime | None
    alert_id: str
    version: int | None
    state: str | None
    severity: str | None
    camera_id: str | None
    site_id: str | None
    payload: dict[str, Any]


async def alert_stream(request: Request, query: StreamQuery) -> Response:
    deps = deps_of(request)
    hub: AlertHub = deps.extra["hub"]
    sub = hub.subscribe(principal_of(request))
    loop = asyncio.get_running_loop()
    deadline = loop.time() + query.timeout_s if query.timeout_s else None
    keepalive = deps.api.stream_keepalive_s

    async def events() -> AsyncIterator[str]:
        sent = 0
        try:
            await hub.ready()
            yield ": connected\n\n"
            while True:
                wait = keepalive
                if deadline is not None:
                    wait = min(wait, deadline - loop.time())
                    if wait <= 0:
                        return
                try:
                    msg = await asyncio.wait_for(sub.queue.get(), wait)
                except TimeoutError:
                    yield ": keep-alive\n\n"
                    continue
                if msg is None:
                    return
                yield (f"id: {msg['event_id']}\nevent: {msg['event_type']}\n"
                       f"data: {json.dumps(msg, default=str)}\n\n")
                sent += 1
                if query.max_events and sent >= query.max_events:
                    return
        finally:
            hub.unsubscribe(sub)

    return StreamingResponse(
        events(), media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


ROUTES = [
    Endpoint("GET", "/api/v1/alerts/stream", alert_stream,
             "Live alert events as Server-Sent Events (site-scoped)",
             query=StreamQuery, responses={200: None}, tag="alerts",
             media_type="text/event-stream"),
]
