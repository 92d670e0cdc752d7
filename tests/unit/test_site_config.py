"""Site file validation: errors name the item; scenario `site:` sections load."""

from __future__ import annotations

from pathlib import Path

import pytest

from schemas.events import CameraConfigured, RuleConfigured, ZoneConfigured
from schemas.site_config import config_events, load_site, parse_site
from vigil.errors import ConfigError
from vigil_cli.config import content, plan

ROOT = Path(__file__).resolve().parents[2]

SITE = {
    "site_id": "s1",
    "cameras": [{"camera_id": "cam-1", "timezone": "Europe/Berlin"}, {"camera_id": "cam-2"}],
    "zones": [{"zone_id": "bench", "camera_id": "cam-1",
               "polygon": [[0.1, 0.5], [0.6, 0.5], [0.6, 0.9], [0.1, 0.9]]}],
    "lines": [{"line_id": "gate", "camera_id": "cam-2", "a": [0.5, 0.1], "b": [0.5, 0.9]}],
    "rules": [
        {"rule_id": "loit", "rule_type": "loitering", "zone_id": "bench", "dwell_s": 30},
        {"rule_id": "gate-in", "rule_type": "line_crossing", "line_id": "gate",
         "direction": "forward", "schedule": {"kind": "night"}},
    ],
}


def with_(path: str, value: object) -> dict:
    import copy

    data = copy.deepcopy(SITE)
    node: object = data
    keys = path.split(".")
    for k in keys[:-1]:
        node = node[int(k)] if k.isdigit() else node[k]  # type: ignore[index]
    last = keys[-1]
    node[int(last) if last.isdigit() else last] = value  # type: ignore[index]
    return data


def test_valid_site_fills_camera_ids_and_builds_events() -> None:
    site = parse_site(SITE)
    assert [r.camera_id for r in site.rules] == ["cam-1", "cam-2"]
    events = dict(config_events(site))
    assert set(events) == {"camera/cam-1", "camera/cam-2", "zone/bench", "line/gate",
                           "rule/loit", "rule/gate-in"}
    assert isinstance(events["camera/cam-1"], CameraConfigured)
    assert events["camera/cam-1"].timezone == "Europe/Berlin"
    rule = events["rule/gate-in"]
    assert isinstance(rule, RuleConfigured) and rule.schedule.kind == "night"
    assert isinstance(events["zone/bench"], ZoneConfigured)


@pytest.mark.parametrize(
    ("path", "value", "needle"),
    [
        ("zones.0.polygon", [[0, 0], [1, 1], [1, 0], [0, 1]], "zones[0] (bench).polygon"),
        ("rules.0.dwell_s", -5, "rules[0] (loit).dwell_s"),
        ("rules.0.zone_id", "nowhere", "rules[0] (loit): unknown zone_id 'nowhere'"),
        ("rules.1.line_id", "gte", "rules[1] (gate-in): unknown line_id 'gte'"),
        ("zones.0.camera_id", "cam-9", "zones[0] (bench): unknown camera_id 'cam-9'"),
        ("cameras.0.timezone", "Mars/Base", "unknown time zone"),
        ("rules.0.surprise", 1, "rules[0] (loit).surprise"),
    ],
)
def test_invalid_items_are_named(path: str, value: object, needle: str) -> None:
    with pytest.raises(ConfigError) as exc:
        parse_site(with_(path, value))
    assert needle in str(exc.value)


def test_crowd_hysteresis_must_make_sense() -> None:
    data = with_("rules.0", {"rule_id": "c", "rule_type": "crowd", "camera_id": "cam-1",
                             "min_people": 3, "clear_below": 5})
    with pytest.raises(ConfigError, match="clear_below"):
        parse_site(data)


def test_scenario_site_sections_load() -> None:
    files = sorted((ROOT / "edge_producer" / "scenarios").glob("*.yaml"))
    if not files:
        pytest.skip("no scenarios yet")
    for f in files:
        site = load_site(f)
        assert site.cameras


def test_plan_diffs_by_content() -> None:
    site = parse_site(SITE)
    current = dict(config_events(site))
    current["zone/old"] = current["zone/bench"]
    p = plan(site, dict(current))  # type: ignore[arg-type]
    assert p.upserts == [] and p.deletes == ["zone/old"]
    changed = parse_site(with_("rules.0.dwell_s", 60))
    p = plan(changed, dict(current))  # type: ignore[arg-type]
    assert [k for k, _ in p.upserts] == ["rule/loit"]
    assert content(p.upserts[0][1])["dwell_s"] == 60
