"""The Prometheus configuration and alert rules: promtool accepts them, every rule's unit
tests pass, and every metric a rule uses is documented in infra/prometheus/METRICS.md.

promtool comes from Debian's `prometheus` package (infra/apt-packages.txt); a machine
without it fails these tests rather than skipping them, so CI cannot go green unchecked.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from ops_names import recorded_names
from promql_names import ROOT, documented_metrics, metric_names, planned_metrics, undocumented

PROM = ROOT / "infra" / "prometheus"
RULES = PROM / "rules" / "vigil.rules.yml"
RULE_TESTS = PROM / "tests" / "vigil.rules.test.yml"


def _promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        pytest.fail("promtool not found: install Debian's `prometheus` package "
                    "(listed in infra/apt-packages.txt)")
    return path


def _run(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run([_promtool(), *args], cwd=cwd, capture_output=True, text=True,
                          timeout=120, check=False)


def test_rules_are_valid() -> None:
    res = _run("check", "rules", str(RULES))
    assert res.returncode == 0, res.stdout + res.stderr


def test_prometheus_config_is_valid() -> None:
    res = _run("check", "config", str(PROM / "prometheus.yml"))
    assert res.returncode == 0, res.stdout + res.stderr


def test_rule_unit_tests_pass() -> None:
    res = _run("test", "rules", RULE_TESTS.name, cwd=RULE_TESTS.parent)
    assert res.returncode == 0, res.stdout + res.stderr


def _rules() -> list[dict[str, object]]:
    """The alerting rules (recording rules are checked through the alerts that use them)."""
    doc = yaml.safe_load(RULES.read_text(encoding="utf-8"))
    return [rule for group in doc["groups"] for rule in group["rules"] if "alert" in rule]


def _recording_rules() -> list[dict[str, object]]:
    doc = yaml.safe_load(RULES.read_text(encoding="utf-8"))
    return [rule for group in doc["groups"] for rule in group["rules"] if "record" in rule]


def test_every_rule_has_a_unit_test() -> None:
    tests = yaml.safe_load(RULE_TESTS.read_text(encoding="utf-8"))
    tested = {case["alertname"] for t in tests["tests"] for case in t.get("alert_rule_test", [])}
    fired = {case["alertname"] for t in tests["tests"] for case in t.get("alert_rule_test", [])
             if case.get("exp_alerts")}
    names = {str(rule["alert"]) for rule in _rules()}
    assert names - tested == set(), "rules without a promtool test"
    assert names - fired == set(), "rules never shown to fire in a test"


@pytest.mark.parametrize("rule", _rules() + _recording_rules(),
                         ids=lambda r: str(r.get("alert") or r.get("record")))
def test_rules_use_documented_metrics(rule: dict[str, object]) -> None:
    used = undocumented(str(rule["expr"]), documented_metrics()) - recorded_names()
    assert used == set()


@pytest.mark.parametrize("rule", _rules() + _recording_rules(),
                         ids=lambda r: str(r.get("alert") or r.get("record")))
def test_rules_use_no_planned_metric(rule: dict[str, object]) -> None:
    """A planned metric is exported by nothing: a rule on it could never fire."""
    assert metric_names(str(rule["expr"])) & planned_metrics() == set()


@pytest.mark.parametrize("rule", _rules(), ids=lambda r: str(r["alert"]))
def test_rules_carry_priority_summary_and_runbook(rule: dict[str, object]) -> None:
    labels: dict[str, str] = rule.get("labels", {})  # type: ignore[assignment]
    annotations: dict[str, str] = rule.get("annotations", {})  # type: ignore[assignment]
    assert labels.get("severity") in {"p1", "p2", "p3", "p4"}  # docs/operations.md priorities
    assert annotations.get("summary")
    assert annotations.get("runbook_url") == f"docs/runbooks/{rule['alert']}.md"


def test_scrape_jobs_cover_every_vigil_service() -> None:
    cfg = yaml.safe_load((PROM / "prometheus.yml").read_text(encoding="utf-8"))
    jobs = {job["job_name"] for job in cfg["scrape_configs"]}
    assert {"vigil-edge", "vigil-worker", "vigil-projector", "vigil-api", "vigil-notifier",
            "triton"} <= jobs
