"""Two workers share the alert partitions; one is SIGKILLed with deadlines pending in its
partitions: the survivor takes them over from the changelog and every incident escalates
exactly once."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from agents.alert_state import incident_key
from schemas.producer import EventProducer
from tests.integration.alerts_support import (
    Reader,
    Worker,
    free_port,
    module_env,
    of_type,
    rule_hit,
)

pytestmark = pytest.mark.integration
ESCALATION_S = 12.0
CAMERAS = [f"cam-rb{i}" for i in range(6)]


@pytest.fixture
def env(stack: dict[str, str], tmp_path: Path) -> Iterator[dict]:
    yield from module_env(stack, tmp_path, {
        "VIGIL_WORKER_AGENTS": "alerts",
        "VIGIL_ALERTS_ESCALATION_S": str(ESCALATION_S),
        "VIGIL_ALERTS_MAX_LEVEL": "1",
        "VIGIL_ALERTS_TICK_S": "0.5",
    })


def test_survivor_escalates_each_incident_once(env: dict[str, str], tmp_path: Path) -> None:
    w1 = Worker(dict(env, VIGIL_WORKER_ID="w1"), tmp_path / "w1.log")
    w2 = Worker(dict(env, VIGIL_WORKER_ID="w2", VIGIL_WORKER_WEB_PORT=str(free_port())),
                tmp_path / "w2.log")
    w1.start()
    w2.start()
    alerts = Reader("alerts")
    try:
        time.sleep(3.0)  # let the second member's rebalance settle
        producer = EventProducer()
        for cam in CAMERAS:
            producer.send("scene", cam, rule_hit(cam, "r1"))
        producer.flush()
        alerts.wait_for(lambda e: len(of_type(e, "AlertRaised")) == len(CAMERAS), 60)
        time.sleep(1.0)
        w2.kill9()
        try:
            alerts.wait_for(lambda e: len(of_type(e, "AlertEscalated")) >= len(CAMERAS), 90)
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n{w1.tail()}\n{w2.tail(30)}") from None
        alerts.poll(3.0)
        for cam in CAMERAS:
            key = incident_key(cam, "z1", "r1")
            assert len(of_type(alerts.events(key), "AlertRaised")) >= 1
            assert len(of_type(alerts.events(key), "AlertEscalated")) == 1, cam
    finally:
        alerts.close()
        w1.stop()
        w2.stop()
