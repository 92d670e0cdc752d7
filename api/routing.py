"""Endpoints declared once: the Starlette route, its permission and its OpenAPI entry all
come from the same `Endpoint`, so the document cannot drift from the routes.

Handlers receive the request and the validated query/body models; authentication,
role checks and the per-key rate limit happen here, before any handler runs.
"""

from __future__ import annotations

import json
import math
import types
import typing
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, ValidationError
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from api.auth import bearer_key, expired_error, require
from api.errors import ApiError, validation_details

#: The console's session cookie (see `api.users`); API clients send keys instead.
SESSION_COOKIE = "vigil_session"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})

Handler = Callable[..., Awaitable[Response]]


@dataclass(frozen=True)
class Endpoint:
    method: str
    path: str
    handler: Handler
    summary: str
    permission: str | None = "read"  # None = public (health, metrics, openapi)
    query: type[BaseModel] | None = None
    body: type[BaseModel] | None = None
    #: status -> response model (or None for a body described only by its summary)
    responses: dict[int, type[BaseModel] | None] = field(default_factory=dict)
    tag: str = "api"
    #: media type of the success response when it is not JSON
    media_type: str = "application/json"
    multipart: bool = False  # body is multipart/form-data (uploads)
    #: error statuses this endpoint can answer beyond the common ones (documented)
    errors: tuple[int, ...] = ()
    #: request headers the handler reads, as (name, description, JSON Schema), so that
    #: the OpenAPI document tells a client about them (e.g. SSE's Last-Event-ID)
    headers: tuple[tuple[str, str, dict[str, Any]], ...] = ()
    #: the endpoint reads personal data (images, appearance, tracks, recordings, the
    #: live view): every call is put on the access record (api/access.py)
    personal_data: bool = False

    @property
    def operation_id(self) -> str:
        return self.handler.__name__

    @property
    def recorded(self) -> bool:
        """Reads of personal data and every change are on the access record."""
        return self.personal_data or self.method not in ("GET", "HEAD")


def parse_model(model: type[BaseModel], data: dict[str, Any], where: str) -> BaseModel:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        # Locations start with "query"/"body", like the checks made after parsing
        # (unknown camera, zone or line), so a client finds the field the same way.
        errors = [{**e, "loc": [where, *e["loc"]]} for e in validation_details(exc)]
        raise ApiError(422, f"invalid {where}", details={"errors": errors}) from None


def _too_many(deps: Any, wait: float, message: str) -> ApiError:
    deps.metrics.rate_limited.inc()
    return ApiError(429, message, details={"retry_after_s": round(wait, 3)},
                    headers={"Retry-After": str(max(1, math.ceil(wait)))})


async def authenticate(request: Request, permission: str) -> None:
    """Key check, then the per-key budget, then the role.

    Requests without a valid key spend their client address's anonymous budget; once
    it is empty they get 429 and a key that is not already verified (cached) is not
    even looked up, so a key-guessing script costs a dictionary lookup, not a query.
    A valid key never spends the anonymous budget.
    """
    deps = request.app.state.deps
    key = bearer_key(request)
    if key is None and deps.users is not None and request.cookies.get(SESSION_COOKIE):
        await authenticate_session(request, permission)
        return
    principal = deps.keys.cached(key) if key is not None else None
    if principal is None:
        address = request.client.host if request.client else "unknown"
        wait = deps.anon_limiter.waiting(address)
        if wait > 0:
            raise _too_many(deps, wait, "too many requests without a valid API key "
                                        "from this address")
        if key is not None:
            principal = await deps.keys.authenticate(key)
        if principal is not None and principal.expired():
            deps.anon_limiter.take(address)
            raise expired_error(principal)
        if principal is None:
            deps.anon_limiter.take(address)
            if key is None:
                raise ApiError(401, "an API key is required",
                               headers={"WWW-Authenticate": "Bearer"})
            raise ApiError(401, "invalid or revoked API key",
                           headers={"WWW-Authenticate": "Bearer"})
    request.scope["principal"] = principal
    wait = deps.limiter.take(principal.key_id)
    if wait > 0:
        raise _too_many(deps, wait, "rate limit exceeded for this key")
    require(request, permission)


