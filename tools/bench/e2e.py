"""`vigil bench e2e`: frame -> alert-in-the-read-model latency through the real processes.

Why a separate benchmark: the stage benchmarks (scene, alerts, projection) each time one
hop against its own floor; an operator only sees the sum — the moment an alert row is
readable in PostgreSQL after the frame that completed the rule left the camera. That sum
includes the hops between stages (Kafka fetch waits, Faust's commit cadence, the
projector's batch wait), which no stage benchmark sees.

Phases (each with its own topic prefix, PostgreSQL schema, state folder and web port, so
nothing leaks between phases or into other people's runs on the same broker):

- ``full``: 8 cameras at 1 fps through the whole pipeline. We publish FrameCaptured
  ourselves (JPEGs rendered from the ``loiterer`` scenario, ``occurred_at`` = wall time at
  send, so rules on event time fire live), a worker runs inference (Triton), scene and
  alerts, the projector writes the read model. Loitering is the measured rule because its
  ``last_evidence_at`` is exactly the ``occurred_at`` of the frame that completed it.
- ``cams<N>``: above the inference stage, FrameAnalyzed injected on ``detections`` for N
  simulated cameras at 1 fps (scene_bench's synthetic people: loiterers in K zones per
  camera, plus walkers that never fire), worker with scene+alerts, projector, for 64, 256
  and 1000 cameras (plus one bisection step when the lag stops being bounded). Reports
  p50/p99, worker and projector lag over the run, and the worker's resident memory.
  Note that the injecting process (Avro encoding ~N events/s) shares the machine's cores.
- ``scale``: the scene stage with one worker, then two in one consumer group, on the same
  fixed burst of injected detections: time until the group has committed all of it.
- baseline: the raw produce -> consume round trip of one message on the same broker.

Latency = (wall time our poller first sees the alert row) - (alert's last_evidence_at).
The poller runs every 50 ms, so figures include up to 50 ms of polling delay (25 ms on
average); the producing side and the poller share one clock (same machine).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from tools.bench.runner import BenchResult, percentile

ROOT = Path(__file__).resolve().parents[2]
POLL_S = 0.05
T0 = datetime(2026, 1, 15, 12, 0, tzinfo=UTC)  # placeholder; every frame is re-timed at send


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _rss_bytes(pid: int) -> int | None:
    """VmRSS of a live process from /proc (None once it is gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


# --------------------------------------------------------------------------- one isolated run


@dataclass
class Proc:
    name: str
    popen: subprocess.Popen[bytes]
    log: Path


@dataclass
class Sandbox:
    """Topics, schema, state folder and child processes of one phase; `close` removes them.

    Why per phase: a phase's RSS and lag must be its own, and a crashed phase must not
    leave offsets or RocksDB state that the next phase would silently resume from."""

    bootstrap: str
    database_url: str
    dsn: str
    partitions: int
    prefix: str = field(default_factory=lambda: f"e2e{uuid.uuid4().hex[:8]}")
    procs: list[Proc] = field(default_factory=list)

    def __post_init__(self) -> None:
        from confluent_kafka import Producer

        from schemas.topics import apply_topics

        self.state = Path(tempfile.mkdtemp(prefix=f"vigil-{self.prefix}-"))
        (self.state / "worker" / self.prefix).mkdir(parents=True)
        apply_topics(self.bootstrap, self.prefix, partitions_override=self.partitions)
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("VIGIL_")}
        self.env.update(KAFKA_BOOTSTRAP=self.bootstrap, DATABASE_URL=self.database_url,
                        VIGIL_TOPIC_PREFIX=self.prefix, VIGIL_PROJECTOR_SCHEMA=self.prefix,
                        VIGIL_STATE_DIR=str(self.state), VIGIL_LOG_FORMAT="text")
        for k in ("TRITON_URL", "S3_ENDPOINT", "SCHEMA_REGISTRY_URL"):
            if k in os.environ:
                self.env[k] = os.environ[k]
        res = subprocess.run([sys.executable, "-m", "vigil_cli", "db", "upgrade"], env=self.env,
                             capture_output=True, text=True, timeout=120, cwd=ROOT,
                             stdin=subprocess.DEVNULL)
        if res.returncode != 0:
            raise RuntimeError(f"vigil db upgrade failed: {res.stderr[-1500:]}")
        self.producer = Producer({"bootstrap.servers": self.bootstrap, "linger.ms": 5,
                                  "acks": "all", "partitioner": "murmur2_random",
                                  "queue.buffering.max.messages": 500_000,
                                  "message.max.bytes": 2_000_000})

    def topic(self, suffix: str) -> str:
        return f"{self.prefix}.{suffix}"

    def send(self, suffix: str, key: str, value: Any) -> None:
        from schemas.codec import default_codec

        raw = default_codec().encode(value)
        while True:
            try:
                self.producer.produce(self.topic(suffix), key=key.encode(), value=raw)
                break
            except BufferError:
                self.producer.poll(0.05)
        self.producer.poll(0)

    def apply_site(self, site: dict[str, Any]) -> None:
        """The site's zones and rules as config events (what `vigil config apply` sends)."""
        from schemas.site_config import SiteConfig, config_events

        for key, event in config_events(SiteConfig.model_validate(site), producer="e2e-bench"):
            self.send("config", key, event)
        self.producer.flush(30)

    def spawn(self, name: str, argv: list[str], **env: str) -> Proc:
        log = self.state / f"{name}.log"
        with log.open("ab") as fh:
            popen = subprocess.Popen([sys.executable, "-m", *argv], env={**self.env, **env},
                                     cwd=ROOT, stdout=fh, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, start_new_session=True)
        proc = Proc(name, popen, log)
        self.procs.append(proc)
        return proc

    def worker(self, agents: str, wid: str = "w1") -> Proc:
        return self.spawn(f"worker-{wid}", ["agents.cli", "worker", "-l", "info"],
                          VIGIL_WORKER_AGENTS=agents, VIGIL_WORKER_ID=wid,
                          VIGIL_WORKER_WEB_PORT=str(_free_port()))

    def projector(self) -> Proc:
        return self.spawn("projector", ["vigil_cli.main", "project"])

    def wait_ready(self, procs: list[Proc], timeout: float = 120) -> None:
        """Until every worker logged "Worker ready" (Faust's own start-up marker)."""
        deadline = time.monotonic() + timeout
        for p in procs:
            while b"Worker ready" not in p.log.read_bytes():
                if p.popen.poll() is not None:
                    raise RuntimeError(f"{p.name} exited ({p.popen.returncode}); see {p.log}")
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{p.name} not ready after {timeout:.0f} s; see {p.log}")
                time.sleep(0.2)

    def check_alive(self) -> None:
        for p in self.procs:
            if p.popen.poll() is not None:
                raise RuntimeError(f"{p.name} exited ({p.popen.returncode}); see {p.log}")

    def lag(self, suffix: str, group: str | None) -> int:
        """Messages on `suffix` not yet consumed: by a Kafka group's committed offsets, or
        (group None) by the projector's positions in PostgreSQL (it never commits to Kafka)."""
        from confluent_kafka import Consumer, TopicPartition

        name = self.topic(suffix)
        c = Consumer({"bootstrap.servers": self.bootstrap,
                      "group.id": group or f"{self.prefix}-e2e-probe",
                      "enable.auto.commit": False})
        try:
            tps = [TopicPartition(name, p) for p in range(self.partitions)]
            highs = {tp.partition: c.get_watermark_offsets(tp, timeout=10)[1] for tp in tps}
            if group is not None:
                done = {tp.partition: max(tp.offset, 0) for tp in c.committed(tps, timeout=10)}
            else:
                import psycopg

                with psycopg.connect(self.dsn, autocommit=True) as conn:
                    rows = conn.execute(
                        f'SELECT partition, next_offset FROM "{self.prefix}".projector_offsets '
                        "WHERE topic = %s", (name,)).fetchall()
                done = {int(p): int(o) for p, o in rows}
        finally:
            c.close()
        return sum(max(0, h - done.get(p, 0)) for p, h in highs.items())

    def close(self) -> None:
        """Stop our children by PID (SIGTERM, then SIGKILL), delete topics, drop the schema."""
        for p in self.procs:
            if p.popen.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(p.popen.pid, 15)
        for p in self.procs:
            try:
                p.popen.wait(20)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(p.popen.pid, 9)
                p.popen.wait(10)
        with contextlib.suppress(Exception):
            self.producer.flush(5)
        from schemas.topics import delete_topics

        with contextlib.suppress(Exception):
            delete_topics(self.bootstrap, self.prefix)
        from projections.replay import drop_schema

        with contextlib.suppress(Exception):
            drop_schema(self.dsn, self.prefix)
        if not os.environ.get("VIGIL_BENCH_KEEP_LOGS"):
            shutil.rmtree(self.state, ignore_errors=True)


