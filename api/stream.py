"""Live alert stream (Server-Sent Events) fed from the alerts read model.

Fed from the read model rather than straight from Kafka so that what a client sees live
is exactly what a page reload shows (same rows, same site scope, same order), and an
event reaches clients only once it is queryable. One poller per app process (only while
someone listens) reads alert events past a per-partition watermark of their log
position and fans them out to per-subscriber queues; at the default 200 ms poll an alert
reaches clients well within a second of its projection. A slow client whose queue fills
is disconnected rather than allowed to hold memory; it reconnects with Last-Event-ID.

Resume: every SSE ``id:`` is the client's stream position, the per-partition log offset
of the last alert event it has been sent (``"0:41,1:17"``), not an event id; a bare
``id:`` line is also sent on connect, so even a client that saw no alert can resume.
A client reconnecting with ``Last-Event-ID`` is first replayed, from the read model,
every event between its position and the hub's position at the moment it subscribed,
then gets the live feed past that point: nothing missed, nothing twice, each
partition (= each incident) in log order. Replay comes from the read model, not an
in-memory ring, because it must survive an API restart and work whichever worker
process or replica the client reconnects to; it is capped (`stream_replay_max`), and a
client further behind gets a ``reset`` event telling it to reload the alert list.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from pydantic import BaseModel, Field, RootModel
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from api.auth import Principal, bearer_key, principal_of
from api.common import site_filter
from api.deps import Deps, deps_of
from api.errors import ApiError
from api.routing import SESSION_COOKIE, Endpoint
from schemas.tables import alert_events, alerts, cameras

log = logging.getLogger(__name__)

QUEUE_SIZE = 1000
BATCH = 1000
MAX_PARTITIONS = 4096

Position = dict[int, int]  # log_partition -> last log_offset delivered


def encode_position(pos: Position) -> str:
    """An absent partition means "nothing read from it" (offset -1), so the empty
    position is written as partition 0 at -1 (an empty ``id:`` would clear the client's
    Last-Event-ID instead)."""
    return ",".join(f"{p}:{o}" for p, o in sorted(pos.items())) or "0:-1"


def decode_position(text: str) -> Position:
    """A client's Last-Event-ID; anything malformed is a 400 (never a 500)."""
    out: Position = {}
    try:
        for part in text.split(","):
            p, o = part.split(":")
            out[int(p)] = int(o)
            if not (0 <= int(p) < 2**31 and -1 <= int(o) < 2**63):
                raise ValueError("out of range")
    except ValueError:
        raise ApiError(400, "invalid Last-Event-ID (send back an id this stream sent)",
                       details={"expected": "partition:offset[,partition:offset...]"}
                       ) from None
    if len(out) > MAX_PARTITIONS:
        raise ApiError(400, "invalid Last-Event-ID (too many partitions)")
    return out


def merge_by_time(rows: Sequence[Any]) -> list[Any]:
    """Rows sorted by (partition, offset) interleaved by event time, keeping each
    partition in log order: a position vector is then exact after every row, and a
    client disconnected mid-batch resumes without a gap or a repeat."""
    heads: dict[int, list[Any]] = {}
    for row in rows:
        heads.setdefault(int(row.log_partition), []).append(row)
    idx = dict.fromkeys(heads, 0)
    out: list[Any] = []
    while len(out) < len(rows):
        best = min((p for p in heads if idx[p] < len(heads[p])),
                   key=lambda p: (heads[p][idx[p]].occurred_at, p))
        out.append(heads[best][idx[best]])
        idx[best] += 1
    return out


def event_rows(where: sa.ColumnElement[bool]) -> sa.Select[Any]:
    """Alert events with their alert's state and site, in log order (partition, offset)."""
    site = sa.func.coalesce(alerts.c.site_id, cameras.c.site_id)
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
        .where(where)
        .order_by(alert_events.c.log_partition, alert_events.c.log_offset)
    )


def _all_rows(stmt: sa.Select[Any], conn: sa.Connection) -> Sequence[sa.Row[Any]]:
    return conn.execute(stmt).all()


