"""Graceful shutdown: SIGTERM stops intake, flushes, commits and closes, and a restarted
process continues exactly where the stopped one left off, so no event is lost.

Each service is a real subprocess (its own session, stopped by PID, free ports) against
the test stack, fed while it runs, SIGTERMed mid-stream, fed while it is down, restarted:
- projector (`vigil project`): every FrameAnalyzed published before, during and after the
  stop is a row in the read model exactly once; its /metrics serves `vigil_alerts_open`
  and `vigil_dlq_messages_total`;
- worker (`vigil worker`, scene agent only): every scene event an uninterrupted run makes
  (the pure engine over the same frames) is produced, byte-identical after dedup by event
  id; its Faust web page /metrics serves `vigil_inference_*`, `vigil_consumer_lag` and
  `vigil_dlq_messages_total`;
- notifier (`vigil notifier`): every alert event published before and after the stop is
  delivered to the webhook and recorded once per alert event id.
The edge's SIGTERM path (flush the outbox, no sequence gap) is covered by
tests/integration/test_edge_kafka.py::test_sigterm_flushes_and_exits_cleanly.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import psycopg
import pytest

from agents.scene_rules import compile_camera, process
from schemas.codec import default_codec
from schemas.events import Event, FrameAnalyzed
from schemas.site_config import config_events, parse_site
from schemas.topics import topic_name
from tools.bench.scene import demo_site, demo_streams, merge
from tools.devstack.process import free_port

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]


class Service:
    """One `vigil ...` subprocess in its own session, logging to a file, stopped by PID."""

    def __init__(self, argv: list[str], env: dict[str, str], log: Path) -> None:
        self.argv, self.env, self.log = argv, env, log
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log.open("ab") as fh:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "vigil_cli", *self.argv], env=self.env, cwd=ROOT,
                stdout=fh, stderr=subprocess.STDOUT, start_new_session=True)

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def sigterm(self, timeout: float = 45) -> int:
        """SIGTERM and wait: the exit code of a graceful stop."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout)

    def kill(self) -> None:
        """Cleanup only (a test failed before its SIGTERM): SIGKILL this PID."""
        if self.alive():
            assert self.proc is not None
            self.proc.kill()
            self.proc.wait(10)


@pytest.fixture
def services() -> Iterator[list[Service]]:
    made: list[Service] = []
    yield made
    for s in made:
        s.kill()


