"""Helpers shared by the resource modules: opaque keyset cursors, page sizes, site scope,
JSON responses and presigned object-store URLs."""

from __future__ import annotations

import base64
import binascii
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import anyio.to_thread
import sqlalchemy as sa
from pydantic import BaseModel, Field
from sqlalchemy.dialects.postgresql import aggregate_order_by
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from api.auth import Principal
from api.deps import deps_of
from api.errors import ApiError
from vigil.objects import split_ref

#: Path parameters longer than this are never ids (and are not worth a query).
MAX_ID_LEN = 200


class Page(BaseModel):
    """Keyset pagination: pass `next_cursor` back as `cursor` for the next page."""

    next_cursor: str | None = None


class PageQuery(BaseModel):
    limit: int | None = Field(None, ge=1, description="page size; capped by the server")
    cursor: str | None = Field(None, max_length=1000, description="opaque, from next_cursor")


def page_size(request: Request, limit: int | None) -> int:
    api = deps_of(request).api
    return min(limit or api.default_page_size, api.max_page_size)


def encode_cursor(*values: Any) -> str:
    """Opaque to clients; it carries the sort key of the last row of the page."""
    raw = json.dumps(
        [v.isoformat() if isinstance(v, datetime) else v for v in values],
        separators=(",", ":"),
    ).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str, kinds: tuple[type, ...]) -> list[Any]:
    """The cursor's values, typed as `kinds`; a tampered cursor is a 400, never a 500."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        values = json.loads(raw)
        if not isinstance(values, list) or len(values) != len(kinds):
            raise ValueError("wrong shape")
        out: list[Any] = []
        for value, kind in zip(values, kinds, strict=True):
            if kind is datetime:
                dt = datetime.fromisoformat(value)
                if dt.tzinfo is None:
                    raise ValueError("naive timestamp")
                out.append(dt)
            elif kind is str:
                if not isinstance(value, str):
                    raise ValueError("not a string")
                out.append(value)
            elif kind is int:
                if not isinstance(value, int) or isinstance(value, bool):
                    raise ValueError("not an integer")
                out.append(value)
            else:
                raise ValueError("unsupported")
        return out
    except (ValueError, TypeError, binascii.Error, UnicodeDecodeError) as exc:
        raise ApiError(400, "invalid cursor", details={"reason": str(exc)}) from None


def check_id(value: str, what: str) -> str:
    if not value or len(value) > MAX_ID_LEN or "\x00" in value:
        raise ApiError(404, f"{what} not found")
    return value


def check_range(since: datetime | None, until: datetime | None) -> None:
    if since is not None and until is not None and since > until:
        raise ApiError(422, "since must not be after until",
                       details={"since": since.isoformat(), "until": until.isoformat()})


def site_filter(principal: Principal, column: sa.ColumnElement[Any]) -> sa.ColumnElement[bool]:
    """The WHERE clause limiting rows to the key's sites (true for unscoped keys)."""
    if principal.sites is None:
        return sa.true()
    return column.in_(sorted(principal.sites))


def iso(value: datetime | None) -> str | None:
    return value.astimezone(UTC).isoformat() if value is not None else None


def json_response(model: BaseModel, status: int = 200) -> JSONResponse:
    return JSONResponse(model.model_dump(mode="json"), status_code=status)


def bound_page(stmt: sa.Select[Any], model: type[BaseModel], order: list[Any],
               keys: tuple[str, str]) -> sa.Select[str, int, Any, Any]:
    """Wrap a page query (`stmt`: the model's columns by name, filtered with bound
    parameters only) so that PostgreSQL returns the page already as JSON text, plus the
    row count (``:lim`` + 1 means there is a next page) and the sort `keys` of the
    page's last row (for the cursor). Parameters: ``lim`` (page size) and ``lim1``
    (``lim`` + 1) besides the caller's own.

    This is the listings' hot path, and both halves of it were Python work that cost
    several times the query: parsing 50 rows x 25 columns into objects and encoding
    them again (PostgreSQL's JSON encoder does it in C while reading the rows), and
    building the SQLAlchemy statement (callers cache the result of this function per
    query shape and pass values as parameters). Timestamps come out as ISO 8601 in UTC
    (the API's sessions run in UTC).
    """
    lim = sa.bindparam("lim", type_=sa.Integer)
    page = (stmt.add_columns(sa.func.row_number().over(order_by=order).label("_rn"))
            .order_by(*order).limit(sa.bindparam("lim1", type_=sa.Integer))
            .subquery("page"))
    fields = [x for n in model.model_fields for x in (sa.literal_column(f"'{n}'"), page.c[n])]
    obj = sa.func.json_build_object(*fields)
    rn = page.c._rn
    return sa.select(
        sa.cast(sa.func.coalesce(
            sa.func.json_agg(aggregate_order_by(obj, rn)).filter(rn <= lim),
            sa.literal_column("'[]'::json")), sa.Text),
        sa.func.count(),
        sa.func.max(page.c[keys[0]]).filter(rn == lim),
        sa.func.max(page.c[keys[1]]).filter(rn == lim),
    )


def bound_sites(column: sa.ColumnElement[Any]) -> sa.ColumnElement[bool]:
    """`site_filter` for cached statements: the key's sites as parameter ``sites``."""
    return column.in_(sa.bindparam("sites", expanding=True))


def page_response(row: Any, limit: int) -> Response:
    """The JSON page from a `json_page` row; the items are passed through untouched."""
    items, count, k1, k2 = row
    cursor = encode_cursor(k1, k2) if count > limit else None
    body = f'{{"items":{items},"next_cursor":{json.dumps(cursor)}}}'
    return Response(body.encode(), media_type="application/json")


async def presign(request: Request, ref: str | None, default_bucket: str) -> str | None:
    """A short-lived GET URL for an object; call only after the site-scope check."""
    deps = deps_of(request)
    if not ref or deps.object_store is None:
        return None
    bucket, key = split_ref(ref, default_bucket, deps.settings.buckets)
    expiry = timedelta(seconds=deps.api.presign_expiry_s)
    try:
        return await anyio.to_thread.run_sync(
            lambda: deps.object_store.presigned_get_object(bucket, key, expires=expiry)
        )
    except Exception:  # presigning is local signing; a failure must not fail the read
        return None
