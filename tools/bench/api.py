"""`vigil bench api`: listing latency and throughput at 50 concurrent clients.

Setup: 1 M detections, 10 k alerts and 100 k scene events go into a
scratch read-model schema through the projector's own folds and writer
(`projections.handlers.fold` + `projections.writer.Writer`: the COPY/``ON CONFLICT``
path a live projector uses), skipping only Kafka and Avro, which the projection
benchmark already measures and which would make seeding take minutes. The API then runs
as its own process (``vigil api serve`` on 127.0.0.1) and `wrk`, a separate
load-generator process, drives 50 keep-alive connections against it.

The reference is the static `/health` route of the same server in the same run: it
costs the HTTP stack, middleware and the client, and nothing else, so
``ratio = listing req/s / health req/s`` says how much the read-model work (auth, query,
serialisation) costs on this machine, whatever else the machine is doing. Both schemas
are dropped afterwards.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import psycopg
from psycopg import sql

from tools.bench.runner import BenchResult

log = logging.getLogger(__name__)

CLIENTS = 50
PAGE = 50
SITES = 4
CAMERAS_PER_SITE = 5

#: wrk prints one JSON line at the end; latencies are in microseconds.
_WRK_SCRIPT = """
local key = os.getenv("VIGIL_BENCH_KEY")
if key ~= nil and key ~= "" then
  wrk.headers["Authorization"] = "Bearer " .. key
end
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    '{"requests":%d,"duration_us":%d,"bytes":%d,"connect_errors":%d,"read_errors":%d,' ..
    '"write_errors":%d,"status_errors":%d,"timeouts":%d,"p50_us":%d,"p95_us":%d,' ..
    '"p99_us":%d,"mean_us":%.1f,"max_us":%d}\\n',
    summary.requests, summary.duration, summary.bytes, e.connect, e.read, e.write,
    e.status, e.timeout, latency:percentile(50), latency:percentile(95),
    latency:percentile(99), latency.mean, latency.max))
end
"""


# --------------------------------------------------------------------------- seeding
def _cameras() -> list[tuple[str, str]]:
    return [(f"site-{s}", f"cam-{s}-{c}") for s in range(SITES) for c in range(CAMERAS_PER_SITE)]


def seed(dsn: str, schema: str, *, detections: int, alerts: int, scene_events: int,
         end: datetime, days: int = 75, per_frame: int = 20) -> dict[str, float]:
    """Fold synthetic events into `schema` with the projector's folds and writer, in
    chunks of one transaction each; returns rows and seconds per kind."""
    from projections.handlers import Batch, Position, fold
    from projections.migrate import set_search_path
    from projections.writer import Writer
    from schemas import events as ev

    cams = _cameras()
    start = end - timedelta(days=days)
    writer = Writer()
    offsets: dict[str, int] = {}
    timings: dict[str, float] = {}

    def pos(topic: str) -> Position:
        offsets[topic] = offsets.get(topic, -1) + 1
        return Position(topic, 0, offsets[topic])

    with psycopg.connect(dsn) as conn:
        set_search_path(conn, schema)

        def flush(batch: Batch) -> None:
            with conn.transaction():
                writer.write(conn, batch)

        t = time.perf_counter()
        batch = Batch()
        for site, cam in cams:
            fold(batch, ev.CameraConfigured.create(
                producer="bench", occurred_at=start, camera_id=cam, site_id=site,
                edge_id=f"edge-{site}", name=cam), pos("config"), 0)
        flush(batch)

        frames = max(1, detections // per_frame)
        step = (end - start) / frames
        chunk = 2500
        for lo in range(0, frames, chunk):
            batch = Batch()
            for f in range(lo, min(frames, lo + chunk)):
                site, cam = cams[f % len(cams)]
                dets = [ev.Detection(detection_id=f"d{f}-{d}", label="person", score=0.9,
                                     x1=0.1, y1=0.1, x2=0.2, y2=0.4)
                        for d in range(per_frame)]
                fold(batch, ev.FrameAnalyzed.create(
                    producer="bench", occurred_at=start + step * f, event_id=f"fa-{f}",
                    edge_id=f"edge-{site}", camera_id=cam, frame_sequence=f, width=640,
                    height=480, skipped=False, detections=dets, detector_model="m",
                    detector_version="1"), pos("detections"), 0)
            flush(batch)
        timings["detections_s"] = time.perf_counter() - t

        t = time.perf_counter()
        step = (end - start) / max(1, scene_events)
        for lo in range(0, scene_events, 20_000):
            batch = Batch()
            for i in range(lo, min(scene_events, lo + 20_000)):
                _, cam = cams[i % len(cams)]
                fold(batch, ev.ZoneEntered.create(
                    producer="bench", occurred_at=start + step * i, event_id=f"se-{i}",
                    camera_id=cam, zone_id=f"zone-{cam}", track_id=f"trk-{i}"),
                    pos("scene"), 0)
            flush(batch)
        timings["scene_events_s"] = time.perf_counter() - t

        t = time.perf_counter()
        step = (end - start) / max(1, alerts)
        for lo in range(0, alerts, 2000):
            batch = Batch()
            for a in range(lo, min(alerts, lo + 2000)):
                site, cam = cams[a % len(cams)]
                at = start + step * a
                key = f"inc-{a}"
                fold(batch, ev.AlertRaised.create(
                    producer="bench", occurred_at=at, event_id=f"ar-{a}", alert_id=f"al-{a}",
                    incident_key=key, site_id=site, camera_id=cam, zone_id=f"zone-{cam}",
                    rule_id=f"rule-{cam}", rule_type="loitering",
                    severity=("info", "warning", "critical")[a % 3], first_evidence_at=at,
                    last_evidence_at=at, snapshot_ref=None, version=1), pos("alerts"), 0)
            flush(batch)
        timings["alerts_s"] = time.perf_counter() - t
        conn.execute("ANALYZE")
        conn.commit()
    return timings


# --------------------------------------------------------------------------- server + load
def _free_port() -> int:
    from tools.testkit.api import free_port

    return free_port()


def cpu_seconds(pid: int) -> float:
    """CPU time of `pid` and its direct children (uvicorn workers), from /proc.

    Per request this is the server's cost whatever else the machine is doing, which on
    a shared two-core box is a steadier number than latency or req/s."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        # fields[0] is the state (3rd field of the file): ppid = [1], utime/stime = [11:13]
        if stat.parent.name == str(pid) or fields[1] == str(pid):
            total += (int(fields[11]) + int(fields[12])) / ticks
    return total


