"""The notifier's operations side, kept apart from delivery (agents/notifier.py): its
``/metrics``, ``/health`` and ``/health/ready`` endpoint, the backlog gauge and the
delivery counter.

Readiness means "alert events are being read": the consumer polled Kafka successfully in
the last `POLL_STALE_S` seconds. Backlog is the alert events on the notifier's partitions
that it has not handled yet (high watermark - position), refreshed after every poll: a
notifier stuck on a slow destination shows a growing backlog (VigilNotifierBacklog).
"""

from __future__ import annotations

import contextlib
import time
from typing import Any

from prometheus_client import Counter, Gauge

from vigil.ops_http import OpsServer

#: A poll older than this makes the notifier not ready (the loop polls every 0.5 s).
POLL_STALE_S = 30.0

BACKLOG = Gauge("vigil_notifier_backlog", "alert events not yet handled by this notifier")
NOTIFICATIONS = Counter("vigil_alerts_notifications_total",
                        "notification deliveries by channel and outcome",
                        ["channel", "outcome"])


class NotifierOps:
    def __init__(self, host: str, port: int) -> None:
        self.last_poll = 0.0
        self.server = OpsServer("notifier", host, port)
        self.server.check("kafka", self._polling)

    def start(self) -> NotifierOps:
        self.server.start()
        return self

    def stop(self) -> None:
        self.server.stop()

    def _polling(self) -> str:
        if self.last_poll == 0.0:
            raise RuntimeError("has not polled Kafka yet")
        age = time.monotonic() - self.last_poll
        if age > POLL_STALE_S:
            raise RuntimeError(f"last Kafka poll {age:.0f} s ago")
        return f"last poll {age:.1f} s ago"

    async def polled(self, consumer: Any) -> None:
        """After a successful poll: note it and refresh the backlog."""
        self.last_poll = time.monotonic()
        total = 0
        with contextlib.suppress(Exception):  # metrics never break delivery
            for tp in consumer.assignment():
                high = consumer.highwater(tp)
                if high is None:
                    continue
                total += max(0, int(high) - int(await consumer.position(tp)))
            BACKLOG.set(total)
