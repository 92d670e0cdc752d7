"""What the monitoring configuration refers to: every metric name used by a Prometheus
alert rule, a recording rule or a Grafana panel, and the names recording rules define.

Shared by the unit tests (names documented, none "planned") and the integration test that
scrapes the real processes (tests/integration/test_monitoring_truth.py)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml
from promql_names import ROOT, metric_names

RULE_FILES = sorted((ROOT / "infra" / "prometheus" / "rules").glob("*.yml"))
DASHBOARDS = sorted((ROOT / "infra" / "grafana" / "dashboards").glob("*.json"))


def rules(files: list[Path] = RULE_FILES) -> list[dict[str, Any]]:
    out = []
    for path in files:
        doc = yaml.safe_load(path.read_text(encoding="utf-8"))
        out.extend(rule for group in doc["groups"] for rule in group["rules"])
    return out


def alert_rules() -> list[dict[str, Any]]:
    return [r for r in rules() if "alert" in r]


def recorded_names() -> set[str]:
    """Series that recording rules create (Prometheus makes them, no process exports them)."""
    return {str(r["record"]) for r in rules() if "record" in r}


def panel_exprs() -> list[tuple[str, str]]:
    out = []
    for path in DASHBOARDS:
        dash = json.loads(path.read_text(encoding="utf-8"))
        panels = []
        for panel in dash.get("panels", []):
            panels.append(panel)
            panels.extend(panel.get("panels", []))
        out.extend((f"{path.name}: {p.get('title')}", t["expr"])
                   for p in panels for t in p.get("targets", []) if t.get("expr"))
    return out


def used_names() -> dict[str, set[str]]:
    """{metric name: where it is used} over every rule and panel, recorded names excluded."""
    recorded = recorded_names()
    used: dict[str, set[str]] = {}
    for rule in rules():
        where = f"rule {rule.get('alert') or rule.get('record')}"
        for name in metric_names(str(rule["expr"])):
            used.setdefault(name, set()).add(where)
    for where, expr in panel_exprs():
        for name in metric_names(expr):
            used.setdefault(name, set()).add(where)
    return {k: v for k, v in used.items() if k not in recorded}
