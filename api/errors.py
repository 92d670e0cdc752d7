"""Every error the API answers is JSON ``{error, message, details}``.

Client input must never produce a 500: handlers map validation problems to 400/422,
and a catch-all turns anything unexpected into a 500 whose body leaks nothing (the
traceback goes to the log with the request id, not to the client).
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Mapping
from typing import Any

from pydantic import ValidationError
from sqlalchemy.exc import DataError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse

from vigil.redact import redact, redact_value

log = logging.getLogger(__name__)

_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    406: "not_acceptable",
    409: "conflict",
    410: "gone",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "validation_error",
    429: "rate_limited",
    500: "internal_error",
    503: "unavailable",
    504: "timeout",
}


class ApiError(Exception):
    """Raised by handlers to answer an error; `error` is a stable machine-readable code."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        error: str | None = None,
        details: Any = None,
        headers: dict[str, str] | None = None,
    ):
        super().__init__(message)
        self.status = status
        self.error = error or _CODES.get(status, "error")
        self.message = message
        self.details = details if details is not None else {}
        self.headers = headers


def error_response(
    status: int,
    message: str,
    error: str | None = None,
    details: Any = None,
    headers: Mapping[str, str] | None = None,
) -> JSONResponse:
    # Messages and details may quote what a dependency said (a URL with credentials);
    # nothing configured as a secret leaves the API (vigil.redact).
    body = {
        "error": error or _CODES.get(status, "error"),
        "message": redact(message),
        "details": redact_value(details) if details is not None else {},
    }
    return JSONResponse(body, status_code=status, headers=headers)


def validation_details(exc: ValidationError) -> list[dict[str, Any]]:
    """Pydantic errors without the raw input echoed back (it may be large or sensitive)."""
    return [
        {"loc": [str(p) for p in e["loc"]], "msg": e["msg"], "type": e["type"]}
        for e in exc.errors(include_url=False, include_input=False, include_context=False)
    ]


async def _api_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ApiError)
    return error_response(exc.status, exc.message, exc.error, exc.details, exc.headers)


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, HTTPException)
    return error_response(exc.status_code, str(exc.detail), headers=exc.headers)


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ValidationError)
    return error_response(422, "request failed validation", details=validation_details(exc))


async def _data_error(request: Request, exc: Exception) -> JSONResponse:
    """PostgreSQL refused a value the validation let through (out-of-range timestamp,
    odd encoding): the client's input, so a 400 and not a 500."""
    log.warning("database refused a value", extra={"path": request.url.path,
                                                   "reason": type(exc).__name__})
    return error_response(400, "a parameter has a value the database cannot use")


async def _db_unavailable(request: Request, exc: Exception) -> JSONResponse:
    """The database is down, restarting, too slow (statement timeout) or the pool is
    exhausted: the service is unavailable for now, which is not the client's fault
    nor a bug. A dead pooled connection also lands here once, then is replaced."""
    log.warning("database unavailable", extra={"path": request.url.path,
                                               "reason": type(exc).__name__})
    return error_response(503, "the read model is unavailable; retry shortly",
                          headers={"Retry-After": "1"})


async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
    request_id = str(uuid.uuid4())
    log.exception(
        "unhandled API error",
        extra={"request_id": request_id, "path": request.url.path, "method": request.method},
    )
    return error_response(500, "internal error", details={"request_id": request_id})


EXCEPTION_HANDLERS = {
    ApiError: _api_error,
    HTTPException: _http_error,
    ValidationError: _validation_error,
    DataError: _data_error,
    OperationalError: _db_unavailable,
    InterfaceError: _db_unavailable,
    PoolTimeout: _db_unavailable,
    Exception: _unexpected,
}
