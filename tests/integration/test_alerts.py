"""The alert lifecycle in a real Faust worker: raise -> escalate -> acknowledge -> resolve,
invalid and racing commands. One worker for the module; each test its own incident."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import timedelta

import pytest

from agents.alert_state import incident_key
from schemas.events import AcknowledgeAlert, AlertRaised, ResolveAlert
from schemas.producer import EventProducer
from tests.integration.alerts_support import Reader, Worker, module_env, of_type, rule_hit

pytestmark = pytest.mark.integration
ESCALATION_S = 3.0


@pytest.fixture(scope="module")
def env(stack: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    tmp = tmp_path_factory.mktemp("alerts")
    yield from module_env(stack, tmp, {
        "VIGIL_WORKER_AGENTS": "alerts",
        "VIGIL_ALERTS_ESCALATION_S": str(ESCALATION_S),
        "VIGIL_ALERTS_MAX_LEVEL": "2",
        "VIGIL_ALERTS_TICK_S": "0.5",
    })


@pytest.fixture(scope="module")
def worker(env: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Worker]:
    w = Worker(env, tmp_path_factory.mktemp("alerts-log") / "worker.log")
    w.start()
    yield w
    w.stop()


@pytest.fixture
def alerts(worker: Worker) -> Iterator[Reader]:
    r = Reader("alerts")
    yield r
    r.close()


def _raise(producer: EventProducer, alerts: Reader, camera: str) -> tuple[str, AlertRaised]:
    hit = rule_hit(camera, "r1", frame_ref="s3://snapshots/x.jpg")
    key = incident_key(camera, "z1", "r1")
    producer.send("scene", camera, hit)
    producer.flush()
    (raised,) = of_type(alerts.wait_for(lambda e: bool(of_type(e, "AlertRaised")), 60, key),
                        "AlertRaised")
    assert isinstance(raised, AlertRaised)
    assert raised.causation_id == hit.event_id and raised.snapshot_ref == "s3://snapshots/x.jpg"
    return key, raised


def test_raise_escalate_acknowledge_resolve(alerts: Reader) -> None:
    producer = EventProducer()
    key, raised = _raise(producer, alerts, "cam-life")
    assert raised.version == 1 and raised.incident_key == key
    evs = alerts.wait_for(lambda e: bool(of_type(e, "AlertEscalated")), 30, key)
    (esc,) = of_type(evs, "AlertEscalated")
    assert esc.level == 1
    # the window runs from when the worker saw the hit (wall clock), here a moment after
    # its event time
    due = raised.occurred_at + timedelta(seconds=ESCALATION_S)
    assert due <= esc.deadline_at <= due + timedelta(seconds=5)
    assert esc.occurred_at >= esc.deadline_at

    ack = AcknowledgeAlert.create(producer="test", alert_id=raised.alert_id, operator="ana",
                                  note="on it", expected_version=esc.version)
    producer.send("commands", key, ack)
    producer.flush()
    evs = alerts.wait_for(lambda e: bool(of_type(e, "AlertAcknowledged")), 30, key)
    (acked,) = of_type(evs, "AlertAcknowledged")
    assert acked.command_id == ack.event_id and acked.version == esc.version + 1
    alerts.poll(ESCALATION_S + 1.5)  # acknowledged alerts stop escalating
    assert len(of_type(alerts.events(key), "AlertEscalated")) == 1

    res = ResolveAlert.create(producer="test", alert_id=raised.alert_id, operator="ana",
                              resolution="person left")
    producer.send("commands", key, res)
    producer.send("scene", "cam-life", rule_hit("cam-life", "r1"))  # inside the cooldown
    producer.flush()
    evs = alerts.wait_for(lambda e: bool(of_type(e, "AlertRepeated")), 30, key)
    (resolved,) = of_type(evs, "AlertResolved")
    assert not resolved.automatic and resolved.operator == "ana"
    (rep,) = of_type(evs, "AlertRepeated")
    assert rep.alert_id == raised.alert_id and rep.occurrences == 2
    assert not of_type(evs, "CommandRejected")


def test_invalid_and_concurrent_commands(alerts: Reader) -> None:
    producer = EventProducer()
    key, raised = _raise(producer, alerts, "cam-cmd")
    unknown = AcknowledgeAlert.create(producer="test", alert_id=str(uuid.uuid4()), operator="x")
    stale = AcknowledgeAlert.create(producer="test", alert_id=raised.alert_id, operator="x",
                                    expected_version=99)
    producer.send("commands", key, unknown)
    producer.send("commands", key, stale)
    acks = [AcknowledgeAlert.create(producer="test", alert_id=raised.alert_id,
                                    operator=f"op{i}") for i in range(50)]
    for a in acks:
        producer.send("commands", key, a)
    producer.send("commands", key, acks[0])  # a redelivered command: a no-op
    late = ResolveAlert.create(producer="test", alert_id=raised.alert_id, operator="x")
    again = AcknowledgeAlert.create(producer="test", alert_id=raised.alert_id, operator="y")
    producer.send("commands", key, late)
    producer.send("commands", key, again)
    producer.flush()

    evs = alerts.wait_for(lambda e: len(of_type(e, "CommandRejected")) >= 2 + 49 + 1, 60, key)
    alerts.poll(1.0)
    evs = alerts.events(key)
    rejected = {r.command_id: r.reason for r in of_type(evs, "CommandRejected")}
    assert "unknown alert" in rejected[unknown.event_id]
    assert "stale version" in rejected[stale.event_id]
    assert "resolved" in rejected[again.event_id]
    (acked,) = of_type(evs, "AlertAcknowledged")
    assert acked.command_id == acks[0].event_id
    assert sum(1 for a in acks[1:] if "already acknowledged" in rejected[a.event_id]) == 49
    assert acks[0].event_id not in rejected
    assert len(of_type(evs, "AlertResolved")) == 1
    ids = [e.event_id for e in evs]
    assert len(ids) == len(set(ids))
