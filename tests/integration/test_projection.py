"""Projector against real Kafka + PostgreSQL: events in, read models out.

Each test publishes under its own topic prefix and projects into a PostgreSQL schema
named after it, so tests never see each other's rows.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlparse

import psycopg
import pytest
from confluent_kafka import Consumer, TopicPartition

from projections.migrate import upgrade
from projections.projector import Projector
from projections.replay import compare_schemas, drop_schema, replay_into
from projections.settings import ProjectorSettings
from schemas import events as ev
from schemas.producer import EventProducer
from schemas.topics import topic_name
from tools.bench.workload import mixed_workload, publish
from vigil.kafka import consumer_config
from vigil.settings import get_settings

pytestmark = pytest.mark.integration

DIM = 192


@pytest.fixture
def schema(topic_prefix: str) -> Iterator[str]:
    dsn = get_settings().database_dsn
    upgrade(dsn, topic_prefix, DIM)
    yield topic_prefix
    drop_schema(dsn, topic_prefix)


def project(schema: str, prefix: str, **kw: object) -> Projector:
    proj = Projector(dsn=get_settings().database_dsn, schema=schema, prefix=prefix,
                     settings=ProjectorSettings(embedding_dim=DIM), stop_at="end",
                     producer=EventProducer(), **kw)  # type: ignore[arg-type]
    try:
        proj.run(max_seconds=120)
    finally:
        proj.close()
    return proj


def count(schema: str, table: str, where: str = "true") -> int:
    with psycopg.connect(get_settings().database_dsn) as c:
        return c.execute(f"SELECT count(*) FROM {schema}.{table} WHERE {where}").fetchone()[0]


def query(schema: str, q: str) -> list[tuple]:
    with psycopg.connect(get_settings().database_dsn) as c:
        c.execute(f"SET search_path TO {schema}, public")
        return c.execute(q).fetchall()


def test_every_topic_lands_in_its_read_model(topic_prefix: str, schema: str) -> None:
    items = mixed_workload(seed=1, cameras=2, frames_per_camera=10, embedding_dim=DIM,
                           alerts=2, erase=2)
    publish(items)
    project(schema, topic_prefix)

    assert count(schema, "cameras") == 2
    assert count(schema, "zones") == 2 and count(schema, "lines") == 2
    assert count(schema, "rules") == 3 and count(schema, "rules", "deleted_at IS NOT NULL") == 1
    assert count(schema, "edges") == 1 and count(schema, "sites") == 1
    assert query(schema, "SELECT status FROM edges") == [("online",)]
    assert count(schema, "frames") == 20 and count(schema, "frame_analyses") == 20
    assert count(schema, "detections") == 60
    assert count(schema, "detections", "erased") == 2
    assert count(schema, "embeddings") == 58  # 60 minus the two erased appearances
    assert count(schema, "scene_events") == 8 and count(schema, "recordings") == 1
    assert count(schema, "commands") == 4 and count(schema, "notifications") == 4
    assert count(schema, "health_events") == 5 and count(schema, "erasures") == 1
    assert count(schema, "alert_events") == 10  # incl. one CommandRejected
    states = dict(query(schema, "SELECT state, count(*) FROM alerts GROUP BY state"))
    assert states == {"RESOLVED": 1, "ACKNOWLEDGED": 1}
    row = query(schema, "SELECT level, occurrences, version, acknowledged_by, resolved_by "
                        "FROM alerts WHERE state = 'RESOLVED'")[0]
    assert row == (1, 2, 5, "alice", "alice")
    cam = query(schema, "SELECT last_frame_seq, stream_state FROM cameras ORDER BY camera_id")
    assert cam == [(9, "unknown"), (9, "up")]
    # partitions exist for the detections' month
    assert query(schema, "SELECT count(*) FROM pg_inherits i JOIN pg_class c ON c.oid = "
                         "i.inhparent WHERE c.relname = 'detections' AND c.relnamespace = "
                         f"'{schema}'::regnamespace")[0][0] >= 1


def test_duplicates_and_redelivery_change_nothing(topic_prefix: str, schema: str) -> None:
    items = mixed_workload(seed=2, cameras=1, frames_per_camera=8, embedding_dim=DIM)
    publish(items)
    project(schema, topic_prefix)
    before = _snapshot(schema)
    publish(items)  # same event ids at new offsets (an edge producer restarting)
    project(schema, topic_prefix)
    assert _snapshot(schema) == before
    # Redelivery: forget every stored position and read the whole log again.
    with psycopg.connect(get_settings().database_dsn) as c:
        c.execute(f"DELETE FROM {schema}.projector_offsets")
    project(schema, topic_prefix)
    assert _snapshot(schema) == before


def _snapshot(schema: str) -> dict[str, list]:
    with psycopg.connect(get_settings().database_dsn) as c:
        out = {}
        for t in ("alerts", "cameras", "detections", "embeddings", "alert_events", "frames",
                  "edges", "rules"):
            out[t] = c.execute(f"SELECT md5(to_jsonb(x)::text) h FROM {schema}.{t} x "
                               "ORDER BY h").fetchall()
        return out


def test_poison_goes_to_dlq_and_the_stream_continues(topic_prefix: str, schema: str) -> None:
    prod = EventProducer()
    before = mixed_workload(seed=3, cameras=1, frames_per_camera=2, embedding_dim=DIM,
                            alerts=0, erase=0)
    publish(before, prod)
    prod.send_raw(topic_name("detections"), b"cam-3-0", b"\xc3\x01garbage-not-avro")
    wrong_dim = ev.AppearanceEmbedded.create(producer="t", camera_id="cam-3-0",
                                             detection_id="bad", frame_sequence=1, model="m",
                                             vector=[0.0] * (DIM + 1))
    prod.send("embeddings", "cam-3-0", wrong_dim)
    after = ev.CameraConfigured.create(producer="t", camera_id="late", site_id="s",
                                       edge_id="e", name="after the poison")
    prod.send("config", "camera/late", after)
    assert prod.flush(30) == 0
    project(schema, topic_prefix)

    assert count(schema, "cameras", "camera_id = 'late'") == 1
    assert count(schema, "projector_dead_letters") == 2
    # offsets moved past the poison: a second run projects nothing more
    again = project(schema, topic_prefix)
    assert again.stats.messages == 0
    dlq = Consumer(consumer_config(f"{topic_prefix}.dlqcheck"))
    parts = [TopicPartition(topic_name("dlq"), p, 0) for p in range(2)]
    dlq.assign(parts)
    got, deadline = [], time.monotonic() + 20
    while len(got) < 2 and time.monotonic() < deadline:
        m = dlq.poll(0.5)
        if m is not None and m.error() is None:
            got.append(dict(m.headers() or []))
    dlq.close()
    assert len(got) == 2
    assert all(h["vigil.stage"] == b"projector" for h in got)
    assert {h["vigil.error"].split(b":")[0] for h in got} == {b"decode", b"fold"}


def _start(cmd: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    """Start `vigil project` and return once it is consuming (signal handlers set)."""
    log.write_bytes(b"")
    with log.open("ab") as out:
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=out)
    deadline = time.monotonic() + 30
    while b"projector running" not in log.read_bytes():
        assert proc.poll() is None and time.monotonic() < deadline, log.read_text()[-2000:]
        time.sleep(0.05)
    return proc


def test_sigkill_mid_batch_ends_equal_to_an_uninterrupted_run(
    topic_prefix: str, schema: str, vigil_env: dict[str, str], tmp_path: Path
) -> None:
    """Kill -9 the projector subprocess several times; the result equals a clean replay."""
    items = mixed_workload(seed=4, cameras=4, frames_per_camera=60, embedding_dim=DIM,
                           alerts=4, erase=3)
    publish(items)
    env = dict(vigil_env, VIGIL_PROJECTOR_SCHEMA=schema, VIGIL_PROJECTOR_MAX_BATCH="100",
               VIGIL_PROJECTOR_MIN_BATCH="20", VIGIL_PROJECTOR_EMBEDDING_DIM=str(DIM))
    cmd = [sys.executable, "-m", "vigil_cli", "project"]
    dsn = get_settings().database_dsn
    total = len(items)

    def progress() -> int:
        with psycopg.connect(dsn) as c:
            return int(c.execute(f"SELECT coalesce(sum(next_offset), 0) FROM {schema}."
                                 "projector_offsets").fetchone()[0])

    partial_kills = 0
    for _ in range(6):
        before = progress()
        proc = _start(cmd, env, tmp_path / "projector.log")
        # Kill right after a commit lands (not after a fixed delay, which on a loaded
        # machine may fall before the first batch or after the last one).
        until = time.monotonic() + 20
        while progress() == before and proc.poll() is None and time.monotonic() < until:
            time.sleep(0.02)
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
        if 0 < progress() < total:
            partial_kills += 1
    # Final run: SIGTERM once everything is in, and it must exit cleanly.
    proc = _start(cmd, env, tmp_path / "projector.log")
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and progress() < total:
        time.sleep(0.3)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(30) == 0
    assert partial_kills >= 2, "the projector was never killed mid-run"

    reference = f"{schema}_ref"
    try:
        replay_into(dsn, topic_prefix, ProjectorSettings(embedding_dim=DIM), reference,
                    force=True)
        with psycopg.connect(dsn) as c:
            assert compare_schemas(c, schema, reference) == []
        assert count(schema, "detections") == 4 * 60 * 3
    finally:
        drop_schema(dsn, reference)


class _TcpProxy:
    """A TCP forwarder we can cut: "PostgreSQL down" without touching the shared server."""

    def __init__(self, upstream: tuple[str, int]) -> None:
        self.upstream = upstream
        self.port = 0
        self._socks: list[socket.socket] = []
        self._listener: socket.socket | None = None

    def start(self) -> None:
        lst = socket.socket()
        lst.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        lst.bind(("127.0.0.1", self.port))
        self.port = lst.getsockname()[1]
        lst.listen(16)
        self._listener = lst
        threading.Thread(target=self._accept, args=(lst,), daemon=True).start()

    def _accept(self, lst: socket.socket) -> None:
        while True:
            try:
                client, _ = lst.accept()
            except OSError:
                return
            server = socket.create_connection(self.upstream)
            self._socks += [client, server]
            for a, b in ((client, server), (server, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        for s in (src, dst):
            with contextlib.suppress(OSError):
                s.close()

    def stop(self) -> None:
        if self._listener is not None:
            with contextlib.suppress(OSError):  # wakes the thread blocked in accept()
                self._listener.shutdown(socket.SHUT_RDWR)
            self._listener.close()
        for s in self._socks:
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
            with contextlib.suppress(OSError):
                s.close()
        self._socks.clear()


def test_postgresql_down_then_back_loses_nothing(topic_prefix: str, schema: str) -> None:
    real = urlparse(get_settings().database_dsn)
    proxy = _TcpProxy((real.hostname or "127.0.0.1", real.port or 5432))
    proxy.start()
    dsn = real._replace(netloc=f"{real.username}@127.0.0.1:{proxy.port}").geturl()
    first = mixed_workload(seed=8, cameras=1, frames_per_camera=5, alerts=1, erase=0)
    publish(first)
    proj = Projector(dsn=dsn, schema=schema, prefix=topic_prefix,
                     settings=ProjectorSettings(embedding_dim=DIM), producer=EventProducer())
    runner = threading.Thread(target=proj.run, kwargs={"max_seconds": 90}, daemon=True)
    runner.start()

    def wait_for(n: int) -> None:
        deadline = time.monotonic() + 60
        while count(schema, "frames") < n and time.monotonic() < deadline:
            time.sleep(0.2)
        assert count(schema, "frames") == n, proj.stats

    try:
        wait_for(5)
        proxy.stop()  # PostgreSQL "down"
        publish(mixed_workload(seed=9, cameras=1, frames_per_camera=7, alerts=1, erase=0))
        time.sleep(3)
        assert count(schema, "frames") == 5, proj.stats
        proxy.start()  # back, same port
        wait_for(12)
    finally:
        proj.stop()
        runner.join(30)
        proj.close()
        proxy.stop()
    assert proj.stats.db_retries > 0
    assert count(schema, "alerts") == 2 and count(schema, "detections") == 36


def test_partitions_added_at_run_time_are_projected_without_a_restart(
    topic_prefix: str, schema: str
) -> None:
    from confluent_kafka import Producer
    from confluent_kafka.admin import AdminClient, NewPartitions

    from schemas.codec import default_codec
    from vigil.kafka import producer_config

    dsn = get_settings().database_dsn
    proj = Projector(dsn=dsn, schema=schema, prefix=topic_prefix,
                     settings=ProjectorSettings(embedding_dim=DIM, metadata_refresh_s=1.0),
                     producer=EventProducer())
    runner = threading.Thread(target=proj.run, kwargs={"max_seconds": 80}, daemon=True)
    runner.start()

    def camera(cid: str) -> ev.CameraConfigured:
        return ev.CameraConfigured.create(producer="t", camera_id=cid, site_id="s",
                                          edge_id="e", name=cid)

    def landed(cid: str, within: float = 30.0) -> bool:
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            if count(schema, "cameras", f"camera_id = '{cid}'"):
                return True
            time.sleep(0.2)
        return False

    try:
        publish([("config", "camera/before", camera("before"))])
        assert landed("before")
        # The frames topic has 2 partitions (fixture); grow it to 4 while projecting.
        topic = topic_name("frames")
        admin = AdminClient({"bootstrap.servers": get_settings().kafka_bootstrap})
        admin.create_partitions([NewPartitions(topic, 4)])[topic].result(30)
        frame = ev.FrameCaptured.create(producer="t", edge_id="e", camera_id="grown",
                                        sequence=1, width=640, height=480, motion_score=0.5)
        prod = Producer(producer_config())
        prod.produce(topic, key=b"grown", value=default_codec().encode(frame), partition=3)
        assert prod.flush(30) == 0
        assert landed("grown"), "event on a partition added at run time was not projected"
        assert count(schema, "frames", f"event_id = '{frame.event_id}' AND "
                                       "log_partition = 3") == 1
        assert count(schema, "projector_offsets",
                     f"topic = '{topic}' AND partition = 3 AND next_offset = 1") == 1
    finally:
        proj.stop()
        runner.join(30)
        proj.close()
    assert not runner.is_alive()