def message(row: Any) -> dict[str, Any]:
    return {
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


@dataclass(eq=False)
class _Subscriber:
    principal: Principal
    queue: asyncio.Queue[tuple[int, int, dict[str, Any]] | None] = field(
        default_factory=lambda: asyncio.Queue(QUEUE_SIZE)
    )
    #: The hub's position when this subscriber started receiving (set by the hub).
    start: Position | None = None


class AlertHub:
    def __init__(self, deps: Deps) -> None:
        self.deps = deps
        self.subscribers: set[_Subscriber] = set()
        self._task: asyncio.Task[None] | None = None
        self._marks: dict[int, int] | None = None  # log_partition -> last log_offset seen

    def subscribe(self, principal: Principal) -> _Subscriber:
        sub = _Subscriber(principal)
        if self._marks is not None:
            sub.start = dict(self._marks)
        self.subscribers.add(sub)
        self.deps.metrics.stream_subscribers.set(len(self.subscribers))
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._run(), name="api-alert-hub")
        return sub

    def unsubscribe(self, sub: _Subscriber) -> None:
        self.subscribers.discard(sub)
        self.deps.metrics.stream_subscribers.set(len(self.subscribers))

    async def ready(self, sub: _Subscriber | None = None) -> None:
        """Wait until the watermark is set (for `sub`: until it has its start position)."""
        while self._marks is None or (sub is not None and sub.start is None):
            if self._task is None or self._task.done():
                return  # the poller failed; the subscriber's queue says so
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

    def _new_stmt(self, marks: Position) -> sa.Select[Any]:
        conds = [sa.and_(alert_events.c.log_partition == p, alert_events.c.log_offset > o)
                 for p, o in marks.items()]
        if marks:
            conds.append(alert_events.c.log_partition.not_in(list(marks)))
        else:
            conds.append(sa.true())
        # In log order, so that a LIMIT cuts each partition after a contiguous prefix
        # and the marks never jump over a row not yet read.
        return event_rows(sa.or_(*conds)).limit(BATCH)

    async def _run(self) -> None:
        try:
            rows = await self.deps.read(lambda c: c.execute(self._marks_stmt()).all())
            self._marks = {int(p): int(o) for p, o in rows}
            for sub in self.subscribers:
                if sub.start is None:
                    sub.start = dict(self._marks)
            while self.subscribers:
                stmt = self._new_stmt(dict(self._marks))
                new = await self.deps.read(functools.partial(_all_rows, stmt))
                # No await from here to the end of the fan-out: a subscriber added
                # meanwhile gets exactly the rows past the marks it was given.
                for row in merge_by_time(new):
                    part, off = int(row.log_partition), int(row.log_offset)
                    if off > self._marks.get(part, -1):
                        self._marks[part] = off
                    self._fan_out(part, off, row)
                if len(new) < BATCH:
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

    def _fan_out(self, part: int, off: int, row: Any) -> None:
        msg = message(row)
        for sub in list(self.subscribers):
            if not sub.principal.sees_site(row.site_id):
                continue
            try:
                sub.queue.put_nowait((part, off, msg))
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
    """One SSE ``data:`` payload (``event:`` is the event type, ``id:`` the client's
    stream position to send back as ``Last-Event-ID`` when reconnecting)."""

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


class StreamNotice(BaseModel):
    """The ``data:`` of a stream's own events: ``reset`` (more was missed than is
    replayed; reload the list) and ``credential_expired`` (the stream's last event)."""

    reason: str
    max_replay: int | None = None
    expires_at: datetime | None = None


class StreamData(RootModel[StreamEvent | StreamNotice]):
    """What an event's ``data:`` holds: an alert event, or one of the stream's notices."""


def _sse(pos: Position, msg: dict[str, Any] | None = None, event: str | None = None) -> str:
    head = f"id: {encode_position(pos)}\n"
    if msg is None:
        return head + "\n"
    return (f"{head}event: {event or msg['event_type']}\n"
            f"data: {json.dumps(msg, default=str)}\n\n")


def _replay_stmt(principal: Principal, since: Position, until: Position,
                 limit: int) -> sa.Select[Any] | None:
    """Events a resuming client missed: past its position, up to the hub's position
    when it subscribed (everything later comes live)."""
    ranges = [sa.and_(alert_events.c.log_partition == p,
                      alert_events.c.log_offset > since.get(p, -1),
                      alert_events.c.log_offset <= end)
              for p, end in until.items() if end > since.get(p, -1)]
    if not ranges:
        return None
    site = sa.func.coalesce(alerts.c.site_id, cameras.c.site_id)
    return event_rows(sa.and_(sa.or_(*ranges), site_filter(principal, site))).limit(limit + 1)