@dataclass
class Server:
    base: str
    pid: int


@contextlib.contextmanager
def api_process(env: dict[str, str], workers: int) -> Iterator[Server]:
    """`vigil api serve` as a child process on loopback; stopped (by its pid) on exit."""
    port = _free_port()
    cmd = [sys.executable, "-m", "vigil_cli", "api", "serve", "--host", "127.0.0.1",
           "--port", str(port), "--workers", str(workers)]
    # stderr to a file, not a pipe: nobody reads a pipe during the run, and a full one
    # would block the server.
    with tempfile.TemporaryFile() as errlog:
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=errlog)
        base = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + 60
            while True:
                if proc.poll() is not None:
                    errlog.seek(0)
                    err = errlog.read().decode(errors="replace")
                    raise RuntimeError(
                        f"API process exited with {proc.returncode}: {err[-2000:]}")
                with contextlib.suppress(httpx.HTTPError):
                    if httpx.get(f"{base}/health", timeout=1).status_code == 200:
                        break
                if time.monotonic() > deadline:
                    raise RuntimeError("API process did not answer /health within 60 s")
                time.sleep(0.2)
            yield Server(base, proc.pid)
        finally:
            proc.terminate()
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)


def wrk(url: str, seconds: float, key: str | None, script: Path) -> dict[str, Any]:
    """One wrk run: CLIENTS connections over 2 threads; returns its summary."""
    env = {**os.environ, "VIGIL_BENCH_KEY": key or ""}
    out = subprocess.run(
        ["wrk", "-t2", f"-c{CLIENTS}", f"-d{max(1, round(seconds))}s", "--timeout", "10s",
         "-s", str(script), url],
        env=env, capture_output=True, text=True, timeout=seconds + 60, check=True)
    line = next(ln for ln in reversed(out.stdout.splitlines()) if ln.startswith("{"))
    raw = json.loads(line)
    secs = raw["duration_us"] / 1e6
    errors = sum(raw[k] for k in ("connect_errors", "read_errors", "write_errors",
                                  "status_errors", "timeouts"))
    return {
        "requests": raw["requests"], "errors": errors, "req_per_s": raw["requests"] / secs,
        "p50_ms": raw["p50_us"] / 1e3, "p95_ms": raw["p95_us"] / 1e3,
        "p99_ms": raw["p99_us"] / 1e3, "mean_ms": raw["mean_us"] / 1e3,
        "max_ms": raw["max_us"] / 1e3, "bytes_per_response":
            raw["bytes"] // raw["requests"] if raw["requests"] else 0,
    }


