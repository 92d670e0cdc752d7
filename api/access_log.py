"""Access log and request ids: one JSON line per request (logger ``vigil.access``) and an
``X-Request-Id`` on every response.

A caller's ``X-Request-Id`` is kept when it is a short token of safe characters (so a
proxy's id follows the request through), otherwise a fresh one is made. The id is put in
the log context, so every line logged while the request is handled carries it too.

What is logged: method, path *without* the query string (queries can carry search terms),
route template, status, duration, client address. Never headers: they carry API keys.
"""

from __future__ import annotations

import logging
import re
import time
import uuid

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from vigil.logs import log_context

log = logging.getLogger("vigil.access")

HEADER = b"x-request-id"
_SAFE = re.compile(rb"^[A-Za-z0-9._:-]{1,64}$")


def request_id_of(scope: Scope) -> str:
    for name, value in scope.get("headers", []):
        if name == HEADER and _SAFE.match(value):
            return value.decode()
    return uuid.uuid4().hex


class AccessLogMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        rid = request_id_of(scope)
        status = 500
        start = time.perf_counter()

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = [h for h in message.get("headers", []) if h[0].lower() != HEADER]
                message = {**message, "headers": [*headers, (HEADER, rid.encode())]}
            await send(message)

        with log_context(request_id=rid):
            try:
                await self.app(scope, receive, send_wrapper)
            finally:
                client = scope.get("client") or ("", 0)
                route = scope.get("route")
                log.info("%s %s %d", scope["method"], scope["path"], status, extra={
                    "method": scope["method"], "path": scope["path"],
                    "route": getattr(route, "path", None), "status": status,
                    "duration_ms": round((time.perf_counter() - start) * 1e3, 2),
                    "client": client[0]})
