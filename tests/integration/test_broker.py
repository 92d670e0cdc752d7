"""Proof that the Kafka 3.9.1 broker serves every client Vigil uses.

Kafka 4 removed the old protocol versions aiokafka (under Faust) speaks, so the broker is
pinned to 3.9.x; these tests fail first if that choice stops holding: librdkafka
(confluent-kafka), aiokafka directly, and a real Faust worker with a RocksDB table that
must survive a kill -9 and come back from its changelog on a fresh disk.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from confluent_kafka import Consumer, TopicPartition

from schemas.codec import default_codec
from schemas.events import EdgeHeartbeat, EdgeOffline, Event, StreamStatus
from schemas.producer import EventProducer
from schemas.topics import topic_name

pytestmark = pytest.mark.integration

PROBE_APP = Path(__file__).with_name("faust_probe_app.py")


def heartbeat(edge_id: str = "edge-1") -> EdgeHeartbeat:
    return EdgeHeartbeat.create(
        producer="test", edge_id=edge_id, site_id="site-1", version="0.1.0",
        interval_s=30.0, disk_free_bytes=10**9, memory_rss_bytes=10**8,
        spool_backlog=0, spool_evicted=0,
        streams=[StreamStatus(camera_id="cam-1", state="up", fps=10.0,
                              frames_captured=100, frames_dropped=0)],
    )


def consume(bootstrap: str, topic: str, want: int, timeout: float = 60.0,
            worker: Worker | None = None) -> list[Event]:
    """Read `want` events from the start of `topic` (fail after `timeout`, or as soon as
    `worker` dies)."""
    consumer = Consumer({
        "bootstrap.servers": bootstrap, "group.id": f"test-{uuid.uuid4().hex[:8]}",
        "auto.offset.reset": "earliest", "enable.auto.commit": False,
    })
    consumer.subscribe([topic])
    codec = default_codec()
    events: list[Event] = []
    deadline = time.monotonic() + timeout
    try:
        while len(events) < want and time.monotonic() < deadline:
            if worker is not None:
                worker.check()
            msg = consumer.poll(0.5)
            if msg is None or msg.error():
                continue
            events.append(codec.decode(msg.value()))
    finally:
        consumer.close()
    assert len(events) >= want, f"got {len(events)} of {want} events from {topic}"
    return events


def test_confluent_kafka_round_trip(stack: dict[str, str], topic_prefix: str) -> None:
    sent = heartbeat()
    producer = EventProducer()
    producer.send("heartbeats", sent.edge_id, sent)
    assert producer.flush(30) == 0
    [got] = consume(stack["KAFKA_BOOTSTRAP"], topic_name("heartbeats"), 1)
    assert got == sent


def test_aiokafka_round_trip(stack: dict[str, str], topic_prefix: str) -> None:
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

    topic = topic_name("heartbeats")
    codec = default_codec()
    sent = heartbeat("edge-aio")

    async def run() -> Event:
        producer = AIOKafkaProducer(bootstrap_servers=stack["KAFKA_BOOTSTRAP"], acks="all")
        await producer.start()
        try:
            await producer.send_and_wait(topic, codec.encode(sent), key=b"edge-aio")
        finally:
            await producer.stop()
        consumer = AIOKafkaConsumer(
            topic, bootstrap_servers=stack["KAFKA_BOOTSTRAP"],
            group_id=f"aio-{uuid.uuid4().hex[:8]}", auto_offset_reset="earliest",
        )
        await consumer.start()
        try:
            msg = await asyncio.wait_for(consumer.getone(), timeout=60)
        finally:
            await consumer.stop()
        return codec.decode(msg.value)

    assert asyncio.run(run()) == sent


class Worker:
    """The probe Faust worker as a subprocess in its own process group."""

    def __init__(self, env: dict[str, str], datadir: Path, log: Path) -> None:
        self.env = {**env, "PROBE_DATADIR": str(datadir)}
        self.log = log
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, str(PROBE_APP), "worker", "-l", "info"],
                env=self.env, stdout=out, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL, start_new_session=True,
            )

    def check(self) -> None:
        """Fail with the worker's log if it exited."""
        if self.proc is not None and self.proc.poll() is not None:
            pytest.fail(f"Faust worker exited ({self.proc.returncode}):\n"
                        + self.log.read_text()[-3000:])

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=30)


def committed(bootstrap: str, group: str, topic: str) -> int:
    """Sum of the committed offsets of `group` on `topic`'s two partitions."""
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": group})
    try:
        tps = c.committed([TopicPartition(topic, p) for p in range(2)], timeout=10)
    finally:
        c.close()
    return sum(max(tp.offset, 0) for tp in tps)


def test_faust_worker_recovers_table_after_kill(
    stack: dict[str, str], topic_prefix: str, vigil_env: dict[str, str], tmp_path: Path
) -> None:
    bootstrap = stack["KAFKA_BOOTSTRAP"]
    app_id = f"{topic_prefix}-probe"
    env = {**vigil_env, "PROBE_APP_ID": app_id}
    log = tmp_path / "worker.log"
    producer = EventProducer()
    health = topic_name("health")

    first = Worker(env, tmp_path / "disk-1", log)
    second = Worker(env, tmp_path / "disk-2", log)  # a fresh disk: state only from Kafka
    try:
        first.start()
        producer.send("heartbeats", "edge-1", heartbeat())
        assert producer.flush(30) == 0
        [out1] = consume(bootstrap, health, 1, timeout=150, worker=first)
        assert isinstance(out1, EdgeOffline) and out1.missed_heartbeats == 1
        # RocksDB (rocksdict) really holds the table on disk
        assert list((tmp_path / "disk-1").rglob("*.sst")) or list(
            (tmp_path / "disk-1").rglob("CURRENT")), "no RocksDB files in the worker datadir"
        # the input offset must be committed, else a replay could fake the recovery
        deadline = time.monotonic() + 60
        while committed(bootstrap, app_id, topic_name("heartbeats")) < 1:
            assert time.monotonic() < deadline, "the worker never committed its offset"
            time.sleep(0.5)
        first.kill()

        second.start()
        producer.send("heartbeats", "edge-1", heartbeat())
        assert producer.flush(30) == 0
        outs = consume(bootstrap, health, 2, timeout=150, worker=second)
        assert [e.missed_heartbeats for e in outs if isinstance(e, EdgeOffline)] == [1, 2], (
            "table not recovered from the changelog; worker log:\n" + log.read_text()[-3000:]
        )
    finally:
        first.kill()
        second.kill()
