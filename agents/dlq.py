"""Dead-lettering from inside agents: the original bytes plus headers saying why.

An exception inside a Faust agent skips the event (docs/architecture.md, Faust), so
every handler catches, calls `dead_letter`, and goes on. Headers let an operator find
and replay the message.
"""

from __future__ import annotations

import logging
from typing import Any

from faust.types import EventT

from agents.codec import Undecodable
from schemas.codec import default_codec
from schemas.events import Event
from vigil.metrics import DLQ_MESSAGES

log = logging.getLogger(__name__)


def _raw_value(value: Any) -> bytes:
    if isinstance(value, Undecodable):
        return value.raw
    if isinstance(value, Event):
        return default_codec().encode(value)
    if isinstance(value, (bytes, bytearray)):
        return bytes(value)
    return repr(value).encode()


async def dead_letter(
    value: Any,
    reason: str,
    stage: str,
    event: EventT | None = None,
    key: bytes | str | None = None,
) -> None:
    """Send `value` to the DLQ topic with the reason, the stage and the source position."""
    from agents.app import topics

    headers: dict[str, bytes] = {
        "vigil.error": reason[:2000].encode(),
        "vigil.stage": stage.encode(),
    }
    if event is not None:
        msg = event.message
        headers["vigil.source_topic"] = str(msg.topic).encode()
        headers["vigil.source_partition"] = str(msg.partition).encode()
        headers["vigil.source_offset"] = str(msg.offset).encode()
        if key is None:
            key = msg.key
    if isinstance(key, str):
        key = key.encode()
    log.warning("dead-lettered", extra={"stage": stage, "reason": reason[:500]})
    await topics.dlq.send(key=key, value=_raw_value(value), headers=headers)
    DLQ_MESSAGES.labels(stage).inc()
