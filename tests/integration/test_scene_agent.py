"""The scene agent in a real Faust worker: config from the compacted topic, synthetic
detections in, rule events out; then kill -9 mid-stream, restart, and the deduplicated
output equals an uninterrupted run.

The uninterrupted reference is the pure engine (`agents.scene_rules.process`) run over
the same frames in this process: the worker must produce byte-identical events (derived
ids, event-time timestamps), so comparing encoded bytes after dedup by event id is the
strongest check that a crash and a resume change nothing.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from agents.scene_rules import compile_camera, process
from schemas.codec import default_codec
from schemas.events import Event, RuleTriggered
from schemas.site_config import config_events, parse_site
from schemas.topics import topic_name
from tools.bench.scene import demo_site, demo_streams, merge
from tools.devstack.process import free_port
from vigil_cli.config import apply_site

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]


class Worker:
    """A Faust worker subprocess running only the scene agent."""

    def __init__(self, env: dict[str, str], log: Path):
        self.env, self.log, self.proc = env, log, None  # type: subprocess.Popen | None

    def start(self) -> None:
        # the app's datadir (state_dir/worker/<id>) must exist before Faust opens RocksDB
        state = Path(self.env["VIGIL_STATE_DIR"]) / "worker" / self.env["VIGIL_WORKER_ID"]
        state.mkdir(parents=True, exist_ok=True)
        fh = self.log.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "agents.cli", "worker", "-l", "info"],
            env=self.env, cwd=ROOT, stdout=fh, stderr=subprocess.STDOUT,
        )

    def kill9(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


@pytest.fixture
def worker_env(vigil_env: dict[str, str]) -> dict[str, str]:
    env = dict(vigil_env)
    env.update({
        "VIGIL_WORKER_AGENTS": "scene",
        "VIGIL_WORKER_WEB_PORT": str(free_port()),
        "VIGIL_WORKER_ID": "scene-it",
        # a killed member must leave the group quickly for the restart to rebalance
        "BROKER_SESSION_TIMEOUT": "10",
        "BROKER_HEARTBEAT_INTERVAL": "2",
    })
    return env


def read_scene(expected_ids: set[str], timeout: float, worker: Worker) -> dict[str, bytes]:
    """Read vigil.scene until every expected event id was seen (or timeout)."""
    from confluent_kafka import Consumer

    from vigil.kafka import consumer_config

    c = Consumer(consumer_config(f"it-reader-{os.getpid()}-{time.time_ns()}"))
    c.subscribe([topic_name("scene")])
    got: dict[str, bytes] = {}
    codec = default_codec()
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline and not expected_ids <= set(got):
            assert worker.proc is not None and worker.proc.poll() is None, "worker died"
            msg = c.poll(1.0)
            if msg is None or msg.error() is not None:
                continue
            ev = codec.decode(msg.value())
            got.setdefault(ev.event_id, msg.value())
    finally:
        c.close()
    return got


def committed_frames() -> int:
    """Sum of the scene worker group's committed offsets on vigil.detections."""
    from confluent_kafka import Consumer, TopicPartition

    from vigil.kafka import consumer_config

    name = topic_name("detections")
    c = Consumer(consumer_config(f"{os.environ['VIGIL_TOPIC_PREFIX']}-worker"))
    try:
        parts = c.list_topics(name, timeout=10).topics[name].partitions
        offs = c.committed([TopicPartition(name, p) for p in parts], timeout=10)
    finally:
        c.close()
    return sum(max(tp.offset, 0) for tp in offs)


def reference_run() -> dict[str, Event]:
    """The uninterrupted run: the pure engine over every camera's frames."""
    entities = [ev for _, ev in config_events(parse_site(demo_site()))]
    out: dict[str, Event] = {}
    for camera, frames in demo_streams().items():
        spec = compile_camera(camera, entities)
        state = None
        for f in frames:
            state, events = process(spec, f, state)
            out.update((e.event_id, e) for e in events)
    return out


@pytest.fixture
def workers(worker_env: dict[str, str], tmp_path: Path) -> Iterator[list[Worker]]:
    made: list[Worker] = []
    yield made
    for w in made:
        w.stop()


def start_worker(env: dict[str, str], log: Path, workers: list[Worker]) -> Worker:
    """A started worker, stopped by the `workers` fixture at the end of the test."""
    w = Worker(env, log)
    workers.append(w)
    w.start()
    return w


