"""Helpers for the alerts / site-health / notifier integration tests.

A Faust worker takes seconds to start on a shared two-core box, so each test module starts
one worker (module-scoped `module_env`) on its own topic prefix and tests use distinct
incident keys instead of distinct topics.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from confluent_kafka import Consumer, TopicPartition

from schemas.codec import default_codec
from schemas.events import Event, RuleTriggered
from schemas.topics import apply_topics, topic_name
from tools.devstack.process import free_port

ROOT = Path(__file__).resolve().parents[2]


def _clear_caches() -> None:
    from schemas.codec import default_codec as dc
    from vigil.settings import get_settings

    get_settings.cache_clear()
    dc.cache_clear()


def module_env(stack: dict[str, str], tmp: Path, extra: dict[str, str]) -> Iterator[dict[str, str]]:
    """Like the `vigil_env` fixture, for a whole module: fresh topics, env for a worker.

    Also points this process (producers, readers) at the same prefix for the module.
    """
    prefix = f"t{uuid.uuid4().hex[:10]}"
    apply_topics(stack["KAFKA_BOOTSTRAP"], prefix, partitions_override=2)
    env = dict(os.environ)
    env.update(stack)
    env.update({
        "VIGIL_TOPIC_PREFIX": prefix,
        "VIGIL_STATE_DIR": str(tmp / "state"),
        "VIGIL_LOG_FORMAT": "text",
        "VIGIL_WORKER_WEB_PORT": str(free_port()),
        # a SIGKILLed member must leave the group quickly for the restart to rebalance
        "BROKER_SESSION_TIMEOUT": "10",
        "BROKER_HEARTBEAT_INTERVAL": "2",
    })
    env.update(extra)
    (tmp / "state" / "worker").mkdir(parents=True, exist_ok=True)
    mp = pytest.MonkeyPatch()
    mp.setenv("VIGIL_TOPIC_PREFIX", prefix)
    mp.setenv("KAFKA_BOOTSTRAP", stack["KAFKA_BOOTSTRAP"])
    _clear_caches()
    try:
        yield env
    finally:
        mp.undo()
        _clear_caches()


class Worker:
    """`python -m agents.cli worker` (= `faust -A agents.app worker -l info` honouring
    VIGIL_WORKER_AGENTS, see agents/cli.py) in its own process group."""

    def __init__(self, env: dict[str, str], log: Path):
        self.env, self.log = env, log
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, ready_timeout: float = 90.0) -> None:
        start_size = self.log.stat().st_size if self.log.exists() else 0
        fh = self.log.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "agents.cli", "worker"],
            env=self.env, cwd=ROOT, stdout=fh, stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.monotonic() + ready_timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"worker exited: {self.log.read_bytes()[-3000:]!r}")
            with self.log.open("rb") as f:
                f.seek(start_size)
                if b"Worker ready" in f.read():
                    return
            time.sleep(0.5)
        self.stop()  # never leave a half-started worker behind
        raise RuntimeError(f"worker not ready: {self.log.read_bytes()[-3000:]!r}")

    def kill9(self) -> None:
        assert self.proc is not None
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)

    def tail(self, lines: int = 60) -> str:
        """The end of this worker's log, for a failing test's message: a CI run keeps no
        temporary folders, so what the worker said must travel in the assertion."""
        if not self.log.exists():
            return f"({self.log.name}: no log)"
        text = self.log.read_text(errors="replace").splitlines()[-lines:]
        return f"--- {self.log.name} (last {len(text)} lines)\n" + "\n".join(text)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)


class Reader:
    """Reads a topic from the beginning and keeps every decoded (key, event)."""

    def __init__(self, suffix: str):
        from vigil.settings import get_settings

        self.consumer = Consumer({
            "bootstrap.servers": get_settings().kafka_bootstrap,
            "group.id": f"reader-{uuid.uuid4().hex}",
            "enable.auto.commit": False,
        })
        name = topic_name(suffix)
        md = self.consumer.list_topics(name, timeout=10)
        self.consumer.assign([TopicPartition(name, p, 0) for p in md.topics[name].partitions])
        self.seen: list[tuple[str, Event]] = []

    def poll(self, seconds: float = 0.2) -> None:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            msg = self.consumer.poll(0.1)
            if msg is None or msg.error():
                continue
            key = (msg.key() or b"").decode()
            self.seen.append((key, default_codec().decode(msg.value())))

    def wait_for(self, pred: Callable[[list[Event]], bool], timeout: float,
                 key: str | None = None) -> list[Event]:
        """Poll until pred(events of `key`) holds; return those events."""
        end = time.monotonic() + timeout
        while True:
            self.poll(0.3)
            evs = [e for k, e in self.seen if key is None or k == key]
            if pred(evs):
                return evs
            if time.monotonic() > end:
                got = [(type(e).__name__, getattr(e, "reason", "")) for e in evs]
                raise AssertionError(f"timed out; got {got}")

    def events(self, key: str | None = None) -> list[Event]:
        return [e for k, e in self.seen if key is None or k == key]

    def close(self) -> None:
        self.consumer.close()


def of_type(events: list[Event], name: str) -> list[Event]:
    return [e for e in events if type(e).__name__ == name]


def rule_hit(camera: str, rule: str, severity: str = "warning", zone: str | None = "z1",
             frame_ref: str | None = None) -> RuleTriggered:
    now = datetime.now(UTC)
    return RuleTriggered.create(
        producer="test", occurred_at=now, camera_id=camera, zone_id=zone, rule_id=rule,
        rule_type="loitering", severity=severity, value=400.0, threshold=300.0,
        track_ids=["t1"], first_evidence_at=now, last_evidence_at=now,
        evidence_event_ids=["f1"], frame_ref=frame_ref,
    )
