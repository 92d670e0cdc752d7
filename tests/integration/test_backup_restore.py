"""The restore drill (`vigil faults run --only restore_drill`, tools/faults/restore.py): a
real pipeline's alerts, key and evidence backed up, the data destroyed, restored and read
again; judged by the set oracle, `vigil projector check`, `vigil replay --verify` and the
API's answers before and after (docs/operations.md, "Backup and restore").

The drill reports the recovery time and point it measured; no assertion depends on their
size (no timing asserts), only on what was recovered and what, by design, was not.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.integration.faults_support import faults_run

pytestmark = pytest.mark.integration


def test_backup_destroy_restore_gives_the_same_alerts_keys_and_evidence(
        stack: dict[str, str], tmp_path: Path) -> None:
    results, code, text = faults_run(stack, tmp_path, ["restore_drill"], 1200)
    (r,) = results
    print("restore drill:", {k: v for k, v in r["details"].items() if k != "seed"},
          "recovery_s", r["recovery_s"])
    assert not r["problems"], r["problems"]
    assert r["faults"] and r["produced"] > 0, r
    assert (r["lost"], r["duplicated"]) == (0, 0), r  # log vs restored read model
    d = r["details"]
    assert d["alerts"] > 0 and d["evidence"] > 0, d  # the comparison was not vacuous
    assert d["backup_objects"] > 0, d
    assert d["events_after_backup_lost"] == 0, d  # the acknowledgement came back
    assert d["postgres_only_after_backup_lost"] is True, d  # the late key did not
    assert len(r["recovery_s"]) == 1, r
    assert code == 0, text[-4000:]
