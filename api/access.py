"""The access record: every request that reads personal data or changes anything is put
on the ``vigil.access`` topic as an ``AccessRecorded`` event, in one place.

An endpoint opts in with one line, ``personal_data=True`` on its `Endpoint`; every
endpoint that is not a GET is recorded anyway (it changes something). `api.routing`
calls `AccessRecorder.record` once per such request, whatever the outcome: answered,
refused (401/403, also for a missing or expired key), not found, invalid, or failed.

What is recorded: who (key id and name, role; "anonymous" without a valid key), what
(method, route template, operation, and the ids the request named: its path parameters
and query parameters ending in ``_id``), when, from where (the client address), and the
outcome (status). Never the data itself: no bodies, no query text, no images, no
embeddings, no answers. The projector chains the records into the ``access_log`` read
model (projections/access_log.py); auditors list it with ``GET /api/v1/audit/access``.

The record is sent without waiting for the broker's acknowledgement (librdkafka keeps and
retries it for ``message.timeout.ms``), so recording costs the request microseconds; a
record the broker never takes is logged and counted
(``vigil_api_access_records_failed_total``), see docs/security.md.
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from confluent_kafka import KafkaError, Message
from pydantic import BaseModel, Field
from starlette.requests import Request
from starlette.responses import Response

from api.auth import Principal, principal_of
from api.common import check_range, decode_cursor, encode_cursor, json_response, page_size
from api.deps import deps_of
from api.errors import ApiError
from schemas.events import AccessRecorded
from schemas.tables import access_log

if TYPE_CHECKING:
    from api.routing import Endpoint
    from schemas.producer import EventProducer

log = logging.getLogger(__name__)

PRODUCER = "vigil-api"
#: Ids longer than this are cut: a route never needs more, and the record stays small.
MAX_ID_LEN = 200


def outcome_of(status: int) -> str:
    if status < 400:
        return "ok"
    if status in (401, 403):
        return "denied"
    if status == 404:
        return "not_found"
    if status < 500:
        return "rejected"
    return "error"


def resource_ids(request: Request) -> list[str]:
    """``name=value`` of the ids a request named: path parameters, ``*_id`` query ones."""
    ids = [f"{k}={v}" for k, v in sorted(request.path_params.items())]
    ids += [f"{k}={v}" for k, v in sorted(request.query_params.multi_items())
            if k.endswith("_id")]
    return [i[:MAX_ID_LEN] for i in ids]


class AccessRecorder:
    """Builds and sends access records for one app."""

    def __init__(self, producer: EventProducer, failed: Any = None) -> None:
        self.producer = producer
        self.failed = failed  # a Prometheus counter, when the app has metrics

    def _delivered(self, err: KafkaError | None, msg: Message) -> None:
        if err is not None:
            log.error("an access record was not accepted by the broker",
                      extra={"reason": str(err)})
            if self.failed is not None:
                self.failed.inc()

    def record(self, request: Request, ep: Endpoint, status: int) -> AccessRecorded:
        principal = request.scope.get("principal")
        if isinstance(principal, Principal):
            # a console user's principal carries "user:<name>" as its id (api.users)
            kind = "user" if principal.key_id.startswith("user:") else "key"
            actor_id, name, role = principal.key_id, principal.name, principal.role
        else:
            kind, actor_id, name, role = "key", "anonymous", "", ""
        event = AccessRecorded.create(
            producer=PRODUCER, actor_kind=kind, actor_id=actor_id, actor_name=name,
            role=role, method=ep.method, route=ep.path, operation=ep.operation_id,
            resource_ids=resource_ids(request),
            client_address=request.client.host if request.client else "unknown",
            status=status, outcome=outcome_of(status))
        try:
            self.producer.send("access", "access", event, on_delivery=self._delivered)
        except Exception as exc:  # never turn a served request into a 500 afterwards
            log.error("cannot queue an access record", extra={"reason": repr(exc)})
            if self.failed is not None:
                self.failed.inc()
        return event


# --------------------------------------------------------------------------- the listing
class AccessQuery(BaseModel):
    limit: int | None = Field(None, ge=1, description="page size; capped by the server")
    cursor: str | None = Field(None, max_length=1000, description="opaque, from next_cursor")
    actor_id: str | None = Field(None, max_length=200, description="key or user id")
    route: str | None = Field(None, max_length=300, description="route template")
    operation: str | None = Field(None, max_length=200)
    outcome: str | None = Field(None, pattern="^(ok|denied|not_found|rejected|error)$")
    resource_id: str | None = Field(
        None, max_length=MAX_ID_LEN, description="an id as recorded, e.g. camera_id=cam-1")
    since: datetime | None = None
    until: datetime | None = None


class AccessRecordOut(BaseModel):
    seq: int
    event_id: str
    occurred_at: datetime
    actor_kind: str
    actor_id: str
    actor_name: str
    role: str
    method: str
    route: str
    operation: str
    resource_ids: list[str]
    client_address: str
    status: int
    outcome: str
    hash: str


class AccessPage(BaseModel):
    items: list[AccessRecordOut]
    next_cursor: str | None


async def list_access(request: Request, query: AccessQuery) -> Response:
    """The access record, newest first (auditor, admin; keys for every site only)."""
    principal = principal_of(request)
    if principal.sites is not None:
        raise ApiError(403, "the access record spans every site; it needs a key that is "
                            "not limited to sites", details={"sites": sorted(principal.sites)})
    check_range(query.since, query.until)
    limit = page_size(request, query.limit)
    t = access_log
    stmt = sa.select(*(t.c[n] for n in AccessRecordOut.model_fields))
    if query.actor_id:
        stmt = stmt.where(t.c.actor_id == query.actor_id)
    if query.route:
        stmt = stmt.where(t.c.route == query.route)
    if query.operation:
        stmt = stmt.where(t.c.operation == query.operation)
    if query.outcome:
        stmt = stmt.where(t.c.outcome == query.outcome)
    if query.resource_id:
        stmt = stmt.where(sa.literal(query.resource_id) == sa.any_(t.c.resource_ids))
    if query.since:
        stmt = stmt.where(t.c.occurred_at >= query.since)
    if query.until:
        stmt = stmt.where(t.c.occurred_at < query.until)
    if query.cursor:
        (seq,) = decode_cursor(query.cursor, (int,))
        stmt = stmt.where(t.c.seq < seq)
    stmt = stmt.order_by(t.c.seq.desc()).limit(limit + 1)
    rows = await deps_of(request).read(lambda conn: conn.execute(stmt).all())
    items = [AccessRecordOut.model_validate(r._mapping) for r in rows[:limit]]
    cursor = encode_cursor(items[-1].seq) if len(rows) > limit else None
    return json_response(AccessPage(items=items, next_cursor=cursor))


def routes() -> list[Endpoint]:
    from api.routing import Endpoint

    return [
        Endpoint("GET", "/api/v1/audit/access", list_access,
                 "Who read personal data or changed what (auditor, admin)",
                 permission="audit", query=AccessQuery, responses={200: AccessPage},
                 tag="audit", errors=(403,),
                 # the record names people's keys and addresses: reading it is recorded too
                 personal_data=True),
    ]
