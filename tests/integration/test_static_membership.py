"""Static group membership of the Faust workers (agents/settings.py, docs/operations.md
"Failover"): two workers, wa and wb, share the alert partitions.

- wb SIGKILLed and started again under the same VIGIL_WORKER_ID rejoins the group's
  current generation with the partitions it had: the broker reports the same members
  with the same partitions, wa is never asked to give anything up, and the events of wb's
  partitions are processed again.
- wb SIGKILLed for good is still replaced: once its session timeout has passed, wa holds
  every partition, in a new generation, and processes wb's share of the events.

What is asserted is what happened (generations, assignments, revocations, alerts raised),
never how long it took; the recovery time is measured by the fault suite
(`vigil faults run --only worker_kill`)."""

from __future__ import annotations

import contextlib
import re
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from confluent_kafka import Consumer, ConsumerGroupState, TopicPartition
from confluent_kafka.admin import AdminClient

from schemas.producer import EventProducer
from schemas.topics import topic_name
from tests.integration.alerts_support import (
    Reader,
    Worker,
    free_port,
    module_env,
    of_type,
    rule_hit,
)

pytestmark = pytest.mark.integration

#: Enough cameras that both scene partitions surely carry some (all 12 on one of the
#: two partitions: 1 in 2048).
CAMERAS = [f"cam-sm{i}" for i in range(12)]
JOINED = re.compile(rb"Joined group '[^']+' \(generation (\d+)\) with member_id (\S+)")


@pytest.fixture
def env(stack: dict[str, str], tmp_path: Path, request: pytest.FixtureRequest
        ) -> Iterator[dict[str, str]]:
    # the session timeout of the test: long enough that a restart lands within it, or
    # short, so that the survivor's take-over does not keep the test waiting
    yield from module_env(stack, tmp_path, {
        "VIGIL_WORKER_AGENTS": "alerts",
        "BROKER_SESSION_TIMEOUT": str(request.param),
    })


def _group() -> str:
    from vigil.settings import get_settings

    return f"{get_settings().topic_prefix}-worker"


def _members(admin: AdminClient) -> tuple[str, dict[str, set[int]]]:
    """The group's state and, per group.instance.id, its partitions of the scene topic
    (as the broker sees them)."""
    group = _group()
    desc = admin.describe_consumer_groups([group])[group].result(timeout=15)
    scene = topic_name("scene")
    return desc.state.name, {
        m.group_instance_id: {tp.partition for tp in m.assignment.topic_partitions
                              if tp.topic == scene}
        for m in desc.members}


def _stable_pair(admin: AdminClient, timeout: float = 60) -> dict[str, set[int]]:
    """Wait for both workers in a stable group, each with scene partitions."""
    deadline = time.monotonic() + timeout
    while True:
        state, members = _members(admin)
        if (state == ConsumerGroupState.STABLE.name and set(members) == {"wa", "wb"}
                and all(members.values())):
            return members
        assert time.monotonic() < deadline, f"group never stable with wa and wb: {state} " \
                                            f"{members}"
        time.sleep(1.0)


def _joins(log: Path, since: int = 0) -> list[tuple[int, str]]:
    """(generation, member id) of every 'Joined group' line of `log` after byte `since`."""
    return [(int(g), m.decode()) for g, m in JOINED.findall(log.read_bytes()[since:])]


def _partition_of(keys: list[str]) -> dict[str, int]:
    """Which scene partition each key was written to (read back from the topic)."""
    from vigil.settings import get_settings

    name = topic_name("scene")
    c = Consumer({"bootstrap.servers": get_settings().kafka_bootstrap,
                  "group.id": f"sm-{uuid.uuid4().hex}", "enable.auto.commit": False})
    try:
        parts = c.list_topics(name, timeout=10).topics[name].partitions
        c.assign([TopicPartition(name, p, 0) for p in parts])
        out: dict[str, int] = {}
        deadline = time.monotonic() + 30
        while set(out) != set(keys) and time.monotonic() < deadline:
            msg = c.poll(0.5)
            if msg is not None and not msg.error():
                out[(msg.key() or b"").decode()] = msg.partition()
        return out
    finally:
        c.close()


def _publish_and_wait(cams: list[str], alerts: Reader, worker_logs: str) -> dict[str, int]:
    producer = EventProducer()
    for cam in cams:
        producer.send("scene", cam, rule_hit(cam, "r1"))
    assert producer.flush(30) == 0
    try:
        alerts.wait_for(lambda e: {a.camera_id for a in of_type(e, "AlertRaised")}
                        >= set(cams), 90)
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n{worker_logs}") from None
    return _partition_of(cams)


