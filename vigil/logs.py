"""Structured logging: one JSON object per line, with the ids of the event being handled.

Every line carries ``timestamp``, ``level``, ``service``, ``version``, ``host``, ``logger``,
``message`` and, while a handler works on an event, that event's ``event_id``,
``correlation_id`` and ``causation_id`` (docs/operations.md, "Logs"). Handlers mark the
event in hand with ``with event_context(event): ...``; the ids then ride on every line
logged below it (a contextvar, so concurrent asyncio tasks keep theirs apart). The API's
``request_id`` travels the same way.

Extra fields: ``log.info("msg", extra={"camera_id": ...})``; any extra field is emitted.
Secrets never go into `extra`; should one slip into a message, an extra field or a
traceback anyway, `vigil.redact.RedactingFilter` on the handler masks it (URL passwords
and registered secrets).

Third-party libraries that install their own handlers (Faust/mode, uvicorn) are routed
back here: `setup_logging` owns the root logger's only handler, and the Faust worker calls
it again from its logging hook (agents/faust_fixes.py) so Faust's setup cannot replace it.
"""

from __future__ import annotations

import contextlib
import contextvars
import json
import logging
import os
import socket
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

from vigil import __version__
from vigil.redact import install_log_redaction

_STANDARD = set(vars(logging.makeLogRecord({}))) | {"message", "asctime", "taskName"}

#: The fields every JSON line has (the log test checks them).
REQUIRED_FIELDS = ("timestamp", "level", "service", "version", "host", "logger", "message")

#: ids of the event (or request) being handled in this task/thread.
#: A tuple of pairs (immutable, so one default is safe to share).
_context: contextvars.ContextVar[tuple[tuple[str, str], ...]] = contextvars.ContextVar(
    "vigil_log_context", default=())

_service = os.environ.get("VIGIL_SERVICE_NAME", "vigil")
_host = os.environ.get("HOSTNAME") or socket.gethostname()

#: `vigil <command>` -> service name in the logs
_SERVICE_OF_COMMAND = {"project": "projector", "edge": "edge", "worker": "worker",
                       "api": "api", "notifier": "notifier"}


def service_for_command(command: str | None) -> str:
    return _SERVICE_OF_COMMAND.get(command or "", command or "vigil")


@contextlib.contextmanager
def log_context(**ids: str | None) -> Iterator[None]:
    """Add these ids to every line logged inside the block (None values are left out)."""
    merged = {**dict(_context.get()), **{k: v for k, v in ids.items() if v}}
    token = _context.set(tuple(merged.items()))
    try:
        yield
    finally:
        _context.reset(token)


def event_context(event: Any) -> contextlib.AbstractContextManager[None]:
    """`log_context` with the event's own id, correlation id and causation id."""
    return log_context(event_id=getattr(event, "event_id", None),
                       correlation_id=getattr(event, "correlation_id", None),
                       causation_id=getattr(event, "causation_id", None))


def current_context() -> dict[str, str]:
    return dict(_context.get())


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "timestamp": datetime.fromtimestamp(record.created, UTC).isoformat(
                timespec="milliseconds"),
            "level": record.levelname.lower(),
            "service": _service,
            "version": __version__,
            "host": _host,
            "logger": record.name,
            "message": record.getMessage(),
        }
        out.update(_context.get())
        for key, value in vars(record).items():
            if key not in _STANDARD and not key.startswith("_") and key not in out:
                out[key] = value
        if record.exc_text:  # already formatted (and redacted) by RedactingFilter
            out["exc"] = record.exc_text
        elif record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str)


def setup_logging(level: str | None = None, fmt: str | None = None,
                  service: str | None = None) -> None:
    """Give the root logger one handler (JSON or text) on stderr, and route the loggers
    of libraries that bring their own handlers (uvicorn, Faust/mode) through it."""
    from vigil.settings import get_settings

    global _service
    if service:
        _service = os.environ.get("VIGIL_SERVICE_NAME", service)
    settings = get_settings()
    handler = logging.StreamHandler(sys.stderr)
    if (fmt or settings.log_format) == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    install_log_redaction(handler)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel((level or settings.log_level).upper())
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access", "faust", "mode", "aiokafka"):
        lib = logging.getLogger(name)
        lib.handlers[:] = []
        lib.propagate = True
