"""The notifier's Prometheus metrics (infra/prometheus/METRICS.md, rules in
infra/prometheus/rules/vigil.rules.yml: failing and backed-up deliveries)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

#: outcome: delivered | failed (gave up: NotificationFailed) | suppressed (quiet hours) |
#: deduplicated (a repeat within the cooldown) | retried (one failed attempt, will retry)
NOTIFICATIONS = Counter("vigil_alerts_notifications_total",
                        "Notification deliveries by channel and outcome", ["channel", "outcome"])
BACKLOG = Gauge("vigil_notify_backlog", "Deliveries waiting to be sent (incl. retries)")
OLDEST_PENDING = Gauge("vigil_notify_oldest_pending_seconds",
                       "Age of the oldest delivery still waiting (0 = none)")
#: from the alert event's occurred_at (AlertRaised time for a raise) to the channel's ack
LATENCY = Histogram("vigil_notify_delivery_latency_seconds",
                    "Alert event to confirmed delivery", ["channel"],
                    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 300, 900, 3600, 86400))