@contextlib.contextmanager
def _pair(env: dict[str, str], tmp_path: Path
          ) -> Iterator[tuple[AdminClient, Worker, Worker, Reader, dict[str, set[int]]]]:
    """Workers wa and wb started and settled in one stable group, an alerts reader, and
    the broker's view of who holds which scene partition; everything stopped after."""
    from vigil.settings import get_settings

    admin = AdminClient({"bootstrap.servers": get_settings().kafka_bootstrap})
    wa = Worker(dict(env, VIGIL_WORKER_ID="wa"), tmp_path / "wa.log")
    wb = Worker(dict(env, VIGIL_WORKER_ID="wb", VIGIL_WORKER_WEB_PORT=str(free_port())),
                tmp_path / "wb.log")
    alerts = Reader("alerts")
    try:
        wa.start()
        wb.start()
        yield admin, wa, wb, alerts, _stable_pair(admin)
    finally:
        alerts.close()
        wa.stop()
        wb.stop()


@pytest.mark.parametrize("env", [60], indirect=True)
def test_a_restarted_worker_takes_its_own_partitions_back_without_a_rebalance(
        env: dict[str, str], tmp_path: Path) -> None:
    with _pair(env, tmp_path) as (admin, wa, wb, alerts, before):
        (generation, _), *_ = reversed(_joins(wb.log))
        assert _joins(wa.log)[-1][0] == generation, (wa.tail(), wb.tail())

        wb.kill9()
        wa_after_kill = wa.log.stat().st_size
        wb_after_kill = wb.log.stat().st_size
        wb.start()  # same VIGIL_WORKER_ID, well within the 60 s session timeout
        logs = f"{wa.tail()}\n{wb.tail()}"

        # the restarted wb joined the generation it had left: no rebalance took place
        rejoined = _joins(wb.log, wb_after_kill)
        assert [g for g, _ in rejoined] == [generation], (rejoined, logs)
        assert rejoined[0][1].startswith("wb-"), rejoined  # the broker's id for "wb"
        state, after = _members(admin)
        assert (state, after) == (ConsumerGroupState.STABLE.name, before), logs
        # wa was never asked to give up or take anything
        wa_since = wa.log.read_bytes()[wa_after_kill:]
        assert b"Revoking previously assigned partitions" not in wa_since, logs
        assert _joins(wa.log, wa_after_kill) == [], logs

        # and wb's partitions are processed again, by wb
        where = _publish_and_wait(CAMERAS, alerts, logs)
        on_wb = [c for c, p in where.items() if p in after["wb"]]
        assert on_wb, (where, after)
        assert _joins(wa.log, wa_after_kill) == [], "a rebalance after the restart"


@pytest.mark.parametrize("env", [10], indirect=True)
def test_a_worker_killed_for_good_is_replaced_after_its_session_timeout(
        env: dict[str, str], tmp_path: Path) -> None:
    with _pair(env, tmp_path) as (admin, wa, wb, alerts, before):
        generation = _joins(wa.log)[-1][0]
        wb.kill9()  # and never started again

        deadline = time.monotonic() + 90
        while True:
            state, members = _members(admin)
            if state == ConsumerGroupState.STABLE.name and set(members) == {"wa"}:
                break
            assert time.monotonic() < deadline, \
                f"wb never left the group: {state} {members}\n{wa.tail()}"
            time.sleep(1.0)
        assert members["wa"] == before["wa"] | before["wb"], (before, members)
        assert max(g for g, _ in _joins(wa.log)) > generation, wa.tail()

        where = _publish_and_wait(CAMERAS, alerts, wa.tail())
        assert [c for c, p in where.items() if p in before["wb"]], (where, before)


@pytest.mark.parametrize("env", [30], indirect=True)
def test_a_second_process_with_the_same_worker_id_makes_the_first_exit(
        env: dict[str, str], tmp_path: Path) -> None:
    """Two running workers with one VIGIL_WORKER_ID would take the membership from each
    other forever (aiokafka resets and rejoins; agents/faust_fixes.py). The second one's
    join takes it over; the first, about to take it back, sees the broker list its id
    under another member and exits with code 78, naming the id. The second keeps it."""
    from agents.faust_fixes import EXIT_DUPLICATE_ID
    from vigil.settings import get_settings

    admin = AdminClient({"bootstrap.servers": get_settings().kafka_bootstrap})
    first = Worker(dict(env, VIGIL_WORKER_ID="wa"), tmp_path / "first.log")
    # its own state folder (RocksDB would refuse a second opener of the first's folder)
    second = Worker(dict(env, VIGIL_WORKER_ID="wa", VIGIL_WORKER_WEB_PORT=str(free_port()),
                         VIGIL_STATE_DIR=str(tmp_path / "state2")), tmp_path / "second.log")
    (tmp_path / "state2" / "worker").mkdir(parents=True)
    try:
        first.start()
        second.start()
        assert first.proc is not None and second.proc is not None
        try:
            code = first.proc.wait(90)
        except Exception:
            raise AssertionError(f"the first worker did not exit\n{first.tail()}\n"
                                 f"{second.tail()}") from None
        assert code == EXIT_DUPLICATE_ID, first.tail()
        assert "another process runs with this worker's id" in first.log.read_text(), \
            first.tail()
        assert second.proc.poll() is None, second.tail()
        state, members = _members(admin)
        assert set(members) == {"wa"}, (state, members)
        assert _joins(second.log)[-1][1] != _joins(first.log)[-1][1]
    finally:
        first.stop()
        second.stop()
