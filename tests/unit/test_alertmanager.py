"""Alertmanager's configuration: `amtool check-config` accepts it, every priority a rule
uses routes to the notifier's receiver for that priority, and the grouping and repeat
timings follow the priorities (docs/operations.md, "Priorities").

amtool comes from Debian's `prometheus-alertmanager` (infra/apt-packages.txt); a machine
without it fails here rather than skipping, so CI cannot go green unchecked."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from ops_names import alert_rules
from promql_names import ROOT

CONFIG = ROOT / "infra" / "alertmanager" / "alertmanager.yml"


def _amtool(*args: str) -> subprocess.CompletedProcess[str]:
    path = shutil.which("amtool")
    if path is None:
        pytest.fail("amtool not found: install Debian's `prometheus-alertmanager` package "
                    "(listed in infra/apt-packages.txt)")
    return subprocess.run([path, *args], capture_output=True, text=True, timeout=60,
                          check=False)


def test_amtool_accepts_the_configuration() -> None:
    res = _amtool("check-config", str(CONFIG))
    assert res.returncode == 0, res.stdout + res.stderr


@pytest.mark.parametrize("priority", ["p1", "p2", "p3", "p4"])
def test_each_priority_routes_to_its_notifier_receiver(priority: str) -> None:
    res = _amtool("config", "routes", "test", f"--config.file={CONFIG}",
                  f"--verify.receivers=notifier-{priority}", f"severity={priority}",
                  "alertname=AnyAlert", "instance=host:1")
    assert res.returncode == 0, res.stdout + res.stderr


def test_every_rule_priority_has_a_route_and_receivers_reach_the_notifier() -> None:
    cfg = yaml.safe_load(CONFIG.read_text(encoding="utf-8"))
    routed = {m.split("=")[1].strip('"') for r in cfg["route"]["routes"] for m in r["matchers"]}
    used = {str(r["labels"]["severity"]) for r in alert_rules()}
    assert used <= routed
    for receiver in cfg["receivers"]:
        (hook,) = receiver["webhook_configs"]
        priority = receiver["name"].removeprefix("notifier-")
        assert hook["url"] == f"http://notifier:9110/alertmanager/{priority}"
        assert hook["send_resolved"] is True
    routes = {m.split("=")[1].strip('"'): r for r in cfg["route"]["routes"]
              for m in r["matchers"]}
    assert routes["p1"]["group_wait"] == "0s" and routes["p1"]["repeat_interval"] == "15m"
    assert routes["p4"]["repeat_interval"] == "24h"


def test_inhibition_names_real_alerts() -> None:
    names = {str(r["alert"]) for r in alert_rules()}
    cfg = yaml.safe_load(CONFIG.read_text(encoding="utf-8"))
    for rule in cfg["inhibit_rules"]:
        for matcher in rule["source_matchers"] + rule["target_matchers"]:
            key, _, value = matcher.partition("=")
            if key == "alertname":
                wanted = value.lstrip("~").strip('"').split("|")
                assert set(wanted) <= names, wanted


def test_the_local_stacks_configuration_is_the_shipped_one_pointed_at_loopback(
        tmp_path: Path) -> None:
    """`vigil dev up` (tools/devstack/stack.py) runs Alertmanager with the shipped file,
    only the notifier's address changed: amtool accepts it, each priority still routes to
    its receiver, and every receiver sends to 127.0.0.1."""
    from tools.devstack.stack import SERVICE_ORDER, local_alertmanager_config

    assert "alertmanager" in SERVICE_ORDER
    local = tmp_path / "alertmanager.yml"
    local.write_text(local_alertmanager_config(CONFIG.read_text(encoding="utf-8"), 19110))
    res = _amtool("check-config", str(local))
    assert res.returncode == 0, res.stdout + res.stderr
    shipped, cfg = (yaml.safe_load(p.read_text(encoding="utf-8")) for p in (CONFIG, local))
    assert (cfg["route"], cfg["inhibit_rules"]) == (shipped["route"], shipped["inhibit_rules"])
    urls = [h["url"] for r in cfg["receivers"] for h in r["webhook_configs"]]
    assert urls == [f"http://127.0.0.1:19110/alertmanager/p{i}" for i in range(1, 5)]