# --------------------------------------------------------------------------- alert watcher


class AlertWatcher(threading.Thread):
    """Polls the read model's alerts table; first sight of a row = the alert is visible."""

    def __init__(self, dsn: str, schema: str):
        super().__init__(daemon=True)
        self.dsn, self.schema = dsn, schema
        self.latency_ms: dict[str, float] = {}
        self.stop_event = threading.Event()
        self.errors = 0

    def run(self) -> None:
        import psycopg

        conn = None
        while not self.stop_event.is_set():
            try:
                if conn is None:
                    conn = psycopg.connect(self.dsn, autocommit=True)
                rows = conn.execute(
                    f'SELECT alert_id, last_evidence_at FROM "{self.schema}".alerts '
                    "WHERE rule_type = 'loitering'").fetchall()
                now = time.time()
                for aid, last in rows:
                    if aid not in self.latency_ms:
                        self.latency_ms[aid] = (now - last.timestamp()) * 1000
            except Exception:  # schema not there yet, or a blip: keep polling
                self.errors += 1
                if conn is not None:
                    with contextlib.suppress(Exception):
                        conn.close()
                conn = None
            self.stop_event.wait(POLL_S)
        if conn is not None:
            conn.close()

    def stop(self) -> list[float]:
        self.stop_event.set()
        self.join(5)
        return list(self.latency_ms.values())


