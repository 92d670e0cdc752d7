"""Running `vigil faults run` from a test: the one runner both fault test modules use."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest


def faults_run(stack: dict[str, str], tmp_path: Path, names: list[str],
                timeout: float, extra: tuple[str, ...] = ()
                ) -> tuple[list[dict[str, Any]], int, str]:
    """`vigil faults run --quick --only NAMES`; on timeout SIGTERM first, so the command's
    clean-up stops the pipeline processes it started (they run in their own sessions)."""
    env = dict(os.environ)
    env.update(stack)
    env.update({"VIGIL_STATE_DIR": str(tmp_path / "state"), "VIGIL_LOG_FORMAT": "text"})
    out = tmp_path / "faults.json"
    proc = subprocess.Popen(
        [sys.executable, "-m", "vigil_cli", "faults", "run", "--quick", "--json", str(out),
         *extra, "--only", *names],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        stdin=subprocess.DEVNULL)
    try:
        text, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGTERM)
        text, _ = proc.communicate(timeout=90)
        pytest.fail(f"`vigil faults run {names}` timed out:\n{text[-4000:]}")
    assert out.exists(), text[-4000:]
    return json.loads(out.read_text()), proc.returncode, text
