"""Site health in a real worker: an edge that stops heartbeating goes offline on time
(three missed intervals), comes back with its next heartbeat, and both are alerts."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from schemas.events import EdgeHeartbeat
from schemas.producer import EventProducer
from tests.integration.alerts_support import Reader, Worker, module_env, of_type

pytestmark = pytest.mark.integration
INTERVAL_S = 1.0


def heartbeat(edge: str) -> EdgeHeartbeat:
    return EdgeHeartbeat.create(
        producer="test", occurred_at=datetime.now(UTC), edge_id=edge, site_id="site-1",
        version="t", interval_s=INTERVAL_S, streams=[], disk_free_bytes=1,
        memory_rss_bytes=1, spool_backlog=0, spool_evicted=0,
    )


@pytest.fixture
def env(stack: dict[str, str], tmp_path: Path) -> Iterator[dict]:
    yield from module_env(stack, tmp_path, {
        "VIGIL_WORKER_AGENTS": "alerts,health",
        "VIGIL_HEALTH_TICK_S": "0.5",
        "VIGIL_ALERTS_TICK_S": "5",
    })


def test_edge_offline_then_online(env: dict[str, str], tmp_path: Path) -> None:
    worker = Worker(env, tmp_path / "worker.log")
    worker.start()
    health, alerts = Reader("health"), Reader("alerts")
    producer = EventProducer()
    try:
        for _ in range(4):
            producer.send("heartbeats", "edge-1", heartbeat("edge-1"))
            producer.flush()
            time.sleep(INTERVAL_S / 2)
        last = datetime.now(UTC)
        evs = health.wait_for(lambda e: bool(of_type(e, "EdgeOffline")), 30)
        (off,) = of_type(evs, "EdgeOffline")
        silence = (off.occurred_at - off.last_seen_at).total_seconds()
        # three missed intervals, noticed within a tick (+ scheduling slack on a busy box)
        assert 3 * INTERVAL_S <= silence <= 3 * INTERVAL_S + 2.5, silence
        assert off.last_seen_at <= last
        producer.send("heartbeats", "edge-1", heartbeat("edge-1"))
        producer.flush()
        evs = health.wait_for(lambda e: bool(of_type(e, "EdgeOnline")), 30)
        assert of_type(evs, "EdgeOnline")[0].edge_id == "edge-1"
        key = "edge|edge-1|offline"
        evs = alerts.wait_for(lambda e: bool(of_type(e, "AlertResolved")), 30, key)
        (raised,) = of_type(evs, "AlertRaised")
        assert raised.severity == "critical" and raised.site_id == "site-1"
        assert of_type(evs, "AlertResolved")[0].automatic
    finally:
        health.close()
        alerts.close()
        worker.stop()