async def authenticate_session(request: Request, permission: str) -> None:
    """A console user's request: the session cookie instead of a key.

    A cookie is sent by the browser on its own, so a state-changing request must also
    carry the session's CSRF token in ``X-CSRF-Token`` (a page of another origin can make
    the browser send the cookie, but cannot read the token). Same budget and role checks
    as a key.
    """
    import anyio.to_thread

    from api.users import csrf_matches

    deps = request.app.state.deps
    token = request.cookies.get(SESSION_COOKIE, "")
    session = await anyio.to_thread.run_sync(deps.users.session, token)
    if session is None:
        address = request.client.host if request.client else "unknown"
        deps.anon_limiter.take(address)
        raise ApiError(401, "the session has expired or was ended; log in again",
                       headers={"WWW-Authenticate": "Bearer"})
    if request.method not in SAFE_METHODS and not csrf_matches(
            session.csrf_token, request.headers.get("x-csrf-token")):
        raise ApiError(403, "missing or invalid CSRF token (reload the page)",
                       error="csrf_failed")
    request.scope["principal"] = session.principal
    request.scope["session"] = session
    wait = deps.limiter.take(session.principal.key_id)
    if wait > 0:
        raise _too_many(deps, wait, "rate limit exceeded for this user")
    require(request, permission)


def _is_list(annotation: Any) -> bool:
    origin = typing.get_origin(annotation)
    if origin is list:
        return True
    if origin in (typing.Union, types.UnionType):
        return any(_is_list(a) for a in typing.get_args(annotation))
    return False


def _query_dict(request: Request, model: type[BaseModel]) -> dict[str, Any]:
    """Query parameters; list-typed fields keep every repeated value."""
    out: dict[str, Any] = {}
    names = set()
    for field_name, info in model.model_fields.items():
        name = info.alias or field_name  # e.g. "from", a Python keyword
        names.add(name)
        values = request.query_params.getlist(name)
        if not values:
            continue
        out[name] = values if _is_list(info.annotation) else values[-1]
    unknown = set(request.query_params.keys()) - names
    if unknown:
        raise ApiError(
            400, "unknown query parameter(s)", details={"unknown": sorted(unknown)}
        )
    return out


def _has_nul(value: Any) -> bool:
    """PostgreSQL text cannot hold NUL; such input is refused at the door."""
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, dict):
        return any(_has_nul(k) or _has_nul(v) for k, v in value.items())
    if isinstance(value, list):
        return any(_has_nul(v) for v in value)
    return False


def _count(request: Request, status: int) -> None:
    from api.access import outcome_of

    request.app.state.deps.metrics.access_records.labels(outcome_of(status)).inc()


def to_route(ep: Endpoint) -> Route:
    async def endpoint(request: Request) -> Response:
        if not ep.recorded:
            return await handle(request)
        recorder = request.app.state.deps.extra["access"]
        try:
            response = await handle(request)
        except ApiError as exc:
            recorder.record(request, ep, exc.status)
            _count(request, exc.status)
            raise
        except Exception:
            recorder.record(request, ep, 500)
            _count(request, 500)
            raise
        recorder.record(request, ep, response.status_code)
        _count(request, response.status_code)
        return response

    async def handle(request: Request) -> Response:
        if ep.permission is not None:
            await authenticate(request, ep.permission)
        if _has_nul(list(request.query_params.multi_items())) or _has_nul(
            dict(request.path_params)
        ):
            raise ApiError(400, "NUL characters are not allowed in parameters")
        kwargs: dict[str, Any] = {}
        if ep.query is not None:
            kwargs["query"] = parse_model(ep.query, _query_dict(request, ep.query), "query")
        elif request.query_params and ep.permission is not None:
            raise ApiError(400, "this endpoint takes no query parameters")
        if ep.body is not None:
            ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
            raw = await request.body()
            if not raw and not ctype:
                data: Any = {}  # no body at all: every optional field takes its default
            elif ctype != "application/json":
                raise ApiError(415, "send the body as application/json")
            else:
                try:
                    data = json.loads(raw) if raw else None
                except (ValueError, UnicodeDecodeError) as exc:
                    raise ApiError(
                        400, "the body is not valid JSON", details={"reason": str(exc)}
                    ) from None
            if not isinstance(data, dict):
                raise ApiError(422, "the body must be a JSON object")
            if _has_nul(data):
                raise ApiError(422, "NUL characters are not allowed in the body")
            kwargs["body"] = parse_model(ep.body, data, "body")
        return await ep.handler(request, **kwargs)

    endpoint.__name__ = ep.operation_id
    return Route(ep.path, endpoint, methods=[ep.method], name=ep.operation_id)