def credential_check(request: Request) -> Callable[[], Awaitable[str | None]]:
    """What a live stream asks at each keep-alive: is the credential that opened it still
    good? None if so, else why not. A key revoked (or rotated away) or a console session
    logged out, disabled or timed out ends the stream within a keep-alive interval plus
    the key/session cache time; expiry itself is a deadline of its own (`alert_stream`)."""
    import anyio.to_thread

    deps = deps_of(request)
    session = request.scope.get("session")
    if session is not None:
        token = request.cookies.get(SESSION_COOKIE, "")

        async def session_alive() -> str | None:
            found = await anyio.to_thread.run_sync(
                functools.partial(deps.users.session, token, touch=False))
            return None if found is not None else "the session has ended; log in again"
        return session_alive
    key = bearer_key(request) or ""

    async def key_alive() -> str | None:
        found = await deps.keys.authenticate(key)
        if found is None:
            return "the API key was revoked"
        if found.expired():
            return "the API key has expired"
        return None
    return key_alive


def _ended(reason: str, principal: Principal) -> str:
    """The last frame of a stream whose credential ran out: a client (the console's
    EventSource, a script) can tell it from a network drop and stop reconnecting with
    the same credential."""
    body: dict[str, Any] = {"reason": reason}
    if principal.expires_at is not None:
        body["expires_at"] = principal.expires_at.astimezone(UTC).isoformat()
    return f"event: credential_expired\ndata: {json.dumps(body)}\n\n"


async def alert_stream(request: Request, query: StreamQuery) -> Response:
    """A stream lives at most as long as the credential that opened it: it ends at the
    key's expiry or the console session's absolute end (docs/security.md), and a
    credential revoked meanwhile is noticed at the next keep-alive."""
    deps = deps_of(request)
    hub: AlertHub = deps.extra["hub"]
    principal = principal_of(request)
    raw = request.headers.get("last-event-id", "").strip()
    resume = decode_position(raw) if raw else None
    sub = hub.subscribe(principal)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + query.timeout_s if query.timeout_s else None
    expiry = None
    if principal.expires_at is not None:
        expiry = loop.time() + (principal.expires_at - datetime.now(UTC)).total_seconds()
    keepalive = deps.api.stream_keepalive_s
    still_valid = credential_check(request)

    async def events() -> AsyncIterator[str]:
        sent = 0
        try:
            await hub.ready(sub)
            if sub.start is None:
                return  # the poller failed before it started
            yield ": connected\n\n"
            pos: Position = dict(resume) if resume is not None else dict(sub.start)
            if resume is not None:
                cap = deps.api.stream_replay_max
                stmt = _replay_stmt(principal, resume, sub.start, cap)
                missed = [] if stmt is None else await deps.read(
                    lambda c: c.execute(stmt).all())
                if len(missed) > cap:
                    missed = []
                    pos = {p: max(o, resume.get(p, -1)) for p, o in sub.start.items()}
                    yield _sse(pos, {"reason": "more events were missed than are replayed; "
                                               "reload the alert list",
                                     "max_replay": cap}, event="reset")
                for row in merge_by_time(missed):
                    pos[int(row.log_partition)] = int(row.log_offset)
                    yield _sse(pos, message(row))
                    sent += 1
                    if query.max_events and sent >= query.max_events:
                        return
                for p, o in sub.start.items():
                    pos[p] = max(o, pos.get(p, -1))
            yield _sse(pos)  # the position so far: resumable before any event arrives
            while True:
                wait = keepalive
                if expiry is not None:
                    wait = min(wait, expiry - loop.time())
                    if wait <= 0:
                        yield _ended("the credential has expired", principal)
                        return
                if deadline is not None:
                    wait = min(wait, deadline - loop.time())
                    if wait <= 0:
                        return
                try:
                    item = await asyncio.wait_for(sub.queue.get(), wait)
                except TimeoutError:
                    now = loop.time()
                    if (expiry is not None and expiry <= now) or (
                            deadline is not None and deadline <= now):
                        continue  # the top of the loop ends the stream
                    reason = await still_valid()
                    if reason is not None:
                        yield _ended(reason, principal)
                        return
                    yield ": keep-alive\n\n"
                    continue
                if item is None:
                    return
                part, off, msg = item
                if off <= pos.get(part, -1):
                    continue  # already replayed to this client
                pos[part] = off
                yield _sse(pos, msg)
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
             query=StreamQuery, responses={200: StreamData}, tag="alerts",
             media_type="text/event-stream", personal_data=True,  # the live view
             headers=(("Last-Event-ID",
                       "resume position: the last `id:` this stream sent; what was missed "
                       "is replayed from the read model in log order, exactly once (at most "
                       "VIGIL_API_STREAM_REPLAY_MAX events, else an `event: reset`)",
                       {"type": "string", "pattern": r"^\d+:-?\d+(,\d+:-?\d+)*$"}),)),
]
