"""The notifier's operations side, kept apart from delivery (agents/notifier.py): its
``/metrics``, ``/health`` and ``/health/ready`` endpoint, the backlog gauge, the delivery
counter, and the Alertmanager receiver.

Alertmanager receiver: ``POST /alertmanager/<p1|p2|p3|p4>`` takes Alertmanager's webhook
body (infra/alertmanager/alertmanager.yml routes each priority to its path) and delivers
every alert in it, firing or resolved, to the notifier's destinations through the same
channels as operator alerts, so on-call needs one set of channels. The payload says
``kind: ops_alert`` and carries the priority, status, alert name, summary, description,
runbook link and labels; its event id is derived from the alert's fingerprint, status and
times, so Alertmanager's re-sends are deduplicated by receivers like any other
notification (``X-Vigil-Event-Id``). A delivery that fails answers 503 and Alertmanager
retries.

Readiness means "alert events are being read": the consumer polled Kafka successfully in
the last `POLL_STALE_S` seconds. Backlog is the alert events on the notifier's partitions
that it has not handled yet (high watermark - position), refreshed after every poll: a
notifier stuck on a slow destination shows a growing backlog (VigilNotifierBacklog).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
import uuid
from collections.abc import Callable, Coroutine
from typing import Any

from prometheus_client import Counter, Gauge

from vigil.ops_http import OpsServer

log = logging.getLogger(__name__)

#: A poll older than this makes the notifier not ready (the loop polls every 0.5 s).
POLL_STALE_S = 30.0

BACKLOG = Gauge("vigil_notifier_backlog", "alert events not yet handled by this notifier")
NOTIFICATIONS = Counter("vigil_alerts_notifications_total",
                        "notification deliveries by channel and outcome",
                        ["channel", "outcome"])


PRIORITIES = ("p1", "p2", "p3", "p4")
OPS_ALERTS = Counter("vigil_notifier_ops_alerts_total",
                     "alerts received from Alertmanager", ["priority", "status"])
#: fixed namespace of the ops-alert event ids (uuid5), so ids are stable across restarts
_OPS_NS = uuid.UUID("6f1d3c2e-8b1a-4e55-9a7e-3d2f6b0c9e41")
#: Alertmanager times out a webhook after 10 s by default; answer before that
DELIVERY_TIMEOUT_S = 9.0

#: a coroutine function: it is run on the notifier's loop from the ops server's thread
Deliver = Callable[[str, dict[str, Any]], Coroutine[Any, Any, bool]]


def ops_alerts(body: Any, priority: str) -> list[tuple[str, dict[str, Any]]]:
    """Alertmanager's webhook body -> [(event id, payload)], one per alert; ValueError
    naming what is wrong for a body that is not one."""
    if not isinstance(body, dict) or not isinstance(body.get("alerts"), list):
        raise ValueError("not an Alertmanager webhook body: no 'alerts' list")
    out = []
    for n, alert in enumerate(body["alerts"]):
        if not isinstance(alert, dict) or not isinstance(alert.get("labels"), dict):
            raise ValueError(f"alerts[{n}] has no 'labels' object")
        labels = {str(k): str(v) for k, v in alert["labels"].items()}
        ann = alert.get("annotations")
        notes: dict[str, Any] = ann if isinstance(ann, dict) else {}
        status = str(alert.get("status") or body.get("status") or "firing")
        starts, ends = str(alert.get("startsAt", "")), str(alert.get("endsAt", ""))
        fingerprint = str(alert.get("fingerprint") or sorted(labels.items()))
        event_id = str(uuid.uuid5(_OPS_NS, f"{fingerprint}|{status}|{starts}|"
                                             f"{ends if status == 'resolved' else ''}"))
        out.append((event_id, {
            "kind": "ops_alert", "priority": priority, "status": status,
            "alertname": labels.get("alertname", ""), "summary": notes.get("summary", ""),
            "description": notes.get("description", ""),
            "runbook_url": notes.get("runbook_url", ""), "labels": labels,
            "starts_at": starts, "ends_at": ends if status == "resolved" else None,
        }))
    return out


async def deliver_ops_alert(notifier: Any, event_id: str, payload: dict[str, Any]) -> bool:
    """Send one ops alert to every channel of `notifier` (one attempt each: Alertmanager
    retries the whole group on a 503). True when every channel took it."""
    from agents.notify_channels import Message

    ok = True
    for name, channel in notifier.channels.items():
        msg = Message(delivery_id=str(uuid.uuid5(_OPS_NS, f"{event_id}|{name}")),
                      event_type="OpsAlert", alert_event_id=event_id, payload=payload,
                      route_id=f"alertmanager-{payload['priority']}")
        try:
            outcome = await channel.send(msg)
        except Exception:  # a channel that cannot render an ops alert: not delivered
            log.exception("ops alert not sent", extra={"channel": name})
            ok = False
            NOTIFICATIONS.labels(name, "failed").inc()
            continue
        NOTIFICATIONS.labels(name, "delivered" if outcome.ok else "failed").inc()
        ok = ok and outcome.ok
    return ok


class NotifierOps:
    def __init__(self, host: str, port: int) -> None:
        self.last_poll = 0.0
        self.server = OpsServer("notifier", host, port)
        self.server.check("kafka", self._polling)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._deliver: Deliver | None = None
        for priority in PRIORITIES:
            self.server.post(f"/alertmanager/{priority}",
                             functools.partial(self._alertmanager, priority=priority))

    def attach(self, loop: asyncio.AbstractEventLoop, deliver: Deliver) -> None:
        """Where ops alerts go: `deliver` runs on the notifier's own event loop."""
        self._loop, self._deliver = loop, deliver

    def _alertmanager(self, body: Any, priority: str) -> tuple[int, Any]:
        try:
            alerts = ops_alerts(body, priority)
        except ValueError as exc:
            return 400, {"error": "bad_request", "message": str(exc)}
        if self._loop is None or self._deliver is None:
            return 503, {"error": "unavailable", "message": "notifier not started yet"}
        failed = 0
        for event_id, payload in alerts:
            OPS_ALERTS.labels(priority, payload["status"]).inc()
            fut = asyncio.run_coroutine_threadsafe(self._deliver(event_id, payload), self._loop)
            try:
                failed += 0 if fut.result(timeout=DELIVERY_TIMEOUT_S) else 1
            except Exception:  # timeout or channel error: Alertmanager will retry
                fut.cancel()
                failed += 1
        if failed:
            return 503, {"error": "delivery_failed",
                         "message": f"{failed} of {len(alerts)} alert(s) not delivered"}
        return 200, {"delivered": len(alerts)}

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