def run(quick: bool = False) -> BenchResult:
    from api.auth import KeyStore
    from api.deps import make_engine
    from api.settings import load_api_settings
    from projections.migrate import upgrade
    from projections.settings import get_projector_settings
    from vigil.settings import get_settings

    if shutil.which("wrk") is None:
        raise RuntimeError("the API benchmark needs wrk (Debian: apt-get install -y wrk; "
                           "it is listed in infra/apt-packages.txt)")
    settings = get_settings()
    dsn = "postgresql://" + settings.database_url.split("://", 1)[1]
    tag = uuid.uuid4().hex[:8]
    schema, keys_schema = f"bench_api_{tag}", f"bench_apikeys_{tag}"
    sizes = ({"detections": 20_000, "alerts": 1000, "scene_events": 5000} if quick else
             {"detections": 1_000_000, "alerts": 10_000, "scene_events": 100_000})
    seconds = 3.0 if quick else 10.0
    workers = load_api_settings().workers
    try:
        t = time.perf_counter()
        upgrade(dsn, schema, get_projector_settings().embedding_dim)
        end = datetime.now(UTC).replace(microsecond=0)
        timings = seed(dsn, schema, end=end, **sizes)
        seed_s = time.perf_counter() - t
        engine = make_engine(settings.database_url, pool_size=1)
        try:
            store = KeyStore(engine, keys_schema)
            store.ensure_schema()
            _, key = store.create("bench", "viewer")
        finally:
            engine.dispose()
        env = {**os.environ, "VIGIL_PROJECTOR_SCHEMA": schema,
               "VIGIL_API_KEYS_SCHEMA": keys_schema, "VIGIL_API_RATE_LIMIT_PER_S": "1e9",
               "VIGIL_API_RATE_LIMIT_BURST": "1000000000", "VIGIL_API_WORKERS": str(workers)}
        paths = {"health": "/health", "alerts": f"/api/v1/alerts?limit={PAGE}",
                 "events": f"/api/v1/events?limit={PAGE}"}
        results: dict[str, dict[str, Any]] = {}
        with tempfile.TemporaryDirectory() as tmp, api_process(env, workers) as server:
            script = Path(tmp, "auth.lua")
            script.write_text(_WRK_SCRIPT)
            for name, path in paths.items():  # warm-up: connections, caches, plans
                wrk(server.base + path, 1, None if name == "health" else key, script)
            for name, path in paths.items():
                cpu = cpu_seconds(server.pid)
                results[name] = wrk(server.base + path, seconds,
                                    None if name == "health" else key, script)
                used = cpu_seconds(server.pid) - cpu
                results[name]["server_cpu_ms_per_request"] = (
                    used * 1e3 / results[name]["requests"] if results[name]["requests"] else 0)
    finally:
        with psycopg.connect(dsn, autocommit=True) as conn:
            for s in (schema, keys_schema):
                conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(
                    sql.Identifier(s)))
    listing = (results["alerts"]["req_per_s"] + results["events"]["req_per_s"]) / 2
    baseline = results["health"]["req_per_s"]
    return BenchResult(
        name="api", value=listing, unit="req/s", baseline=baseline,
        ratio=listing / baseline if baseline else 0.0,
        details={"clients": CLIENTS, "quick": quick, "page_size": PAGE, "workers": workers,
                 "load_generator": "wrk -t2 (separate process)", "seconds_per_run": seconds,
                 "seed_s": round(seed_s, 1), "seed": {**sizes, **{
                     k: round(v, 1) for k, v in timings.items()}},
                 "ratio_alerts": results["alerts"]["req_per_s"] / baseline if baseline else 0,
                 "ratio_events": results["events"]["req_per_s"] / baseline if baseline else 0,
                 **results},
    )
