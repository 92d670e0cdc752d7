"""The infrastructure fault scenarios (`vigil faults run --quick --only network_cut
broker_restart postgres_restart`), judged by sets.

Why a separate test: these stop a broker, a database or a network path, so they run on
the dedicated fault stack of `tools.faults.infra` (its own ports and state folder), never
on the shared test stack; Triton and the object store still come from the test stack.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.integration.faults_support import faults_run

pytestmark = pytest.mark.integration

INFRA = ["network_cut", "broker_restart", "postgres_restart"]


def test_infra_fault_scenarios_lose_and_double_nothing(stack: dict[str, str],
                                                       tmp_path: Path) -> None:
    results_list, returncode, text = faults_run(stack, tmp_path, INFRA, 600)
    results = {r["name"]: r for r in results_list}
    assert sorted(results) == sorted(INFRA), text[-4000:]
    for name, r in results.items():
        assert r["produced"] > 0, (name, r)
        assert (r["lost"], r["duplicated"], r["missed"], r["doubled"]) == (0, 0, 0, 0), \
            (name, r)
        assert not r["problems"], (name, r["problems"])
        assert r["faults"] and r["recovery_s"], (name, "no fault was injected")
    assert returncode == 0, text[-4000:]
