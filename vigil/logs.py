"""Structured logging: one JSON object per line, carrying correlation ids when known.

Pass ids with ``log.info("msg", extra={"correlation_id": ..., "camera_id": ...})``; any
extra field is emitted. Secrets never go into `extra`; should one slip into a message,
an extra field or a traceback anyway, `vigil.redact.RedactingFilter` on the handler masks
it (URL passwords and registered secrets).
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime

from vigil.redact import install_log_redaction

_STANDARD = set(vars(logging.makeLogRecord({}))) | {"message", "asctime", "taskName"}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _STANDARD and not key.startswith("_"):
                out[key] = value
        if record.exc_text:  # already formatted (and redacted) by RedactingFilter
            out["exc"] = record.exc_text
        elif record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str)


def setup_logging(level: str | None = None, fmt: str | None = None) -> None:
    from vigil.settings import get_settings

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