@contextlib.contextmanager
def _watching(dsn: str, schema: str) -> Iterator[AlertWatcher]:
    w = AlertWatcher(dsn, schema)
    w.start()
    try:
        yield w
    finally:
        w.stop()


# --------------------------------------------------------------------------- synthetic scenes


@dataclass(frozen=True)
class Plan:
    """N cameras x K loitering zones; one loiterer per zone at a staggered time."""

    cameras: int
    zones_per_camera: int
    seconds: int
    dwell_s: float = 5.0

    def cam(self, i: int) -> str:
        return f"e2ecam{i:04d}"

    def site(self) -> dict[str, Any]:
        k = self.zones_per_camera
        zones, rules = [], []
        for i in range(self.cameras):
            for z in range(k):
                zid = f"{self.cam(i)}-z{z}"
                zones.append({"zone_id": zid, "camera_id": self.cam(i),
                              "polygon": [[z / k, 0.5], [(z + 1) / k, 0.5],
                                          [(z + 1) / k, 1.0], [z / k, 1.0]]})
                rules.append({"rule_id": f"{zid}-loiter", "rule_type": "loitering",
                              "zone_id": zid, "dwell_s": self.dwell_s, "gap_tolerance_s": 3})
        return {"site_id": "e2e", "edge_id": "e2e-edge",
                "cameras": [{"camera_id": self.cam(i)} for i in range(self.cameras)],
                "zones": zones, "rules": rules}

    def streams(self) -> list[list[Any]]:
        """Per camera, its frames (scene_bench's perfect-detector FrameAnalyzed)."""
        from tools.bench.scene import FrameSpec, Person, frames

        k = self.zones_per_camera
        stay = self.dwell_s + 6
        latest_start = max(3.0, self.seconds - stay - 4)
        out = []
        for i in range(self.cameras):
            people = []
            for z in range(k):
                # spread the alert moments over the run so the pipeline is measured warm
                frac = ((i * k + z) * 0.618034) % 1.0
                t0 = 3.0 + frac * (latest_start - 3.0)
                x = (z + 0.5) / k
                people.append(Person([(t0, x, 0.8), (t0 + stay, x + 0.01, 0.8),
                                      (t0 + stay + 1, x, 0.3), (t0 + stay + 2, x, 0.3)]))
            for w in range(2):  # walkers above the zones: tracking work, no rule hits
                y = 0.2 + 0.1 * w
                people.append(Person([(0, 0.02, y), (self.seconds, 0.98, y)], width=0.04))
            out.append(frames(FrameSpec(self.cam(i), T0, self.seconds, people,
                                        edge_id="e2e-edge")))
        return out


