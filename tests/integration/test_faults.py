"""Fault scenarios against real processes (`vigil faults run --quick`), judged by sets.

Why through the command: the scenarios start real worker, projector and edge processes
and SIGKILL them, which is the only way to hit the windows between a produce, a database
commit and an offset commit. The oracle compares the Kafka log with the read models as
sets of event ids and per-camera sequences, so a loss cannot hide behind a duplicate.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

QUICK = ["worker_kill", "projector_kill", "poison", "edge_kill", "ack_race"]


def test_quick_fault_scenarios_lose_and_double_nothing(stack: dict[str, str],
                                                       tmp_path: Path) -> None:
    env = dict(os.environ)
    env.update(stack)
    env.update({"VIGIL_STATE_DIR": str(tmp_path / "state"), "VIGIL_LOG_FORMAT": "text"})
    out = tmp_path / "faults.json"
    res = subprocess.run(
        [sys.executable, "-m", "vigil.cli", "faults", "run", "--quick", "--json", str(out),
         "--only", *QUICK],
        env=env, capture_output=True, text=True, timeout=600, stdin=subprocess.DEVNULL,
    )
    text = res.stdout + res.stderr
    assert out.exists(), text[-4000:]
    results = {r["name"]: r for r in json.loads(out.read_text())}
    assert sorted(results) == sorted(QUICK), text[-4000:]
    for name, r in results.items():
        assert r["produced"] > 0, (name, r)
        assert (r["lost"], r["duplicated"], r["missed"], r["doubled"]) == (0, 0, 0, 0), \
            (name, r)
        assert not r["problems"], (name, r["problems"])
        assert r["faults"], (name, "no fault was injected")
    assert results["poison"]["details"]["poison_missing_from_dlq"] == []
    assert res.returncode == 0, text[-4000:]
