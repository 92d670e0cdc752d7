"""The operations endpoint of the processes that are not web servers (edge, projector,
notifier): ``/metrics``, ``/health`` and ``/health/ready`` on one port.

Why one small threaded server instead of `prometheus_client.start_http_server`: that one
answers the metrics on *every* path, so an orchestrator probing ``/health/ready`` got 200
from a process that had lost Kafka. Here liveness is static (the process answers) and
readiness runs the process's own checks, each a plain callable that returns a detail
string or raises; any raise makes ``/health/ready`` answer 503 naming the part
(docs/operations.md, "Health").

Extra POST routes (the notifier's Alertmanager receiver) are registered with `post`.
The server runs in daemon threads, so it works beside asyncio loops and blocking loops
alike; handlers must be quick and thread-safe.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, generate_latest

log = logging.getLogger(__name__)

#: A readiness check: returns a short detail (or None) when healthy, raises when not.
Check = Callable[[], str | None]
#: A POST handler: (parsed JSON body) -> (status code, JSON-able answer).
PostHandler = Callable[[Any], tuple[int, Any]]

MAX_BODY = 1 << 20


class OpsServer:
    """`/metrics`, `/health`, `/health/ready` (and registered POST routes) on host:port."""

    def __init__(self, service: str, host: str, port: int,
                 registry: CollectorRegistry = REGISTRY) -> None:
        self.service = service
        self.registry = registry
        self.checks: dict[str, Check] = {}
        self.posts: dict[str, PostHandler] = {}
        self._server = ThreadingHTTPServer((host, port), self._handler())
        self._server.daemon_threads = True
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    def check(self, name: str, fn: Check) -> None:
        self.checks[name] = fn

    def post(self, path: str, fn: PostHandler) -> None:
        self.posts[path] = fn

    def ready(self) -> tuple[bool, dict[str, dict[str, Any]]]:
        """Run every readiness check; (all ok, {name: {status, latency_ms, detail}})."""
        out: dict[str, dict[str, Any]] = {}
        for name, fn in self.checks.items():
            started = time.perf_counter()
            try:
                detail, status = fn(), "ok"
            except Exception as exc:  # a check reports, it never raises
                detail, status = f"{type(exc).__name__}: {str(exc)[:200]}", "fail"
            out[name] = {"status": status, "detail": detail,
                         "latency_ms": round((time.perf_counter() - started) * 1e3, 2)}
        return all(c["status"] == "ok" for c in out.values()), out

    def start(self) -> OpsServer:
        self._thread = threading.Thread(target=self._server.serve_forever,
                                        name=f"{self.service}-ops-http", daemon=True)
        self._thread.start()
        log.info("ops endpoint listening", extra={"port": self.port})
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        ops = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                """Scrapes and probes are not logged (one line every few seconds)."""

            def _send(self, code: int, body: bytes, ctype: str) -> None:
                self.send_response(code)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def _json(self, code: int, doc: Any) -> None:
                self._send(code, json.dumps(doc, default=str).encode(), "application/json")

            def do_GET(self) -> None:
                path = self.path.split("?", 1)[0]
                if path == "/metrics":
                    self._send(200, generate_latest(ops.registry), CONTENT_TYPE_LATEST)
                elif path == "/health":
                    self._json(200, {"status": "ok", "service": ops.service})
                elif path == "/health/ready":
                    ok, checks = ops.ready()
                    self._json(200 if ok else 503, {"status": "ok" if ok else "fail",
                                                    "service": ops.service, "checks": checks})
                else:
                    self._json(404, {"error": "not_found", "message": f"no route {path}"})

            def do_POST(self) -> None:
                path = self.path.split("?", 1)[0]
                fn = ops.posts.get(path)
                if fn is None:
                    self._json(404, {"error": "not_found", "message": f"no route {path}"})
                    return
                length = int(self.headers.get("Content-Length") or 0)
                if length > MAX_BODY:
                    self._json(413, {"error": "too_large", "message": "body over 1 MiB"})
                    return
                try:
                    body = json.loads(self.rfile.read(length) or b"null")
                except ValueError as exc:
                    self._json(400, {"error": "bad_json", "message": str(exc)[:200]})
                    return
                try:
                    code, answer = fn(body)
                except Exception as exc:
                    log.exception("POST %s failed", path)
                    code, answer = 503, {"error": "unavailable",
                                         "message": f"{type(exc).__name__}: {str(exc)[:200]}"}
                self._json(code, answer)

        return Handler