def wait_for(check: object, timeout: float, what: str, svc: Service | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():  # type: ignore[operator]
            return
        if svc is not None:
            assert svc.alive(), f"{svc.argv[0]} died while waiting for {what}; see {svc.log}"
        time.sleep(0.5)
    pytest.fail(f"timed out waiting for {what}" + (f"; see {svc.log}" if svc else ""))


def scrape(port: int, path: str = "/metrics") -> tuple[str, str]:
    """(content type, body) of a metrics page, or ("", "") while it is not up yet."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as r:
            return r.headers.get("Content-Type", ""), r.read().decode()
    except OSError:
        return "", ""


def publish(frames: list[FrameAnalyzed]) -> None:
    from schemas.producer import EventProducer

    producer = EventProducer(**{"linger.ms": 5})
    for f in frames:
        producer.send("detections", f.camera_id, f)
    assert producer.flush() == 0


# ---------------------------------------------------------------------------- projector


def test_projector_sigterm_mid_stream_loses_nothing(
    vigil_env: dict[str, str], topic_prefix: str, services: list[Service], tmp_path: Path
) -> None:
    from projections.replay import drop_schema
    from vigil.settings import get_settings

    dsn = get_settings().database_dsn
    port = free_port()
    env = dict(vigil_env, VIGIL_PROJECTOR_SCHEMA=topic_prefix,
               VIGIL_PROJECTOR_METRICS_PORT=str(port))
    frames = merge(demo_streams(duration_s=120).values())
    n_dets = sum(len(f.detections) for f in frames)
    first, second, third = frames[:300], frames[300:600], frames[600:]

    def rows(table: str) -> tuple[int, int]:
        try:
            with psycopg.connect(dsn) as c:
                got = c.execute(f"SELECT count(*), count(DISTINCT event_id) "
                                f"FROM {topic_prefix}.{table}").fetchone()
        except psycopg.errors.UndefinedTable:
            return 0, 0
        assert got is not None
        return int(got[0]), int(got[1])

    publish(first)
    log = tmp_path / "projector.log"
    p1 = Service(["project"], env, log)
    services.append(p1)
    try:
        p1.start()
        wait_for(lambda: rows("frame_analyses")[0] >= 100, 60, "first frames projected", p1)
        # metrics of the projector, while it runs
        ctype, body = scrape(port)
        assert ctype.startswith("text/plain")
        assert "vigil_alerts_open{" in body  # zeros for every severity x open state
        assert "vigil_dlq_messages_total" in body and "vigil_projector_lag" in body
        publish(second)  # arrives while it is projecting: the SIGTERM lands mid-stream
        assert p1.sigterm() == 0, f"projector did not stop cleanly; see {log}"
        assert "projector stopped" in log.read_text()
        stopped_at = rows("frame_analyses")[0]
        publish(third)  # while it is down
        p2 = Service(["project"], env, log)
        services.append(p2)
        p2.start()
        wait_for(lambda: rows("frame_analyses")[0] >= len(frames), 90, "all frames", p2)
        time.sleep(1.0)  # anything extra would show up now
        assert rows("frame_analyses") == (len(frames), len(frames))
        assert rows("detections")[0] == n_dets
        assert stopped_at < len(frames)  # the restart really had work left
        assert p2.sigterm() == 0
    finally:
        drop_schema(dsn, topic_prefix)


# ---------------------------------------------------------------------------- worker


def reference_run() -> dict[str, Event]:
    """What an uninterrupted scene agent emits: the pure engine over every camera."""
    entities = [ev for _, ev in config_events(parse_site(demo_site()))]
    out: dict[str, Event] = {}
    for camera, cam_frames in demo_streams().items():
        spec = compile_camera(camera, entities)
        state = None
        for f in cam_frames:
            state, events = process(spec, f, state)
            out.update((e.event_id, e) for e in events)
    return out


def read_topic(suffix: str, until: set[str], timeout: float, svc: Service,
               counts: dict[str, int] | None = None) -> dict[str, bytes]:
    """Events of `suffix` by event id until every id in `until` was seen (or timeout);
    `counts` receives how often each id was read (duplicates are allowed, loss is not)."""
    from confluent_kafka import Consumer

    from vigil.kafka import consumer_config

    c = Consumer(consumer_config(f"it-graceful-{os.getpid()}-{time.time_ns()}"))
    c.subscribe([topic_name(suffix)])
    got: dict[str, bytes] = {}
    codec = default_codec()
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline and not until <= set(got):
            assert svc.alive(), f"{svc.argv[0]} died; see {svc.log}"
            msg = c.poll(0.5)
            if msg is None or msg.error() is not None:
                continue
            ev = codec.decode(msg.value())
            got.setdefault(ev.event_id, msg.value())
            if counts is not None:
                counts[ev.event_id] = counts.get(ev.event_id, 0) + 1
    finally:
        c.close()
    return got


def test_worker_sigterm_mid_stream_loses_nothing_and_serves_metrics(
    vigil_env: dict[str, str], topic_prefix: str, services: list[Service], tmp_path: Path
) -> None:
    from vigil_cli.config import apply_site

    port = free_port()
    env = dict(vigil_env, VIGIL_WORKER_AGENTS="scene", VIGIL_WORKER_WEB_PORT=str(port),
               VIGIL_WORKER_ID="graceful-it")
    (Path(env["VIGIL_STATE_DIR"]) / "worker" / topic_prefix / "graceful-it").mkdir(
        parents=True, exist_ok=True)
    apply_site(parse_site(demo_site()))
    expected = reference_run()
    codec = default_codec()
    frames = merge(demo_streams().values())
    cut = len(frames) * 2 // 5
    publish(frames[:cut])

    log = tmp_path / "worker.log"
    w1 = Service(["worker", "-l", "info"], env, log)
    services.append(w1)
    w1.start()
    early = {i for i, e in expected.items() if e.occurred_at <= frames[cut // 2].occurred_at}
    assert early <= set(read_topic("scene", early, 90, w1)), f"no scene output; see {log}"

    # /metrics on the Faust web server, bound to 127.0.0.1 (VIGIL_METRICS_HOST default)
    wait_for(lambda: "vigil_consumer_lag{" in scrape(port)[1], 30, "consumer lag series", w1)
    ctype, body = scrape(port)
    assert ctype.startswith("text/plain; version=0.0.4")
    for name in ("vigil_inference_triton_latency_seconds", "vigil_inference_in_flight",
                 "vigil_inference_triton_failures_total", "vigil_dlq_messages_total"):
        assert f"# TYPE {name.removesuffix('_total')}" in body, name
    lag_lines = [ln for ln in body.splitlines() if ln.startswith("vigil_consumer_lag{")]
    assert any(f'topic="{topic_name("detections")}"' in ln and
               f'group="{topic_prefix}-worker"' in ln for ln in lag_lines), lag_lines

    publish(frames[cut:])  # the worker is mid-stream when SIGTERM arrives
    assert w1.sigterm() == 0, f"worker did not stop cleanly; see {log}"

    w2 = Service(["worker", "-l", "info"], env, log)
    services.append(w2)
    w2.start()
    counts: dict[str, int] = {}
    got = read_topic("scene", set(expected), 120, w2, counts)
    assert set(got) == set(expected), (
        f"missing {sorted(set(expected) - set(got))[:5]}, extra "
        f"{sorted(set(got) - set(expected))[:5]}; see {log}")
    for event_id, ev in expected.items():  # exactly once after dedup, byte-identical
        assert got[event_id] == codec.encode(ev)
    assert w2.sigterm() == 0


# ---------------------------------------------------------------------------- notifier


class Receiver:
    """A webhook receiver counting deliveries by X-Vigil-Event-Id."""

    def __init__(self) -> None:
        self.seen: dict[str, int] = {}
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length", 0)))
                eid = self.headers.get("X-Vigil-Event-Id", "")
                receiver.seen[eid] = receiver.seen.get(eid, 0) + 1
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def alert_events(n: int, offset: int = 0) -> list[Event]:
    from datetime import UTC, datetime

    from schemas.events import AlertRaised

    now = datetime.now(UTC)
    return [AlertRaised.create(
        producer="it/1", alert_id=f"alert-{offset + i}", incident_key=f"inc-{offset + i}",
        severity="warning", site_id="s", camera_id="cam", rule_id="r",
        rule_type="loitering", version=1, first_evidence_at=now, last_evidence_at=now)
        for i in range(n)]


def test_notifier_sigterm_delivers_everything_after_restart(
    vigil_env: dict[str, str], topic_prefix: str, services: list[Service], tmp_path: Path
) -> None:
    from schemas.producer import EventProducer

    receiver = Receiver()
    port = free_port()
    env = dict(vigil_env, VIGIL_NOTIFY_WEBHOOKS=f"ops={receiver.url}",
               VIGIL_NOTIFY_SECRET="s3cret", VIGIL_NOTIFY_METRICS_PORT=str(port),
               VIGIL_NOTIFY_RATE_PER_MIN="60000")  # pacing is not under test here
    producer = EventProducer()
    before, after = alert_events(20), alert_events(20, offset=20)
    try:
        for e in before:
            producer.send("alerts", e.alert_id, e)  # type: ignore[attr-defined]
        producer.flush()
        log = tmp_path / "notifier.log"
        n1 = Service(["notifier"], env, log)
        services.append(n1)
        n1.start()
        wait_for(lambda: len(receiver.seen) >= 5, 60, "first deliveries", n1)
        assert "vigil_dlq_messages_total" in scrape(port)[1]
        assert n1.sigterm() == 0, f"notifier did not stop cleanly; see {log}"
        assert "notifier stopped" in log.read_text()
        for e in after:
            producer.send("alerts", e.alert_id, e)  # type: ignore[attr-defined]
        producer.flush()
        n2 = Service(["notifier"], env, log)
        services.append(n2)
        n2.start()
        ids = {e.event_id for e in before + after}
        wait_for(lambda: ids <= set(receiver.seen), 60, "every alert delivered", n2)
        assert n2.sigterm() == 0
        # at-least-once with a graceful stop: nothing lost, and the stop committed what it
        # delivered, so nothing was delivered twice either
        assert set(receiver.seen) == ids
        assert max(receiver.seen.values()) == 1, json.dumps(receiver.seen)
    finally:
        receiver.close()


# ---------------------------------------------------------------------------- edge


def test_edge_exports_stream_up_and_stops_on_sigterm(
    vigil_env: dict[str, str], services: list[Service], tmp_path: Path
) -> None:
    """Only the new gauge and a clean exit; the no-gap proof is in test_edge_kafka.py."""
    port = free_port()
    site = tmp_path / "edge.yaml"
    site.write_text(
        f"edge_id: edge-g\nsite_id: s\nheartbeat_interval_s: 60\nmetrics_port: {port}\n"
        "cameras:\n  - {camera_id: cam-g, url: 'sim://passers_by', loop: true,"
        " realtime: true}\n")
    edge = Service(["edge", "run", "--config", str(site)], vigil_env, tmp_path / "edge.log")
    services.append(edge)
    edge.start()
    up = 'vigil_edge_stream_up{camera_id="cam-g",edge_id="edge-g"} 1.0'
    wait_for(lambda: up in scrape(port)[1], 30, "vigil_edge_stream_up = 1", edge)
    assert edge.sigterm() == 0
