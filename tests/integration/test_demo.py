"""The whole system, as a newcomer runs it: `vigil demo --check` on synthetic scenarios.

Real processes end to end: edge producer -> Kafka -> Faust worker (inference on Triton,
scene rules, alerts) -> projector -> PostgreSQL -> API key. The scenarios carry their own
ground truth; `--check` fails when an expected alert is missing, doubled, or an unexpected
scene alert was raised.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys

import pytest

pytestmark = pytest.mark.integration


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_demo_raises_exactly_the_expected_alerts(stack: dict[str, str], tmp_path) -> None:
    env = dict(os.environ)
    env.update(stack)
    env.update({
        "VIGIL_STATE_DIR": str(tmp_path / "state"),
        "VIGIL_API_PORT": str(_free_port()),
        "VIGIL_WORKER_WEB_PORT": str(_free_port()),
        "VIGIL_LOG_FORMAT": "text",
    })
    try:
        res = subprocess.run(
            [sys.executable, "-m", "vigil_cli", "demo", "--check", "--duration", "300",
             "--scenario", "loiterer", "--scenario", "crowd6", "--scenario", "passers_by"],
            env=env, capture_output=True, text=True, timeout=480, stdin=subprocess.DEVNULL,
        )
    finally:
        # The demo leaves the stack it started running, as a developer wants; here every
        # service but the Alertmanager is the test stack's (passed in, so external), and
        # that one would outlive the test session: `vigil dev down` stops only it.
        subprocess.run([sys.executable, "-m", "vigil_cli", "dev", "down"], env=env,
                       capture_output=True, text=True, timeout=120,
                       stdin=subprocess.DEVNULL)
    out = res.stdout + res.stderr
    assert res.returncode == 0, out[-4000:]
    assert "alerts raised:" in out
    assert "CHECK:" not in out
    assert "loitering" in out and "crowd" in out
    assert "curl -s -H 'X-API-Key: vgl_" in out
    assert "console: http://" in out and "log in as demo-" in out
    # every alert of the scenarios has its still evidence, and the summary links it
    assert "no evidence" not in out
    assert "evidence (presigned" in out and "/annotated.jpg" in out and "/clip.mp4" in out