def test_scene_agent_rules_and_crash_resume(
    worker_env: dict[str, str], workers: list[Worker], tmp_path: Path
) -> None:
    from schemas.producer import EventProducer

    plan = apply_site(parse_site(demo_site()))
    assert plan.upserts and not plan.deletes
    expected = reference_run()
    codec = default_codec()

    frames = merge(demo_streams().values())
    producer = EventProducer(**{"linger.ms": 5})
    # a poison message first: it must go to the DLQ, not stop the agent
    producer.send_raw(topic_name("detections"), b"loit", b"\x00not avro")
    cut = len(frames) * 2 // 5
    for f in frames[:cut]:
        producer.send("detections", f.camera_id, f)
    assert producer.flush() == 0

    log = tmp_path / "worker.log"
    w = start_worker(worker_env, log, workers)
    # wait until the worker is demonstrably mid-stream (some outputs exist), then kill -9
    first_ids = {i for i, e in expected.items()
                 if e.occurred_at <= frames[cut // 2].occurred_at}
    partial = read_scene(first_ids, timeout=60, worker=w)
    assert first_ids <= set(partial), f"worker produced nothing; see {log}"
    for f in frames[cut:]:
        producer.send("detections", f.camera_id, f)
    producer.flush()
    w.kill9()
    # evidence that the kill landed mid-stream: the group's committed position is short
    # of the end, so the restarted worker re-reads frames (some already applied to state)
    committed = committed_frames()
    assert committed < len(frames) + 1, "worker had committed everything before the kill"

    w2 = start_worker(worker_env, log, workers)
    got = read_scene(set(expected), timeout=180, worker=w2)
    missing = set(expected) - set(got)
    extra = set(got) - set(expected)
    assert not missing, f"{len(missing)} events missing; see {log}"
    assert not extra
    # byte-identical to the uninterrupted run
    for event_id, ev in expected.items():
        assert got[event_id] == codec.encode(ev)

    # behaviour, from the worker's own output
    fired = [codec.decode(v) for v in got.values()]
    triggered = sorted(
        (e.camera_id, e.rule_id) for e in fired if isinstance(e, RuleTriggered)
    )
    assert triggered == [
        ("crowd6", "crowd-crowd6"),
        ("line", "gate-in"),
        ("loit", "loiter-loit"),
        ("night", "fence-night"),
        ("occl", "loiter-occl"),
    ]

    # the poison message was dead-lettered with a reason
    from confluent_kafka import Consumer

    from vigil.kafka import consumer_config

    c = Consumer(consumer_config(f"it-dlq-{time.time_ns()}"))
    c.subscribe([topic_name("dlq")])
    reasons = []
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and not reasons:
        msg = c.poll(1.0)
        if msg is not None and msg.error() is None:
            reasons.append(dict(msg.headers() or []))
    c.close()
    assert reasons and reasons[0]["vigil.stage"] == b"scene"


# ----------------------------------------------------------------- config change live

#: the worker notices a config change within its poll period (agents.scene.CONFIG_POLL_S,
#: 2 s) and reloads before its next batch; this is the bound the test allows for that
CONFIG_CHANGE_BOUND_S = 2 * 2.0 + 1.0
CHANGE_AT_S = 30.0  # event time (s from start) of the last frame judged by the old config
DOOR = [[0.75, 0.5], [0.95, 0.5], [0.95, 0.95], [0.75, 0.95]]


def _site(version: int) -> dict[str, object]:
    """v1: loitering after 300 s, a line rule on cc2. v2 (applied while the worker runs):
    loitering after 20 s, the line rule deleted (tombstone), a perimeter zone added."""
    from tools.bench.scene import BENCH_ZONE

    zones: list[dict[str, object]] = [
        {"zone_id": "bench-cc", "camera_id": "cc", "polygon": BENCH_ZONE}]
    rules: list[dict[str, object]] = [
        {"rule_id": "loiter-cc", "rule_type": "loitering", "zone_id": "bench-cc",
         "dwell_s": 300 if version == 1 else 20, "gap_tolerance_s": 6}]
    if version == 1:
        rules.append({"rule_id": "gate-cc2", "rule_type": "line_crossing",
                      "line_id": "gate2", "direction": "forward"})
    else:
        zones.append({"zone_id": "door-cc", "camera_id": "cc", "kind": "perimeter",
                      "polygon": DOOR})
        rules.append({"rule_id": "door-cc", "rule_type": "perimeter", "zone_id": "door-cc"})
    return {"site_id": "cfg", "cameras": [{"camera_id": "cc"}, {"camera_id": "cc2"}],
            "zones": zones, "rules": rules,
            "lines": [{"line_id": "gate2", "camera_id": "cc2", "a": [0.5, 0.95],
                       "b": [0.5, 0.3]}]}


def _config_change_frames() -> dict[str, list]:
    from tools.bench.scene import DAY, FrameSpec, Person, frames

    loiterer = Person([(0, 0.1, 0.8), (2, 0.5, 0.8), (45, 0.52, 0.8)])
    intruder = Person([(32, 0.97, 0.7), (35, 0.85, 0.7), (45, 0.86, 0.7)])
    walker1 = Person([(0, 0.1, 0.7), (16, 0.9, 0.7)])
    walker2 = Person([(31, 0.1, 0.6), (45, 0.9, 0.6)])
    return {"cc": frames(FrameSpec("cc", DAY, 45, [loiterer, intruder])),
            "cc2": frames(FrameSpec("cc2", DAY, 45, [walker1, walker2]))}


def test_config_change_applies_to_following_frames_while_running(
    worker_env: dict[str, str], workers: list[Worker], tmp_path: Path
) -> None:
    from datetime import timedelta

    from schemas.events import LineCrossed
    from schemas.producer import EventProducer
    from tools.bench.scene import DAY

    change = DAY + timedelta(seconds=CHANGE_AT_S)
    streams = _config_change_frames()
    before = merge([f for f in s if f.occurred_at <= change] for s in streams.values())
    after = merge([f for f in s if f.occurred_at > change] for s in streams.values())
    # the reference: old config for the frames up to the change, new config after it
    expected: dict[str, Event] = {}
    specs = {v: {c: compile_camera(c, [ev for _, ev in config_events(parse_site(_site(v)))])
                 for c in streams} for v in (1, 2)}
    states: dict[str, object] = {}
    for version, part in ((1, before), (2, after)):
        for f in part:
            states[f.camera_id], events = process(specs[version][f.camera_id], f,
                                                  states.get(f.camera_id))  # type: ignore[arg-type]
            expected.update((e.event_id, e) for e in events)
    exp_before = {i for i, e in expected.items() if e.occurred_at <= change}

    apply_site(parse_site(_site(1)))
    producer = EventProducer(**{"linger.ms": 5})
    for f in before:
        producer.send("detections", f.camera_id, f)
    assert producer.flush() == 0
    log = tmp_path / "worker.log"
    w = start_worker(worker_env, log, workers)
    got = read_scene(exp_before, timeout=90, worker=w)
    assert exp_before <= set(got), f"old-config events missing; see {log}"
    deadline = time.monotonic() + 30  # every old-config frame handled before the change
    while committed_frames() < len(before) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert committed_frames() == len(before)

    plan = apply_site(parse_site(_site(2)))
    assert plan.deletes == ["rule/gate-cc2"]  # published as a tombstone
    time.sleep(CONFIG_CHANGE_BOUND_S)
    for f in after:
        producer.send("detections", f.camera_id, f)
    assert producer.flush() == 0
    got = read_scene(set(expected), timeout=60, worker=w)
    codec = default_codec()
    assert set(got) == set(expected), f"see {log}"
    for event_id, ev in expected.items():
        assert got[event_id] == codec.encode(ev)

    # and in plain words: the lowered threshold fires on the first frame after the change
    # (dwell 29 s >= 20 s), the new perimeter zone fires, the deleted line rule does not
    decoded = [codec.decode(v) for v in got.values()]
    fired = sorted((e.rule_id, e.occurred_at) for e in decoded if isinstance(e, RuleTriggered))
    first_after = DAY + timedelta(seconds=CHANGE_AT_S + 1)
    assert [r for r, _ in fired] == ["door-cc", "gate-cc2", "loiter-cc"]
    assert dict(fired)["loiter-cc"] == first_after
    assert dict(fired)["gate-cc2"] <= change
    crossed = [e for e in decoded if isinstance(e, LineCrossed)]
    assert len(crossed) == 2 and max(e.occurred_at for e in crossed) > change
