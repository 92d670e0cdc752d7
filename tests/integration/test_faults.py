"""Fault scenarios against real processes (`vigil faults run --quick`), judged by sets.

Why through the command: the scenarios start real worker, projector and edge processes
and SIGKILL/SIGSTOP them, which is the only way to hit the windows between a produce, a
database commit and an offset commit. The oracle compares the Kafka log with the read
models as sets of event ids and per-camera sequences, so a loss cannot hide behind a
duplicate. The first five scenarios run in one command; the later ones one each, so a
failure names its scenario in the test id.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.integration.faults_support import faults_run

pytestmark = pytest.mark.integration

#: edge_kill runs in the sweep test below (two seeds) instead
QUICK = ["worker_kill", "projector_kill", "poison", "ack_race"]


def _assert_clean(r: dict[str, Any]) -> None:
    assert r["produced"] > 0, r
    assert (r["lost"], r["duplicated"], r["missed"], r["doubled"]) == (0, 0, 0, 0), r
    assert (r["escalations_missed"], r["escalations_doubled"]) == (0, 0), r
    assert r["escalations_fired"] == r["escalations_due"], r
    assert not r["problems"], (r["name"], r["problems"])
    assert r["faults"], (r["name"], "no fault was injected")


def run_scenario(stack: dict[str, str], tmp_path: Path, name: str) -> dict[str, Any]:
    """One scenario, in quick mode, that the oracle passed; its JSON result."""
    results, code, text = faults_run(stack, tmp_path, [name], 540)
    (r,) = results
    assert r["name"] == name
    _assert_clean(r)
    assert code == 0, text[-4000:]
    return r


def test_quick_fault_scenarios_lose_and_double_nothing(stack: dict[str, str],
                                                       tmp_path: Path) -> None:
    results_list, code, text = faults_run(stack, tmp_path, QUICK, 600)
    results = {r["name"]: r for r in results_list}
    assert sorted(results) == sorted(QUICK), text[-4000:]
    for r in results.values():
        _assert_clean(r)
    assert results["poison"]["details"]["poison_missing_from_dlq"] == []
    # the pipelines escalate after 10 s, so open alerts come due within the run: the
    # escalation oracle judged real deadlines, not an empty set
    assert sum(r["escalations_due"] for r in results.values()) > 0, \
        {n: (r["escalations_fired"], r["escalations_due"]) for n, r in results.items()}
    assert code == 0, text[-4000:]


def test_sweep_of_the_cheapest_crash_scenario_over_seeds(stack: dict[str, str],
                                                         tmp_path: Path) -> None:
    """`--sweep 2`: edge_kill (the cheapest crash scenario) with two seeds, so two kill
    moments; each run judged clean, the projector's offset invariant included."""
    results, code, text = faults_run(stack, tmp_path, ["edge_kill"], 900,
                                     extra=("--sweep", "2", "--seed", "7"))
    assert [(r["name"], r["details"]["seed"]) for r in results] == \
        [("edge_kill", 7), ("edge_kill", 8)], text[-4000:]
    for r in results:
        _assert_clean(r)
        assert r["details"]["offset_check"]["checked"] >= r["produced"], r
    assert "sweep done: 1 scenario(s) x 2 seed(s) = 2 run(s), 0 failed" in text, text[-4000:]
    assert code == 0, text[-4000:]


def test_stalled_worker_is_fenced_or_deduplicated(stack: dict[str, str],
                                                  tmp_path: Path) -> None:
    """SIGSTOP past the session timeout while a second worker takes over, then SIGCONT."""
    r = run_scenario(stack, tmp_path, "worker_stall")
    assert r["alerts_expected"] > 0 and r["recovery_s"], r


def test_worker_with_wiped_rocksdb_restores_from_changelogs_and_loses_nothing(
        stack: dict[str, str], tmp_path: Path) -> None:
    """SIGKILL and RocksDB deleted: the restart restores every table while its Fetcher
    already runs, the path where Faust used to drop the frames fetched in that window
    (agents/faust_fixes.py); run_scenario's oracle catches a single lost frame."""
    r = run_scenario(stack, tmp_path, "worker_wipe")
    assert "wiped" in r["faults"][0] and r["recovery_s"], r
    assert r["alerts_expected"] > 0 and r["alerts_raised"] == r["alerts_expected"], r


def test_projector_killed_right_after_its_commit(stack: dict[str, str],
                                                 tmp_path: Path) -> None:
    r = run_scenario(stack, tmp_path, "projector_commit_kill")
    assert r["details"]["kills_after_commit"] >= 1, r


def test_full_spool_disk_declares_its_drops_and_delivers_the_rest(
        stack: dict[str, str], tmp_path: Path) -> None:
    r = run_scenario(stack, tmp_path, "spool_full")
    d = r["details"]
    assert sum(d["declared_dropped"].values()) > 0, d
    assert d["declared_dropped"] == d["missing_in_read_model"], d


def test_malformed_frames_land_in_the_dlq_and_traffic_goes_on(stack: dict[str, str],
                                                              tmp_path: Path) -> None:
    r = run_scenario(stack, tmp_path, "malformed")
    d = r["details"]
    assert d["injected"] > 0 and d["missing_from_dlq"] == [], d
    assert d["above_topic_limit"] and set(d["above_topic_limit"]) == {"MSG_SIZE_TOO_LARGE"}, d


def test_triton_restart_under_load_loses_nothing(stack: dict[str, str],
                                                 tmp_path: Path) -> None:
    """A Triton of the scenario's own is SIGKILLed mid-stream and started again."""
    r = run_scenario(stack, tmp_path, "triton_restart")
    health = r["details"]["inference_health"]
    assert "InferenceDegraded" in health and health[-1] == "InferenceRecovered", health
    assert r["alerts_expected"] > 0 and r["recovery_s"], r


def test_object_store_outage_during_recording_loses_no_segment(
        stack: dict[str, str], tmp_path: Path) -> None:
    """The edge's path to the object store is cut while it records: the segments finished
    meanwhile wait in its buffer and arrive afterwards, each once and playable."""
    r = run_scenario(stack, tmp_path, "recording_outage")
    d = r["details"]
    assert d["recorded_during_outage"] >= 2, r
    assert d["segments_recorded"] == d["playable"] == d["announcements"] == 10, r