def _drive(sb: Sandbox, suffix: str, streams: list[list[Any]], seconds: int,
           sample_lag: Any = None) -> dict[str, Any]:
    """Publish frame s of every camera during second s, spread over the second in 10 slices,
    each re-timed to the wall clock at send (event time = wall time, so rules fire live)."""
    n = len(streams)
    slices = 10
    start = time.monotonic()
    late_max = 0.0
    samples: list[tuple[float, Any]] = []
    for s in range(seconds):
        for sl in range(slices):
            due = start + s + sl / slices
            delay = due - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            else:
                late_max = max(late_max, -delay)
            for c in range(sl * n // slices, (sl + 1) * n // slices):
                if s >= len(streams[c]):
                    continue
                f = streams[c][s]
                now = datetime.now(UTC)
                if suffix == "frames":
                    f = f.evolve(event_id=str(uuid.uuid4()), occurred_at=now)
                else:
                    f = f.evolve(event_id=str(uuid.uuid4()), occurred_at=now, frame_sequence=s)
                sb.send(suffix, f.camera_id, f)
        if sample_lag is not None and s % 5 == 4:
            samples.append((round(time.monotonic() - start, 1), sample_lag()))
        if s % 5 == 0:
            sb.check_alive()
    sb.producer.flush(30)
    elapsed = time.monotonic() - start
    return {"send_elapsed_s": round(elapsed, 2), "send_late_max_s": round(late_max, 3),
            "lag_samples": samples}


# --------------------------------------------------------------------------- phases


def _above_inference(bootstrap: str, db_url: str, dsn: str, cameras: int, seconds: int,
                     zones_per_camera: int) -> dict[str, Any]:
    plan = Plan(cameras, zones_per_camera, seconds)
    streams = plan.streams()
    expected = cameras * zones_per_camera
    sb = Sandbox(bootstrap, db_url, dsn, partitions=8)
    try:
        sb.apply_site(plan.site())
        w = sb.worker("scene,alerts")
        sb.projector()
        sb.wait_ready([w])
        group = f"{sb.prefix}-worker"

        def lags() -> dict[str, int]:
            return {"worker": sb.lag("detections", group), "projector": sb.lag("detections", None)}

        with _watching(dsn, sb.prefix) as watcher:
            drive = _drive(sb, "detections", streams, seconds, lags)
            end_lag = lags()
            t_end = time.monotonic()
            # let the alerts of the last seconds arrive (bounded wait)
            while len(watcher.latency_ms) < expected and time.monotonic() - t_end < 30:
                time.sleep(0.2)
            drain = None
            while time.monotonic() - t_end < 60:
                cur = lags()
                if cur["worker"] == 0 and cur["projector"] == 0:
                    drain = round(time.monotonic() - t_end, 1)
                    break
                time.sleep(0.5)
        lat = list(watcher.latency_ms.values())
        rss = _rss_bytes(w.popen.pid)
        samples = drive["lag_samples"]
        first = samples[0][1] if samples else {"worker": 0, "projector": 0}
        # bounded: at the end of the traffic the backlog is no bigger than ~3 s of input,
        # nor more than 1 s of input above where it stood after the first 5 s
        bounded = all(end_lag[k] <= max(3 * cameras, first[k] + cameras)
                      for k in ("worker", "projector"))
        return {"cameras": cameras, "zones_per_camera": zones_per_camera, "seconds": seconds,
                "frames": cameras * seconds, "alerts_expected": expected,
                "alerts_seen": len(lat), "p50_ms": percentile(lat, 0.5),
                "p99_ms": percentile(lat, 0.99),
                "max_ms": max(lat) if lat else float("nan"),
                "lag_at_first_sample": first, "lag_at_end": end_lag, "lag_bounded": bounded,
                "drained_after_s": drain, "worker_rss_mb": rss / 2**20 if rss else None,
                **drive}
    finally:
        sb.close()


def _render_loiterer_jpegs(seconds: int) -> tuple[list[bytes], int, int, dict[str, Any]]:
    """The loiterer scenario at 1 fps as JPEGs (same pixels for every camera)."""
    import cv2
    import yaml

    from edge_producer.sim.render import iter_frames
    from edge_producer.sim.scenario import load_scenario, resolve_scenario_path

    path = resolve_scenario_path("loiterer")
    sc = load_scenario(path)
    step = max(1, round(sc.fps))
    jpegs = []
    for f in iter_frames(sc, stop=seconds * step, step=step):
        ok, buf = cv2.imencode(".jpg", f.image, [cv2.IMWRITE_JPEG_QUALITY, 85])
        if not ok:
            raise RuntimeError("JPEG encoding failed")
        jpegs.append(buf.tobytes())
    site = yaml.safe_load(path.read_text())["site"]
    return jpegs, sc.width, sc.height, site


def _full_pipeline(bootstrap: str, db_url: str, dsn: str, cameras: int = 8,
                   scene_seconds: int = 30, stagger_s: float = 1.5) -> dict[str, Any]:
    from schemas.events import FrameCaptured

    jpegs, width, height, scen_site = _render_loiterer_jpegs(scene_seconds)
    zone = scen_site["zones"][0]
    rule = scen_site["rules"][0]
    cams = [f"e2efull{i}" for i in range(cameras)]
    site = {"site_id": "e2e-full", "edge_id": "e2e-edge",
            "cameras": [{"camera_id": c} for c in cams],
            "zones": [{**zone, "zone_id": f"{c}-{zone['zone_id']}", "camera_id": c}
                      for c in cams],
            "rules": [{**rule, "rule_id": f"{c}-{rule['rule_id']}", "camera_id": c,
                       "zone_id": f"{c}-{zone['zone_id']}", "dwell_s": 8,
                       "gap_tolerance_s": 4} for c in cams]}
    # camera i starts the scenario i*stagger s later (blank frames before: an empty scene)
    seconds = scene_seconds + round(stagger_s * (cameras - 1)) + 1
    streams: list[list[Any]] = []
    for i, cam in enumerate(cams):
        off = round(stagger_s * i)
        seq = []
        for s in range(seconds):
            j = s - off
            img = jpegs[min(max(j, 0), len(jpegs) - 1)] if 0 <= j < len(jpegs) else jpegs[0]
            seq.append(FrameCaptured.create(
                producer="e2e-bench", occurred_at=T0, edge_id="e2e-edge", camera_id=cam,
                sequence=s, width=width, height=height, motion_score=1.0, jpeg=img))
        streams.append(seq)
    sb = Sandbox(bootstrap, db_url, dsn, partitions=8)
    try:
        sb.apply_site(site)
        w = sb.worker("inference,scene,alerts")
        sb.projector()
        sb.wait_ready([w])
        group = f"{sb.prefix}-worker"
        with _watching(dsn, sb.prefix) as watcher:
            drive = _drive(sb, "frames", streams, seconds,
                           lambda: {"frames": sb.lag("frames", group)})
            t_end = time.monotonic()
            end_lag = sb.lag("frames", group)
            first = drive["lag_samples"][0][1]["frames"] if drive["lag_samples"] else 0
            while len(watcher.latency_ms) < cameras and time.monotonic() - t_end < 45:
                time.sleep(0.2)
        lat = list(watcher.latency_ms.values())
        rss = _rss_bytes(w.popen.pid)
        return {"cameras": cameras, "seconds": seconds, "scenario": "loiterer (dwell 8 s)",
                "alerts_expected": cameras, "alerts_seen": len(lat),
                "p50_ms": percentile(lat, 0.5), "p99_ms": percentile(lat, 0.99),
                "max_ms": max(lat) if lat else float("nan"),
                "frames_lag_at_end": end_lag,
                "lag_bounded": end_lag <= max(3 * cameras, first + cameras),
                "worker_rss_mb": rss / 2**20 if rss else None,
                **drive}
    finally:
        sb.close()


def _scene_scale(bootstrap: str, db_url: str, dsn: str, workers: int, cameras: int,
                 seconds: int) -> dict[str, Any]:
    """Scene stage only: a fixed burst of detections, time until the group committed it all."""
    plan = Plan(cameras, 1, seconds)
    streams = plan.streams()
    sb = Sandbox(bootstrap, db_url, dsn, partitions=8)
    try:
        sb.apply_site(plan.site())
        procs = [sb.worker("scene", f"w{i + 1}") for i in range(workers)]
        sb.wait_ready(procs)
        group = f"{sb.prefix}-worker"
        now = datetime.now(UTC) - timedelta(seconds=seconds + 60)
        # warm-up: one frame per camera, wait until all committed (assignment settled)
        for st in streams:
            sb.send("detections", st[0].camera_id, st[0].evolve(occurred_at=now))
        sb.producer.flush(30)
        # (bounded: once a commit was seen to stall here; the burst commits past it anyway)
        deadline = time.monotonic() + 20
        while (warm_lag := sb.lag("detections", group)) > 0 and time.monotonic() < deadline:
            time.sleep(0.2)
        burst = [f.evolve(event_id=str(uuid.uuid4()),
                          occurred_at=now + timedelta(seconds=s))
                 for s in range(1, seconds) for f in (st[s] for st in streams)]
        t0 = time.monotonic()
        for f in burst:
            sb.send("detections", f.camera_id, f)
        sb.producer.flush(60)
        deadline = time.monotonic() + 300
        while sb.lag("detections", group) > 0:
            if time.monotonic() > deadline:
                raise RuntimeError(f"{workers} worker(s) did not finish the burst in time")
            sb.check_alive()
            time.sleep(0.1)
        elapsed = time.monotonic() - t0
        rss = [_rss_bytes(p.popen.pid) for p in procs]
        return {"workers": workers, "events": len(burst), "elapsed_s": round(elapsed, 2),
                "warmup_residual_lag": warm_lag,
                "events_per_s": len(burst) / elapsed,
                "worker_rss_mb": [r / 2**20 if r else None for r in rss]}
    finally:
        sb.close()


def _raw_round_trip(bootstrap: str, n: int) -> list[float]:
    """One message produced, then consumed by an assigned consumer: the floor of any hop."""
    from confluent_kafka import Consumer, Producer, TopicPartition
    from confluent_kafka.admin import AdminClient, NewTopic

    topic = f"e2e{uuid.uuid4().hex[:8]}.raw"
    admin = AdminClient({"bootstrap.servers": bootstrap})
    admin.create_topics([NewTopic(topic, num_partitions=1, replication_factor=-1)])[
        topic].result(30)
    prod = Producer({"bootstrap.servers": bootstrap, "linger.ms": 0, "acks": "all"})
    cons = Consumer({"bootstrap.servers": bootstrap, "group.id": f"{topic}-g",
                     "enable.auto.commit": False, "fetch.wait.max.ms": 100})
    out = []
    try:
        cons.assign([TopicPartition(topic, 0, 0)])
        for i in range(n + 3):
            t0 = time.perf_counter()
            prod.produce(topic, key=b"k", value=b"x" * 200)
            prod.flush(10)
            while True:
                msg = cons.poll(5)
                if msg is not None and not msg.error():
                    break
            if i >= 3:  # the first ones include connection set-up
                out.append((time.perf_counter() - t0) * 1000)
    finally:
        cons.close()
        for fut in admin.delete_topics([topic]).values():
            with contextlib.suppress(Exception):
                fut.result(30)
    return out


# --------------------------------------------------------------------------- entry point


def run(quick: bool = False) -> BenchResult:
    """Run against the stack in the environment (KAFKA_BOOTSTRAP, DATABASE_URL, TRITON_URL)."""
    from vigil.settings import load_settings

    s = load_settings({k: v for k, v in os.environ.items() if k != "VIGIL_TOPIC_PREFIX"})
    args = (s.kafka_bootstrap, s.database_url, s.database_dsn)
    t_start = time.monotonic()
    raw = _raw_round_trip(s.kafka_bootstrap, 30 if quick else 100)
    details: dict[str, Any] = {
        "quick": quick,
        "raw_round_trip_p50_ms": statistics.median(raw),
        "raw_round_trip_p99_ms": percentile(raw, .99),
        "latency_definition": "alert row first seen in PostgreSQL (50 ms poll) minus the "
                              "wall time the frame that completed the loitering rule was "
                              "produced (its occurred_at = last_evidence_at)",
        "ratio_definition": "baseline_p50 / our_p50 (lower latency is better, so this "
                            "keeps 'higher ratio is better'); baseline = raw Kafka "
                            "produce->consume round trip on the same broker",
    }
    runs: list[dict[str, Any]] = []
    if quick:
        runs.append(_above_inference(*args, cameras=8, seconds=25, zones_per_camera=3))
        value = runs[0]["p50_ms"]
        details["value_is"] = "p50 of 8 cameras above inference (quick)"
    else:
        full = _full_pipeline(*args)
        details["full_pipeline"] = full
        for n, k in ((64, 2), (256, 1), (1000, 1)):
            runs.append(_above_inference(*args, cameras=n, seconds=45, zones_per_camera=k))
        # coarse search: one bisection step between the largest bounded and the smallest
        # unbounded count, so "the most this box sustains" is not off by a factor of four
        ok = [r["cameras"] for r in runs if r["lag_bounded"]]
        bad = [r["cameras"] for r in runs if not r["lag_bounded"]]
        if ok and bad and min(bad) > max(ok):
            mid = (max(ok) + min(bad)) // 2
            runs.append(_above_inference(*args, cameras=mid, seconds=45, zones_per_camera=1))
            runs.sort(key=lambda r: r["cameras"])
        # a burst long enough (~10 s) that Faust's 1 s commit interval is a small error
        one = _scene_scale(*args, workers=1, cameras=64, seconds=250)
        two = _scene_scale(*args, workers=2, cameras=64, seconds=250)
        details["scene_scale"] = {"one": one, "two": two,
                                  "two_vs_one": two["events_per_s"] / one["events_per_s"]}
        value = full["p50_ms"]
        details["value_is"] = "p50 of 8 cameras through the full pipeline (Triton inference)"
    details["above_inference"] = runs
    bounded = [r["cameras"] for r in runs if r["lag_bounded"]]
    details["max_cameras_bounded_lag"] = max(bounded) if bounded else 0
    details["elapsed_s"] = round(time.monotonic() - t_start, 1)
    base = details["raw_round_trip_p50_ms"]
    return BenchResult(name="e2e", value=value, unit="ms p50", baseline=base,
                       ratio=base / value if value and value == value else 0.0,
                       details=details)
