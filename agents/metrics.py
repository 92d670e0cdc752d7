"""Prometheus metrics of the Faust worker, served at ``/metrics`` on Faust's web server.

Why on the Faust web server rather than a second `prometheus_client` HTTP server: the
worker already listens there (``VIGIL_WORKER_WEB_PORT``, bound to ``VIGIL_METRICS_HOST``)
for liveness, so each replica exposes one port and Prometheus finds every replica through
Docker DNS on that single port (infra/prometheus/prometheus.yml, job ``vigil-worker``).

Exported here (the default registry, so every module's metrics appear):
- ``vigil_inference_*``: the Triton client's metrics are imported below so the names are
  always present (agents/inference.py adds its own when the inference agent is loaded);
- ``vigil_consumer_lag{group,topic,partition}``: per assigned partition, the partition's
  high watermark minus this worker's committed offset. Each worker reports only its own
  partitions, so ``sum by (group, topic)`` over replicas is the group's lag. Computed in a
  timer from offsets the consumer already holds in memory: no broker round trip;
- ``vigil_dlq_messages_total{stage}``: defined in vigil/metrics.py, incremented by
  agents/dlq.py.
"""

from __future__ import annotations

import logging

from faust.types import TP
from faust.web import Request, Response, View
from prometheus_client import REGISTRY, Gauge, generate_latest

import agents.triton_client  # noqa: F401  (registers vigil_inference_triton_* and in-flight)
import vigil.metrics  # noqa: F401  (registers vigil_dlq_messages_total)
from agents.app import app

log = logging.getLogger(__name__)

#: The Prometheus text exposition format that generate_latest() writes.
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
LAG_INTERVAL_S = 5.0

CONSUMER_LAG = Gauge(
    "vigil_consumer_lag", "Messages behind the end of the partition (high watermark - committed)",
    ["group", "topic", "partition"],
)
_reported: set[tuple[str, str, str]] = set()


@app.page("/metrics")
async def metrics_page(view: View, request: Request) -> Response:
    """Every metric of this worker process in the Prometheus text format."""
    return view.bytes(generate_latest(), headers={"Content-Type": CONTENT_TYPE})


@app.page("/health")
async def health_page(view: View, request: Request) -> Response:
    """Liveness: the worker's event loop answers."""
    return view.json({"status": "ok", "service": "worker"})


def readiness() -> tuple[bool, dict[str, dict[str, object]]]:
    """The worker is ready when its consumer has partitions and is not rebalancing, and
    (where the inference agent runs) Triton is not reported unreachable."""
    checks: dict[str, dict[str, object]] = {}
    try:
        assigned = len(app.consumer.assignment())
        if app.rebalancing:
            checks["kafka"] = {"status": "fail", "detail": "rebalancing"}
        elif not assigned:
            checks["kafka"] = {"status": "fail", "detail": "no partitions assigned yet"}
        else:
            checks["kafka"] = {"status": "ok", "detail": f"{assigned} partition(s) assigned"}
    except Exception as exc:  # consumer not started yet
        checks["kafka"] = {"status": "fail", "detail": f"{type(exc).__name__}: {exc}"}
    degraded = REGISTRY.get_sample_value("vigil_inference_degraded")
    if degraded is not None:
        checks["triton"] = ({"status": "fail", "detail": "Triton unreachable (degraded)"}
                            if degraded else {"status": "ok", "detail": None})
    return all(c["status"] == "ok" for c in checks.values()), checks


@app.page("/health/ready")
async def ready_page(view: View, request: Request) -> Response:
    ok, checks = readiness()
    return view.json({"status": "ok" if ok else "fail", "service": "worker",
                      "checks": checks}, status=200 if ok else 503)


def _committed(consumer: object, tp: TP) -> int | None:
    """The offset this worker will resume from on `tp`, from the consumer's own books.

    Faust keeps it in private maps (no public accessor); a missing attribute after an
    upgrade must only blank the gauge, never break the worker, hence the getattr.
    """
    for name in ("_committed_offset", "_read_offset"):
        offset = getattr(consumer, name, {}).get(tp)
        if offset is not None:
            return int(offset)
    return None


def update_consumer_lag() -> None:
    """Refresh vigil_consumer_lag for the partitions assigned to this worker right now;
    series of partitions it no longer owns are removed so a rebalance leaves no ghosts."""
    consumer = app.consumer
    try:
        assigned = consumer.assignment()
    except Exception:  # consumer not started yet / stopping
        return
    group = app.conf.id
    seen: set[tuple[str, str, str]] = set()
    for tp in assigned:
        try:
            high = consumer.highwater(tp)
        except Exception:
            continue
        if high is None:  # nothing fetched yet on this partition
            continue
        committed = _committed(consumer, tp)
        labels = (group, tp.topic, str(tp.partition))
        CONSUMER_LAG.labels(*labels).set(max(0, int(high) - (committed or 0)))
        seen.add(labels)
    for labels in _reported - seen:
        CONSUMER_LAG.remove(*labels)
    _reported.clear()
    _reported.update(seen)


@app.timer(LAG_INTERVAL_S)
async def consumer_lag_timer() -> None:
    """Every worker, not just the leader: each reports the partitions it owns."""
    try:
        update_consumer_lag()
    except Exception:  # metrics must never take the worker down
        log.exception("consumer lag update failed")
