"""Ops alerts reach people: the real Alertmanager (Debian's prometheus-alertmanager) with
the repository's configuration routes alerts by priority to the real notifier's receiver,
which delivers them to its webhook destination like operator alerts; inhibition holds
back what a higher-priority alert explains.

Only the notifier's address and the grouping waits are rewritten for the test (loopback
ports, 1 s instead of minutes); routes, receivers and inhibition are the shipped ones."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tools.devstack.process import free_port

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]


class _Hook(BaseHTTPRequestHandler):
    received: list[tuple[str, dict[str, Any]]] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        type(self).received.append((self.headers.get("X-Vigil-Event-Id", ""), json.loads(body)))
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        pass


def _wait(pred: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if pred():
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    pytest.fail(f"timed out waiting for {what}")


@pytest.fixture
def chain(vigil_env: dict[str, str], tmp_path: Path) -> Iterator[dict[str, int]]:
    binary = shutil.which("prometheus-alertmanager") or shutil.which("alertmanager")
    if binary is None:
        pytest.fail("prometheus-alertmanager not installed (infra/apt-packages.txt)")
    hook = ThreadingHTTPServer(("127.0.0.1", 0), _Hook)
    threading.Thread(target=hook.serve_forever, daemon=True).start()
    _Hook.received.clear()
    ports = {"notifier": free_port(), "alertmanager": free_port()}
    cfg = yaml.safe_load((ROOT / "infra" / "alertmanager" / "alertmanager.yml").read_text())
    for route in [cfg["route"], *cfg["route"]["routes"]]:
        route["group_wait"] = "1s"
        route["group_interval"] = "2s"
    for receiver in cfg["receivers"]:
        for wh in receiver["webhook_configs"]:
            wh["url"] = wh["url"].replace("http://notifier:9110",
                                          f"http://127.0.0.1:{ports['notifier']}")
    am_cfg = tmp_path / "alertmanager.yml"
    am_cfg.write_text(yaml.safe_dump(cfg))
    env = dict(vigil_env)
    env.update({"VIGIL_NOTIFY_METRICS_PORT": str(ports["notifier"]),
                "VIGIL_NOTIFY_WEBHOOKS": f"oncall=http://127.0.0.1:{hook.server_address[1]}/",
                "VIGIL_NOTIFY_SECRET": "test-secret", "VIGIL_LOG_FORMAT": "json"})
    logs = {n: (tmp_path / f"{n}.log").open("wb") for n in ("notifier", "alertmanager")}
    procs = [
        subprocess.Popen([sys.executable, "-m", "vigil_cli", "notifier"], env=env,
                         stdout=logs["notifier"], stderr=subprocess.STDOUT,
                         stdin=subprocess.DEVNULL, start_new_session=True),
        subprocess.Popen([binary, f"--config.file={am_cfg}",
                          f"--web.listen-address=127.0.0.1:{ports['alertmanager']}",
                          "--cluster.listen-address=", f"--storage.path={tmp_path / 'am'}"],
                         stdout=logs["alertmanager"], stderr=subprocess.STDOUT,
                         stdin=subprocess.DEVNULL, start_new_session=True, env=dict(os.environ)),
    ]
    try:
        _wait(lambda: httpx.get(f"http://127.0.0.1:{ports['notifier']}/health/ready").status_code
              == 200, 60, "the notifier to be ready")
        _wait(lambda: httpx.get(f"http://127.0.0.1:{ports['alertmanager']}/-/ready").status_code
              == 200, 60, "Alertmanager to be ready")
        yield ports
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            try:
                p.wait(20)
            except subprocess.TimeoutExpired:
                p.kill()
        hook.shutdown()


def _alert(name: str, severity: str, **labels: str) -> dict[str, Any]:
    return {"labels": {"alertname": name, "severity": severity, **labels},
            "annotations": {"summary": f"{name} summary",
                            "runbook_url": f"docs/runbooks/{name}.md"}}


def test_alerts_routed_by_priority_reach_the_notifier_channels_and_inhibition_holds(
        chain: dict[str, int]) -> None:
    alerts = [
        _alert("VigilEdgeOffline", "p1", edge_id="e1", instance="worker:16066"),
        # explained by the offline edge: inhibited
        _alert("VigilCameraStreamDown", "p2", edge_id="e1", camera_id="c1",
               instance="edge:9108"),
        _alert("VigilDeadLettersGrowing", "p3", stage="scene", instance="worker:16066"),
    ]
    resp = httpx.post(f"http://127.0.0.1:{chain['alertmanager']}/api/v2/alerts", json=alerts)
    assert resp.status_code == 200, resp.text

    def names() -> set[str]:
        return {body["alertname"] for _, body in _Hook.received}
    _wait(lambda: {"VigilEdgeOffline", "VigilDeadLettersGrowing"} <= names(), 90,
          "the p1 and p3 alerts at the webhook")
    time.sleep(5)  # a few group intervals more: the inhibited one must still be absent
    got = {body["alertname"]: (event_id, body) for event_id, body in _Hook.received}
    assert "VigilCameraStreamDown" not in got
    event_id, p1 = got["VigilEdgeOffline"]
    assert p1["kind"] == "ops_alert" and p1["priority"] == "p1" and p1["status"] == "firing"
    assert p1["runbook_url"] == "docs/runbooks/VigilEdgeOffline.md"
    assert p1["labels"]["edge_id"] == "e1" and event_id
    assert got["VigilDeadLettersGrowing"][1]["priority"] == "p3"
    metrics = httpx.get(f"http://127.0.0.1:{chain['notifier']}/metrics").text
    assert 'vigil_notifier_ops_alerts_total{priority="p1",status="firing"}' in metrics


def test_a_body_that_is_not_alertmanagers_is_refused_with_a_reason(
        chain: dict[str, int]) -> None:
    resp = httpx.post(f"http://127.0.0.1:{chain['notifier']}/alertmanager/p1",
                      json={"hello": 1})
    assert resp.status_code == 400
    assert "alerts" in resp.json()["message"]


def test_the_local_stacks_alertmanager_delivers_a_firing_alert_to_the_notifier(
        stack: dict[str, str], vigil_env: dict[str, str], tmp_path: Path) -> None:
    """`vigil dev up` runs Alertmanager with the shipped configuration, pointed at the
    notifier on 127.0.0.1 (the session's test stack is the same code on test ports): a
    firing p1 alert posted to it reaches the notifier's receiver and from there the
    notifier's webhook channel."""
    import uuid

    from tools.devstack.stack import Stack

    st = Stack.for_tests(Path(stack["VIGIL_STATE_DIR"]))
    [am] = st.status(["alertmanager"])
    assert am.state == "up" and am.address.startswith("http://127.0.0.1:"), am
    hook = ThreadingHTTPServer(("127.0.0.1", 0), _Hook)
    threading.Thread(target=hook.serve_forever, daemon=True).start()
    _Hook.received.clear()
    env = dict(vigil_env, VIGIL_NOTIFY_METRICS_PORT=str(st.ports.notifier),
               VIGIL_NOTIFY_WEBHOOKS=f"oncall=http://127.0.0.1:{hook.server_address[1]}/",
               VIGIL_NOTIFY_SECRET="test-secret")
    with (tmp_path / "notifier.log").open("wb") as log:
        notifier = subprocess.Popen([sys.executable, "-m", "vigil_cli", "notifier"], env=env,
                                    stdout=log, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL, start_new_session=True)
    try:
        _wait(lambda: httpx.get(f"http://127.0.0.1:{st.ports.notifier}/health/ready")
              .status_code == 200, 60, "the notifier to be ready")
        # the stack's Alertmanager keeps its state across sessions: a label of this run
        # makes the alert a group of its own, sent at once (p1 waits 0 s)
        probe = f"probe-{uuid.uuid4().hex[:8]}"
        resp = httpx.post(f"{am.address}/api/v2/alerts",
                          json=[_alert("VigilServiceDown", "p1", instance=probe)])
        assert resp.status_code == 200, resp.text

        def mine() -> list[dict[str, Any]]:
            return [b for _, b in _Hook.received if b.get("labels", {}).get("instance") == probe]
        _wait(lambda: mine(), 60, "the alert at the notifier's webhook")
        [body] = mine()[:1]
        assert (body["kind"], body["priority"], body["status"], body["alertname"]) == \
            ("ops_alert", "p1", "firing", "VigilServiceDown"), body
    finally:
        notifier.terminate()
        try:
            notifier.wait(20)
        except subprocess.TimeoutExpired:
            notifier.kill()
        hook.shutdown()
