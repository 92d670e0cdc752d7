"""The notifier's delivery metrics (infra/prometheus/METRICS.md; rules in
infra/prometheus/rules/vigil.rules.yml). The delivery counter and the Kafka backlog live
in agents/notifier_ops.py with the notifier's ops endpoint; these are the outbox's."""

from __future__ import annotations

from prometheus_client import Gauge, Histogram

from agents.notifier_ops import NOTIFICATIONS

__all__ = ["LATENCY", "NOTIFICATIONS", "OLDEST_PENDING", "PENDING"]

#: outcomes of NOTIFICATIONS here: delivered | failed (gave up: NotificationFailed) |
#: retried (one failed attempt) | suppressed (quiet hours) | deduplicated (a repeat)
PENDING = Gauge("vigil_notifier_outbox_pending",
                "Deliveries in the outbox waiting to be sent (incl. retries)")
OLDEST_PENDING = Gauge("vigil_notifier_oldest_pending_seconds",
                       "Age of the oldest delivery still waiting (0 = none)")
#: from the alert event's occurred_at (AlertRaised time for a raise) to the channel's ack
LATENCY = Histogram("vigil_notifier_delivery_latency_seconds",
                    "Alert event to confirmed delivery", ["channel"],
                    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 300, 900, 3600, 86400))
