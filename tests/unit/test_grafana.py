"""The Grafana dashboard and provisioning: the JSON loads, panels are well formed, every
query names only metrics documented in infra/prometheus/METRICS.md, and provisioning
points at the Prometheus the dashboard uses."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from promql_names import ROOT, documented_metrics, metric_names, planned_metrics, undocumented

GRAFANA = ROOT / "infra" / "grafana"
DASHBOARDS = sorted((GRAFANA / "dashboards").glob("*.json"))


def _panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    for panel in dashboard.get("panels", []):
        out.append(panel)
        out.extend(panel.get("panels", []))  # collapsed rows hold their panels
    return out


def _load(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text(encoding="utf-8"))


def test_there_is_a_dashboard() -> None:
    assert [p.name for p in DASHBOARDS] == ["vigil.json"]


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.name)
def test_dashboard_structure(path: Path) -> None:
    dash = _load(path)
    assert dash["uid"] and dash["title"]
    panels = _panels(dash)
    assert panels
    assert len({p["id"] for p in panels}) == len(panels), "panel ids are unique"
    for panel in panels:
        if panel.get("type") == "row":
            continue
        assert panel.get("title"), panel
        assert panel.get("targets"), f"panel {panel['title']!r} has no query"
        for target in panel["targets"]:
            assert target.get("expr", "").strip(), f"empty query in {panel['title']!r}"


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.name)
def test_every_query_uses_documented_metrics(path: Path) -> None:
    dash = _load(path)
    documented = documented_metrics()
    exprs = [(p["title"], t["expr"]) for p in _panels(dash) for t in p.get("targets", [])]
    for var in dash.get("templating", {}).get("list", []):
        query = var.get("query")
        if isinstance(query, dict):
            query = query.get("query", "")
        if isinstance(query, str) and query.startswith("label_values("):
            inner = query[len("label_values("):].rsplit(",", 1)[0]
            exprs.append((f"${var['name']}", inner))
    problems = {title: sorted(undocumented(e, documented)) for title, e in exprs}
    assert {k: v for k, v in problems.items() if v} == {}


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.name)
def test_no_panel_uses_a_planned_metric(path: Path) -> None:
    """Planned metrics are exported by nothing: the panel would stay empty forever."""
    used = {title: sorted(metric_names(t["expr"]) & planned_metrics())
            for title, t in ((p["title"], t) for p in _panels(_load(path))
                             for t in p.get("targets", []))}
    assert {k: v for k, v in used.items() if v} == {}


def test_dashboard_shows_what_operators_need() -> None:
    used = set()
    for panel in _panels(_load(GRAFANA / "dashboards" / "vigil.json")):
        for target in panel.get("targets", []):
            used |= metric_names(target["expr"])
    for needed in ("vigil_edge_frames_captured_total", "vigil_inference_frame_seconds_bucket",
                   "vigil_consumer_lag", "vigil_alerts_open", "vigil_dlq_messages_total",
                   "vigil_projector_lag"):
        assert needed in used


def test_provisioning_points_at_the_dashboards_and_prometheus() -> None:
    ds = yaml.safe_load((GRAFANA / "provisioning" / "datasources" / "prometheus.yml").read_text())
    (source,) = ds["datasources"]
    assert source["type"] == "prometheus"
    assert source["url"] == "http://prometheus:9090"
    uids = {
        t["datasource"]["uid"]
        for p in _panels(_load(GRAFANA / "dashboards" / "vigil.json"))
        for t in p.get("targets", [])
    }
    assert uids == {source["uid"]}

    prov = yaml.safe_load((GRAFANA / "provisioning" / "dashboards" / "vigil.yml").read_text())
    (provider,) = prov["providers"]
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    mounts = compose["services"]["grafana"]["volumes"]
    assert any(str(m).endswith(":" + provider["options"]["path"] + ":ro") for m in mounts), (
        "compose must mount infra/grafana/dashboards where the provider looks"
    )
