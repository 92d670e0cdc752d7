"""One redaction function for every string that leaves a process: `redact`.

Camera URLs carry credentials (``rtsp://user:pass@host/...``), and they reach error
messages by many paths: our own messages, PyAV/ffmpeg error strings that embed the URL,
exceptions of any library. Rather than hoping each message is built carefully, every
place that turns a string into something durable or visible (a log line, an event such
as ``StreamDown.reason``, an API response, a DLQ header) passes it through `redact`, and
the logging filter `RedactingFilter` does it again for anything that slipped through.

Two things are masked:
- the password part of any ``scheme://user:password@`` authority (the user name stays,
  it helps an operator and is not a secret);
- every value registered with `register_secret` (passwords read from secret files or the
  environment, Kafka SASL passwords, the object store secret), wherever it appears, also
  in its URL-encoded form, because ffmpeg may print the decoded URL.

See docs/security.md for the threat model this is part of.
"""

from __future__ import annotations

import logging
import re
import threading
from typing import Any
from urllib.parse import quote

MASK = "***"

# scheme://user:password@ — the password may contain '@' when not percent-encoded, so it
# runs to the last '@' before the host part ends (a '/', whitespace or a quote).
_USERINFO = re.compile(
    r"(?P<scheme>\b[A-Za-z][A-Za-z0-9+.-]*://)(?P<user>[^:/\s@'\"]*):(?P<pw>[^/\s'\"]*)@")

#: Secrets shorter than this are not registered: masking "a" everywhere would destroy
#: messages and protect nothing (such a secret is not one).
MIN_SECRET_LEN = 4

_lock = threading.Lock()
_secrets: set[str] = set()
_pattern: re.Pattern[str] | None = None


def register_secret(value: str | None) -> None:
    """Mask `value` (and its URL-encoded form) in everything `redact` sees from now on."""
    global _pattern
    if not value or len(value) < MIN_SECRET_LEN:
        return
    with _lock:
        forms = {value, quote(value, safe=""), quote(value)}
        if forms <= _secrets:
            return
        _secrets.update(forms)
        # longest first, so a secret that contains another is masked whole
        alternatives = sorted(_secrets, key=len, reverse=True)
        _pattern = re.compile("|".join(re.escape(s) for s in alternatives))


def registered_secrets() -> frozenset[str]:
    """The registered values (for tests that check nothing leaked)."""
    with _lock:
        return frozenset(_secrets)


def redact(text: str) -> str:
    """`text` with URL passwords and registered secrets replaced by ``***``."""
    if not text:
        return text
    out = _USERINFO.sub(_mask_userinfo, text)
    pattern = _pattern
    if pattern is not None:
        out = pattern.sub(MASK, out)
    return out


def _mask_userinfo(m: re.Match[str]) -> str:
    if m.group("pw") == MASK:
        return m.group(0)
    return f"{m.group('scheme')}{m.group('user')}:{MASK}@"


def redact_value(value: Any) -> Any:
    """`redact` applied to strings, recursively through lists, tuples and dicts."""
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, dict):
        return {k: redact_value(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(redact_value(v) for v in value)
    if isinstance(value, BaseException):
        return redact(str(value))
    return value


_STANDARD = set(vars(logging.makeLogRecord({}))) | {"message", "asctime", "taskName"}


class RedactingFilter(logging.Filter):
    """The safety net: every record a handler emits is redacted, message, extra fields and
    traceback alike (a traceback quotes the exception message, URL included)."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a malformed record: let logging report it as usual
            return True
        record.msg = redact(message)
        record.args = None
        for key, value in list(vars(record).items()):
            if key not in _STANDARD and not key.startswith("_"):
                setattr(record, key, redact_value(value))
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        if record.stack_info:
            record.stack_info = redact(record.stack_info)
        return True


_factory_installed = False


def install_log_redaction(*handlers: logging.Handler) -> None:
    """Redact every log record of this process, whichever handler emits it.

    The record factory masks message and traceback as each record is made (Faust,
    uvicorn and librdkafka callbacks install handlers of their own); `RedactingFilter`
    on the given handlers also covers ``extra`` fields, which are set after the factory.
    """
    global _factory_installed
    for handler in handlers:
        if not any(isinstance(f, RedactingFilter) for f in handler.filters):
            handler.addFilter(RedactingFilter())
    with _lock:
        if _factory_installed:
            return
        _factory_installed = True
    previous = logging.getLogRecordFactory()
    scrub = RedactingFilter()

    def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = previous(*args, **kwargs)
        scrub.filter(record)
        return record

    logging.setLogRecordFactory(factory)
