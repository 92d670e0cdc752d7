"""The infrastructure fault scenarios (`vigil faults run --quick --only network_cut
broker_restart postgres_restart`), judged by sets.

Why a separate test: these stop a broker, a database or a network path, so they run on
the dedicated fault stack of `vigil.faults.infra` (its own ports and state folder), never
on the shared test stack; Triton and the object store still come from the test stack.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

INFRA = ["network_cut", "broker_restart", "postgres_restart"]


def test_infra_fault_scenarios_lose_and_double_nothing(stack: dict[str, str],
                                                       tmp_path: Path) -> None:
    env = dict(os.environ)
    env.update(stack)
    env.update({"VIGIL_STATE_DIR": str(tmp_path / "state"), "VIGIL_LOG_FORMAT": "text"})
    out = tmp_path / "faults.json"
    res = subprocess.run(
        [sys.executable, "-m", "vigil.cli", "faults", "run", "--quick", "--json", str(out),
         "--only", *INFRA],
        env=env, capture_output=True, text=True, timeout=600, stdin=subprocess.DEVNULL,
    )
    text = res.stdout + res.stderr
    assert out.exists(), text[-4000:]
    results = {r["name"]: r for r in json.loads(out.read_text())}
    assert sorted(results) == sorted(INFRA), text[-4000:]
    for name, r in results.items():
        assert r["produced"] > 0, (name, r)
        assert (r["lost"], r["duplicated"], r["missed"], r["doubled"]) == (0, 0, 0, 0), \
            (name, r)
        assert not r["problems"], (name, r["problems"])
        assert r["faults"] and r["recovery_s"], (name, "no fault was injected")
    assert res.returncode == 0, text[-4000:]
