"""A worker SIGKILLed while an escalation deadline is pending: after restart the
escalation fires exactly once, late, with deadline_at = when it was due.

The restarted worker gets an empty data directory (a new host), so the deadline must come
back from the table's changelog, not from local RocksDB files."""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from agents.alert_state import incident_key
from schemas.producer import EventProducer
from tests.integration.alerts_support import Reader, Worker, module_env, of_type, rule_hit

pytestmark = pytest.mark.integration
ESCALATION_S = 6.0


@pytest.fixture
def env(stack: dict[str, str], tmp_path: Path) -> Iterator[dict]:
    yield from module_env(stack, tmp_path, {
        "VIGIL_WORKER_AGENTS": "alerts",
        "VIGIL_ALERTS_ESCALATION_S": str(ESCALATION_S),
        "VIGIL_ALERTS_MAX_LEVEL": "1",
        "VIGIL_ALERTS_TICK_S": "0.5",
    })


def test_escalation_survives_sigkill_and_fires_once(env: dict[str, str], tmp_path: Path) -> None:
    worker = Worker(env, tmp_path / "worker.log")
    worker.start()
    alerts = Reader("alerts")
    try:
        producer = EventProducer()
        key = incident_key("cam-crash", "z1", "r1")
        producer.send("scene", "cam-crash", rule_hit("cam-crash", "r1"))
        producer.flush()
        evs = alerts.wait_for(lambda e: bool(of_type(e, "AlertRaised")), 60, key)
        raised = of_type(evs, "AlertRaised")[0]
        time.sleep(1.0)  # let the state write reach the changelog
        worker.kill9()
        shutil.rmtree(Path(env["VIGIL_STATE_DIR"]) / "worker")
        (Path(env["VIGIL_STATE_DIR"]) / "worker").mkdir()
        due = raised.occurred_at + timedelta(seconds=ESCALATION_S)
        while datetime.now(UTC) < due + timedelta(seconds=2):
            time.sleep(0.5)
        assert not of_type(alerts.events(key), "AlertEscalated")  # nobody was running
        worker.start()
        evs = alerts.wait_for(lambda e: bool(of_type(e, "AlertEscalated")), 90, key)
        alerts.poll(3.0)
        escalations = of_type(alerts.events(key), "AlertEscalated")
        assert len(escalations) == 1
        (esc,) = escalations
        assert esc.level == 1 and esc.alert_id == raised.alert_id
        # due = event time + window; the worker saw the hit a moment later (wall clock)
        assert due <= esc.deadline_at <= due + timedelta(seconds=5)
        assert esc.occurred_at > due + timedelta(seconds=2)
    finally:
        alerts.close()
        worker.stop()
