"""The demo scenario end to end on the secured broker, and no secret anywhere after it.

The demo's real processes (tools/demo.py `start_pipeline`: edge with a sim:// scene,
Faust worker with inference on Triton, projector, API, notifier) each run as their own
SCRAM principal on the TLS + SASL broker with the service ACLs, configured only through
KAFKA_SECURITY_PROTOCOL / KAFKA_SASL_* / KAFKA_SSL_CA. The loiterer's alert must reach the
read model with its evidence, the API, a webhook and a mailbox, an acknowledgement through
the API must come back; no service may have been refused anything by the broker (a
missing ACL is a bug in the ACL table, not something to widen).

Every secret the run was configured with (the six SCRAM passwords and the broker's key
password, two camera passwords — one in a URL, one from the environment —, the webhook's
signing secret, the SMTP password, the API keys, the console user's password, the object
store's secret key) is then looked for in every service log, every topic of the run
(Faust's changelogs included), the whole read model and every API and console response.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import secrets
import ssl
import subprocess
import sys
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest
import yaml

from tests.integration.notify_support import Authenticator, SmtpSink, self_signed_cert
from tests.integration.secure_support import every_topic_bytes
from tests.integration.test_secrets import read_model_text
from tools.devstack.kafka_security import SERVICES, Security, apply_acls
from tools.devstack.process import free_port

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
SCENARIO = "loiterer"
#: what a principal refused by the broker leaves in a log (librdkafka, aiokafka, ours)
REFUSALS = ("TOPIC_AUTHORIZATION_FAILED", "GROUP_AUTHORIZATION_FAILED",
            "TopicAuthorizationFailed", "GroupAuthorizationFailed",
            "CLUSTER_AUTHORIZATION_FAILED", "ClusterAuthorizationFailed",
            "lacks an ACL", "SASL_AUTHENTICATION_FAILED", "Authentication failed")


class WebhookSink(BaseHTTPRequestHandler):
    received: list[tuple[dict[str, str], bytes]] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        self.received.append(({k: v for k, v in self.headers.items()}, body))
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


def _vigil(args: list[str], env: dict[str, str], stdin: str | None = None) -> str:
    res = subprocess.run([sys.executable, "-m", "vigil_cli", *args], env=env, input=stdin,
                         capture_output=True, text=True, timeout=180)
    assert res.returncode == 0, f"vigil {' '.join(args)}: {res.stderr[-3000:]}"
    return res.stdout


def _build_site(run_dir: Path, cam_password: str, locked_port: int,
                vault_port: int) -> tuple[Path, Path, list[dict[str, Any]]]:
    """The demo's site and edge files for the scenario, plus two cameras whose streams
    fail with a password in play (one in the URL, one from the environment), and two
    notification routes (a signed webhook, a mailbox)."""
    from edge_producer.sim.scenario import resolve_scenario_path
    from tools.demo import build_site

    site_file, edge_file, expected = build_site(
        [resolve_scenario_path(SCENARIO).resolve()], run_dir, realtime=False)
    site = yaml.safe_load(site_file.read_text())
    site["site"]["cameras"] += [{"camera_id": "cam-locked", "name": "locked gate"},
                                {"camera_id": "cam-vault", "name": "vault"}]
    site["site"]["routes"] = [
        {"route_id": "ops-hook", "channels": ["hook"]},
        {"route_id": "ops-mail", "channels": ["mail"], "recipients": ["ops@example.org"]}]
    site_file.write_text(yaml.safe_dump(site, sort_keys=False))
    edge = yaml.safe_load(edge_file.read_text())
    edge.update(backoff_initial_s=0.5, backoff_max_s=3)
    edge["cameras"] += [
        {"camera_id": "cam-locked",
         "url": f"rtsp://admin:{cam_password}@127.0.0.1:{locked_port}/live"},
        {"camera_id": "cam-vault", "url": f"rtsp://127.0.0.1:{vault_port}/live",
         "credentials": {"username": "viewer", "password_env": "VAULT_CAM_PASSWORD"}}]
    edge_file.write_text(yaml.safe_dump(edge, sort_keys=False))
    return site_file, edge_file, expected


def test_the_demo_on_the_secured_broker_leaks_no_secret(
        stack: dict[str, str], secure: tuple[str, Security], tmp_path: Path) -> None:
    from sqlalchemy import create_engine

    from tools.demo import alerts_with_evidence, check_expected, start_pipeline, stop_pipeline

    bootstrap, sec = secure
    tag = uuid.uuid4().hex[:8]
    prefix = f"sd{tag}"
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    cam_url_password = f"CamUrl-{tag}"
    cam_env_password = f"Cam/Env@{tag}"
    hook_secret = f"HookSecret-{secrets.token_hex(8)}"
    smtp_password = f"SmtpPw-{secrets.token_hex(8)}"
    console_password = f"Console-{secrets.token_hex(8)}"

    # -- receivers of the notifications, with their secrets
    WebhookSink.received = []
    hook = ThreadingHTTPServer(("127.0.0.1", 0), WebhookSink)
    threading.Thread(target=hook.serve_forever, daemon=True).start()
    cert, key = self_signed_cert(tmp_path)
    tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    tls.load_cert_chain(cert, key)
    smtp = SmtpSink(free_port(), tls_context=tls, require_starttls=True, auth_required=True,
                    authenticator=Authenticator("vigil", smtp_password))
    smtp.start()
    channels = tmp_path / "channels.yaml"
    channels.write_text(yaml.safe_dump([
        {"kind": "webhook", "name": "hook", "url": f"http://127.0.0.1:{hook.server_port}/h",
         "secret": hook_secret},
        {"kind": "email", "name": "mail", "host": "127.0.0.1", "port": smtp.port,
         "security": "starttls", "validate_certs": False, "username": "vigil",
         "password": smtp_password}]))
    channels.chmod(0o600)

    # -- the environment: the test stack for PostgreSQL, S3 and Triton, the secured
    # broker for Kafka; nothing KAFKA_* but the address is shared by the processes
    base = {k: v for k, v in {**os.environ, **stack}.items() if not k.startswith("KAFKA_")}
    api_port = free_port()
    base.update({
        "KAFKA_BOOTSTRAP": bootstrap, "VIGIL_TOPIC_PREFIX": prefix,
        "VIGIL_PROJECTOR_SCHEMA": prefix, "VIGIL_API_KEYS_SCHEMA": f"{prefix}_api",
        "VIGIL_STATE_DIR": str(tmp_path / "state"), "VIGIL_LOG_FORMAT": "json",
        "VIGIL_API_PORT": str(api_port), "VIGIL_WORKER_WEB_PORT": str(free_port()),
        "VIGIL_EVIDENCE_CLIP_WAIT_MAX_S": "45",
        "VIGIL_NOTIFY_FILE": str(channels),
        "VIGIL_NOTIFY_STATE_FILE": str(tmp_path / "notifier-outbox.sqlite"),
        "VIGIL_NOTIFY_CONSOLE_URL": f"http://127.0.0.1:{api_port}/console"})
    admin = {**base, **sec.client_env("admin")}  # tooling only, never a service

    site_file, edge_file, expected = _build_site(run_dir, cam_url_password, free_port(),
                                                 free_port())
    _vigil(["topics", "apply"], admin)
    apply_acls(sec.client_config("admin", bootstrap), prefix)
    _vigil(["db", "upgrade"], admin)
    _vigil(["config", "apply", str(site_file)], admin)
    admin_key = _vigil(["api", "keys", "create", "--role", "admin", "--name", "sd-admin"],
                       admin).split()[-1]
    viewer_key = _vigil(["api", "keys", "create", "--role", "viewer", "--name", "sd-viewer",
                         "--site", "demo-site"], admin).split()[-1]
    user = f"sd-{tag}"
    _vigil(["users", "create", "--role", "operator", user], admin, stdin=console_password + "\n")

    debug = {"VIGIL_LOG_LEVEL": "DEBUG"}  # the services that handle the secrets
    children = start_pipeline(
        base, run_dir, edge_file, until_done=False, principal_env=sec.client_env,
        extra_env={"edge": {**debug, "VAULT_CAM_PASSWORD": cam_env_password},
                   "api": debug, "notifier": debug})
    assert {c.name for c in children.values()} == set(SERVICES)
    responses: list[str] = []
    engine = create_engine(base["DATABASE_URL"])
    try:
        alerts = _wait_for_alerts(children, engine, prefix, expected, check_expected,
                                  alerts_with_evidence, timeout=480)
        alert_id = alerts[0]["alert_id"]
        api = f"http://127.0.0.1:{api_port}"
        _wait_for_api(api, children)
        responses += _exercise_api(api, admin_key, viewer_key, alert_id)
        responses += _exercise_console(api, user, console_password)
        hooks = _wait_for(lambda: [h for h in WebhookSink.received
                                   if alert_id.encode() in h[1]
                                   and b"AlertAcknowledged" in h[1]], 120, children,
                          "the webhook got no AlertAcknowledged")
        smtp.wait_for(lambda got: any(r == ["ops@example.org"] for r, _ in got), 120)
    finally:
        stop_pipeline(children)
        hook.shutdown()
        smtp.stop()
        engine.dispose()
    for headers, body in WebhookSink.received:  # signed with the secret it must not leak
        assert headers["X-Vigil-Signature"] == "sha256=" + hmac.new(
            hook_secret.encode(), body, hashlib.sha256).hexdigest()
    assert hooks

    logs = {p.name: p.read_text(errors="replace") for p in sorted(run_dir.glob("*.log"))}
    assert set(logs) == {f"{n}.log" for n in SERVICES}
    refused = [r for name, text in logs.items() for r in _refusals(name, text)]
    assert not refused, f"the broker refused a service something it needs: {refused[:10]}"
    assert "rtsp://admin:***@127.0.0.1" in logs["edge.log"]  # the failure was logged
    assert "rtsp://viewer:***@127.0.0.1" in logs["edge.log"]

    topics = every_topic_bytes(bootstrap, sec, prefix)
    assert b"AccessRecorded" in topics or b"/api/v1/alerts" in topics
    dsn = base["DATABASE_URL"].replace("postgresql+psycopg://", "postgresql://")
    model = read_model_text(dsn, prefix) + "\n" + read_model_text(dsn, f"{prefix}_api")
    assert "rtsp://admin:***@127.0.0.1" in model  # the redacted StreamDown reason
    answers = "\n".join(responses)
    assert "rtsp://admin:***@127.0.0.1" in answers  # GET /cameras showed it, masked

    configured = {
        **{f"SCRAM password of {p}": pw for p, pw in sec.passwords.items()},
        "broker key password": sec.key_password,
        "camera password (URL)": cam_url_password,
        "camera password (env)": cam_env_password,
        "webhook secret": hook_secret, "SMTP password": smtp_password,
        "admin API key": admin_key, "viewer API key": viewer_key,
        "console password": console_password,
        "object store secret": os.environ.get("S3_SECRET_KEY")
        or _s3_secret(),
    }
    leaks = []
    for what, value in configured.items():
        assert value and len(value) >= 8, what
        for form in {value, quote(value, safe=""), json.dumps(value)[1:-1]}:
            for name, text in (*logs.items(), ("read model", model), ("API", answers)):
                if form in text:
                    leaks.append(f"{what} in {name}")
            if form.encode() in topics:
                leaks.append(f"{what} on a topic")
    assert not leaks, leaks


def _s3_secret() -> str:
    from vigil.settings import get_settings

    return get_settings().s3_secret_key.get_secret_value()


def _refusals(name: str, text: str) -> list[tuple[str, str]]:
    return [(name, line[:400]) for line in text.splitlines() if any(r in line for r in REFUSALS)]


def _alive(children: dict[str, Any]) -> None:
    """Every process still runs and none was refused by the broker (fail at once rather
    than wait out the alerts that a missing ACL holds up)."""
    for c in children.values():
        text = c.log.read_text(errors="replace")
        if c.proc.poll() is not None:
            pytest.fail(f"{c.name} exited with {c.proc.returncode}:\n{text[-3000:]}")
        refused = _refusals(c.name, text)
        if refused:
            pytest.fail(f"the broker refused {c.name} something it needs: {refused[:5]}")


def _wait_for(probe: Any, timeout: float, children: dict[str, Any], what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        _alive(children)
        got = probe()
        if got:
            return got
        time.sleep(1)
    pytest.fail(what)


def _wait_for_alerts(children: dict[str, Any], engine: Any, schema: str,
                     expected: list[dict[str, Any]], check: Any, read: Any,
                     timeout: float) -> list[dict[str, Any]]:
    """The scenario's expected alerts in the read model, each with its evidence and clip
    (the worker's evidence and clips agents: frames, detections, recordings, evidence)."""
    problems: list[str] = ["nothing read yet"]

    def settled() -> list[dict[str, Any]] | None:
        nonlocal problems
        try:
            alerts = read(engine, schema)
        except Exception as exc:  # the read model's tables are not there yet
            problems = [type(exc).__name__]
            return None
        problems = check(expected, alerts)
        return alerts if alerts and not problems else None

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        _alive(children)
        got = settled()
        if got:
            return [a for a in got if a["rule_type"] == "loitering"]
        time.sleep(2)
    tails = {c.name: c.log.read_text(errors="replace")[-1500:] for c in children.values()}
    pytest.fail(f"the scenario's alerts did not settle: {problems}\n{tails}")


def _wait_for_api(api: str, children: dict[str, Any]) -> None:
    def up() -> bool:
        try:
            return httpx.get(f"{api}/health", timeout=5).status_code == 200
        except httpx.HTTPError:
            return False
    _wait_for(up, 120, children, "the API did not answer")


def _exercise_api(api: str, admin_key: str, viewer_key: str, alert_id: str) -> list[str]:
    """Every kind of answer of the run's API, as admin and as a site-scoped viewer; an
    acknowledgement goes through the commands topic (api -> worker -> alerts)."""
    out: list[str] = []
    with httpx.Client(base_url=api, timeout=30) as c:
        def get(path: str, key: str | None, status: int = 200) -> Any:
            r = c.get(path, headers={"X-API-Key": key} if key else {})
            out.append(r.text + "\n" + json.dumps(dict(r.headers)))
            assert r.status_code == status, (path, r.status_code, r.text[:500])
            return r

        for key in (admin_key, viewer_key):
            listing = get("/api/v1/alerts", key).json()
            assert alert_id in {a["alert_id"] for a in listing["items"]}
            detail = get(f"/api/v1/alerts/{alert_id}", key).json()
            cams = get("/api/v1/cameras", key).json()["items"]
            locked = next(cm for cm in cams if cm["camera_id"] == "cam-locked")
            assert locked["stream_state"] in ("down", "reconnecting"), locked
            for cam in cams:
                get(f"/api/v1/cameras/{cam['camera_id']}", key)
            get("/api/v1/sites", key)
            events = get("/api/v1/events?limit=200", key).json()["items"]
            assert events
            for ev in events[:5]:
                get(f"/api/v1/events/{ev['event_id']}", key)
            evidence = [e.get("evidence_id") for e in detail.get("evidence", [])
                        if isinstance(e, dict) and e.get("evidence_id")]
            for ev_id in evidence:
                get(f"/api/v1/evidence/{ev_id}", key)
            get(f"/api/v1/notifications?alert_id={alert_id}", key)
            get("/api/v1/rules", key)
            get("/api/v1/zones", key)
            get("/api/v1/alerts/stream?timeout_s=1", key)
            get("/api/v1/alerts", "vgl_nope_wrong", 401)
        ack = c.post(f"/api/v1/alerts/{alert_id}/ack?wait=20",
                     headers={"X-API-Key": admin_key}, json={"note": "seen"})
        out.append(ack.text)
        assert ack.status_code in (200, 202), ack.text
        deadline = time.monotonic() + 120
        while get(f"/api/v1/alerts/{alert_id}", admin_key).json()["state"] == "NEW":
            assert time.monotonic() < deadline, "the acknowledgement never came back"
            time.sleep(1)
        get("/api/v1/audit/access", admin_key)
        get("/api/v1/audit/commands", admin_key)
        get("/api/v1/audit/access", viewer_key, 403)
        ready = get("/health/ready", None).json()
        assert ready["checks"]["kafka"]["status"] == "ok", ready
        # the read model's freshness: the API principal describes the projected topics'
        # offsets (its first answer may wait for the TLS + SCRAM login of that consumer)
        deadline = time.monotonic() + 90
        while True:
            deep = c.get("/health/deep")
            out.append(deep.text)
            if deep.json()["checks"]["read_model"]["status"] == "ok":
                break
            assert time.monotonic() < deadline, deep.text
            time.sleep(2)
        out.append(c.get("/metrics").text)
    return out


def _exercise_console(api: str, user: str, password: str) -> list[str]:
    """A failed and a good console login, the queue, an alert page, logout."""
    import re

    out: list[str] = []
    with httpx.Client(base_url=api, timeout=30, follow_redirects=True) as c:
        for attempt in (password[::-1], password):
            page = c.get("/console/login")
            csrf = re.search(r'name="csrf" value="([^"]+)"', page.text)
            assert csrf, page.text[:500]
            r = c.post("/console/login", data={"username": user, "password": attempt,
                                               "csrf": csrf.group(1)})
            out += [page.text, r.text, json.dumps(dict(r.headers))]
        assert r.status_code == 200 and "/console/login" not in str(r.url), r.text[:300]
        for path in ("/console/", "/console/cameras", "/console/system"):
            r = c.get(path)
            out.append(r.text)
            assert r.status_code == 200, (path, r.status_code)
    return out
