"""Monitoring that tells the truth, and logs a machine can read, from one short real run.

The real processes (edge on a synthetic scene, Faust worker with inference on Triton,
projector, API, notifier delivering to a local webhook) run until an alert has been
raised, projected and delivered. Then:

- every process's ``/metrics`` is scraped; every ``vigil_*`` metric that an alert rule, a
  recording rule or a Grafana panel names must be exported by at least one of them (a
  rule on a name nobody exports is an alert that can never fire);
- every process answers ``/health`` and ``/health/ready``;
- every line of every process's log is one JSON object with the fields of
  docs/operations.md ("Logs"), no Faust banner or plain-text line among them, and the
  lines written while an event was handled carry its correlation id;
- API responses carry an ``X-Request-Id`` and the access log has a line for the request.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from ops_names import used_names
from prometheus_client.parser import text_string_to_metric_families

from tools.devstack.process import free_port
from tools.faults.harness import Pipeline, vigil_argv
from vigil.logs import REQUIRED_FIELDS

pytestmark = pytest.mark.integration

PROCESSES = ("edge", "worker", "projector", "api", "notifier", "backup")


class _Hooks(BaseHTTPRequestHandler):
    received: list[bytes] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        type(self).received.append(body)
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        pass


@dataclass
class Run:
    pipeline: Pipeline
    ports: dict[str, int]
    scraped: dict[str, str] = field(default_factory=dict)
    request_id: str = ""

    def url(self, name: str, path: str) -> str:
        return f"http://127.0.0.1:{self.ports[name]}{path}"


def _exported(text: str) -> set[str]:
    """Sample names a scrape declares (a declared family with no sample yet counts: its
    series appear as soon as the event happens)."""
    names: set[str] = set()
    for fam in text_string_to_metric_families(text):
        names.add(fam.name)
        names.update(s.name for s in fam.samples)
        suffixes = {"counter": ("_total", "_created"), "histogram": ("_bucket", "_sum", "_count"),
                    "summary": ("_sum", "_count")}.get(fam.type, ())
        names.update(fam.name + s for s in suffixes)
    return names


@pytest.fixture(scope="module")
def run(stack: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Run]:
    hooks = ThreadingHTTPServer(("127.0.0.1", 0), _Hooks)
    threading.Thread(target=hooks.serve_forever, daemon=True).start()
    base = dict(os.environ)
    base.update(stack)
    p = Pipeline(base, tmp_path_factory.mktemp("ops-truth"), ["loiterer"], "opstruth")
    ports = {"worker": int(p.env["VIGIL_WORKER_WEB_PORT"]), "api": int(p.env["VIGIL_API_PORT"]),
             "projector": free_port(), "notifier": free_port(), "edge": free_port(),
             "backup": free_port()}
    p.env.update({
        "VIGIL_LOG_FORMAT": "json",
        "VIGIL_PROJECTOR_METRICS_PORT": str(ports["projector"]),
        "VIGIL_NOTIFY_METRICS_PORT": str(ports["notifier"]),
        "VIGIL_NOTIFY_WEBHOOKS": f"ops=http://127.0.0.1:{hooks.server_address[1]}/hook",
        "VIGIL_NOTIFY_SECRET": "test-secret",
        # the synthetic probe every 3 s instead of 5 minutes, so the run sees several
        "VIGIL_PROJECTOR_PROBE_INTERVAL_S": "3",
        "VIGIL_BACKUP_METRICS_PORT": str(ports["backup"]),
    })
    try:
        p.setup()
        assert p.edge_file is not None
        edge_cfg = yaml.safe_load(p.edge_file.read_text())
        edge_cfg["metrics_port"] = ports["edge"]
        p.edge_file.write_text(yaml.safe_dump(edge_cfg))
        # no --until-done: the edge must still be up to be scraped
        p.add("edge", vigil_argv("edge", "run", "--config", str(p.edge_file)))
        p.add("notifier", vigil_argv("notifier"))
        p.add("backup", vigil_argv("backup", str(p.run_dir / "backups"), "--every", "1h",
                                   "--schema", p.prefix))
        p.start("worker", "projector", "api", "notifier", "edge", "backup")
        p.wait_for(lambda: p.check_alive(*PROCESSES) or (p.alerts() and _Hooks.received),
                   360, "an alert raised, projected and delivered to the webhook")
        r = Run(p, ports)
        resp = httpx.get(r.url("api", "/health"), headers={"X-Request-Id": "ops-test-42"})
        r.request_id = resp.headers.get("x-request-id", "")
        time.sleep(6)  # one more heartbeat and lag refresh, then scrape everything
        for name in PROCESSES:
            r.scraped[name] = httpx.get(r.url(name, "/metrics"), timeout=10).text
        yield r
    finally:
        p.stop_all()
        hooks.shutdown()


def test_every_metric_a_rule_or_panel_uses_is_exported(run: Run) -> None:
    exported: set[str] = set()
    for text in run.scraped.values():
        exported |= _exported(text)
    missing = {name: sorted(where) for name, where in used_names().items()
               if name.startswith("vigil_") and name not in exported}
    assert missing == {}, "used by rules/panels, exported by no process"


def test_new_operational_metrics_have_samples(run: Run) -> None:
    """The series on-call relies on exist after a run, not only their declarations."""
    def value(proc: str, name: str) -> list[float]:
        return [s.value for fam in text_string_to_metric_families(run.scraped[proc])
                for s in fam.samples if s.name == name]
    assert value("worker", "vigil_edge_online") == [1.0]
    assert value("worker", "vigil_edge_disk_free_bytes")[0] > 0
    assert value("worker", "vigil_alert_frame_to_alert_seconds_count")[0] >= 1
    assert value("notifier", "vigil_notifier_backlog") == [0.0]
    assert sum(value("notifier", "vigil_alerts_notifications_total")) >= 1
    assert value("projector", "vigil_projector_read_model_age_seconds")[0] >= 0
    assert value("edge", "vigil_edge_state_disk_free_bytes")[0] > 0
    assert value("backup", "vigil_backup_last_success_timestamp_seconds")[0] > 0


def test_synthetic_probe_reaches_the_read_model_and_stays_out_of_operator_views(
        run: Run) -> None:
    """The projector's probe frames went through the worker into the read model, their
    latency is exported, and nothing an operator looks at shows the probe camera."""
    def samples(name: str) -> dict[str, float]:
        return {s.labels.get("outcome", ""): s.value
                for fam in text_string_to_metric_families(run.scraped["projector"])
                for s in fam.samples if s.name == name}
    assert samples("vigil_probe_runs_total")["ok"] >= 1
    latency = samples("vigil_probe_last_latency_seconds")[""]
    print("synthetic probe: last latency", round(latency, 3), "s over",
          samples("vigil_probe_latency_seconds_count")[""], "probes, mean",
          round(samples("vigil_probe_latency_seconds_sum")[""]
                / samples("vigil_probe_latency_seconds_count")[""], 3), "s")
    assert 0 < latency < 60  # publish -> worker -> projector -> PostgreSQL, on this box
    assert samples("vigil_probe_latency_seconds_count")[""] >= 1
    assert samples("vigil_probe_last_success_timestamp_seconds")[""] > time.time() - 600
    p = run.pipeline
    assert p.query("select count(*) from {s}.frame_analyses where camera_id = '_vigil-probe'"
                   )[0][0] >= 1
    assert p.query("select count(*) from {s}.cameras where camera_id = '_vigil-probe'"
                   )[0][0] == 0
    assert not [a for a in p.alerts() if a["camera_id"] == "_vigil-probe"]


def test_every_process_has_health_and_readiness(run: Run) -> None:
    for name in PROCESSES:
        assert httpx.get(run.url(name, "/health"), timeout=10).status_code == 200, name
        ready = httpx.get(run.url(name, "/health/ready"), timeout=30)
        assert ready.status_code == 200, (name, ready.text)
        assert ready.json()["status"] == "ok", (name, ready.text)


def test_api_returns_request_id_and_logs_access(run: Run) -> None:
    assert run.request_id == "ops-test-42"
    fresh = httpx.get(run.url("api", "/health"))
    assert len(fresh.headers["x-request-id"]) >= 16  # made up when the caller sent none
    time.sleep(0.5)
    lines = _json_lines(run.pipeline.procs["api"].log)
    access = [ln for ln in lines if ln["logger"] == "vigil.access"]
    assert any(ln.get("request_id") == "ops-test-42" and ln["status"] == 200
               and ln["path"] == "/health" for ln in access)


def _json_lines(log: Path) -> list[dict[str, Any]]:
    out = []
    for n, line in enumerate(log.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip() or line.startswith("=== fault harness: start"):
            continue  # the harness's own marker between restarts
        try:
            doc = json.loads(line)
        except ValueError:
            pytest.fail(f"{log.name}:{n} is not JSON: {line[:200]!r}")
        assert isinstance(doc, dict), f"{log.name}:{n}"
        out.append(doc)
    return out


def test_every_log_line_is_structured(run: Run) -> None:
    services = {"edge": "edge", "worker": "worker", "projector": "projector", "api": "api",
                "notifier": "notifier", "backup": "backup"}
    for name in PROCESSES:
        lines = _json_lines(run.pipeline.procs[name].log)
        assert lines, f"{name} wrote no log line"
        for doc in lines:
            missing = [f for f in REQUIRED_FIELDS if f not in doc]
            assert not missing, (name, missing, doc)
            assert doc["service"] == services[name], (name, doc)
            assert doc["level"] in {"debug", "info", "warning", "error", "critical"}, doc
    worker = _json_lines(run.pipeline.procs["worker"].log)
    assert not any("ƒaµS†" in d["message"] or "starting➢" in d["message"] for d in worker)


def test_lines_about_an_event_carry_its_ids(run: Run) -> None:
    delivered = [d for d in _json_lines(run.pipeline.procs["notifier"].log)
                 if d["message"].startswith("delivered to")]
    assert delivered
    for d in delivered:
        assert d.get("correlation_id") and d.get("event_id") and d.get("causation_id"), d
