"""Scenario files: the shipped ones are valid and their declared alerts match their geometry."""

from __future__ import annotations

import pytest
import yaml

from edge_producer.sim.scenario import (
    SCENARIO_DIR,
    load_scenario,
    parse_scenario,
    shipped_scenarios,
)
from edge_producer.sim.truth import derive_alerts, ground_truth, point_in_polygon
from vigil.errors import ConfigError

NAMES = ["passers_by", "loiterer", "crowd6", "group4", "occluded_loiterer", "night",
         "vehicles"]


def test_all_scenarios_shipped() -> None:
    assert {p.stem for p in shipped_scenarios()} >= set(NAMES)


@pytest.mark.parametrize("name", NAMES)
def test_declared_alerts_match_the_geometry(name: str) -> None:
    s = load_scenario(name)
    derived = derive_alerts(s)
    assert len(derived) == len(s.expected_alerts), (derived, s.expected_alerts)
    for exp in s.expected_alerts:
        hits = [d for d in derived if d.rule_id == exp.rule_id
                and abs(d.at_s - exp.at_s) <= exp.tolerance_s]
        assert hits, f"{exp} not derived from the scene: {derived}"
        assert set(exp.actors) <= set(hits[0].actors)


def test_vehicles_render_in_palette_colours_with_labelled_truth() -> None:
    from edge_producer.sim.render import iter_frames
    from edge_producer.sim.vehicles import PALETTE

    s = load_scenario("vehicles")
    f = next(iter_frames(s, start=30, stop=31))  # t = 15 s: the car parked, the truck
    by_label = {b.label: b for b in f.boxes}
    assert set(by_label) == {"car", "truck"} and f.boxes[0].actor_id == "car"
    car = by_label["car"]
    x1, y1, x2, y2 = (round(car.x1 * 640), round(car.y1 * 480), round(car.x2 * 640),
                      round(car.y2 * 480))
    rgb = PALETTE[0][2]
    # the car's box is exactly its coloured pixels: the cabin on top, the body at the sides
    cabin = f.image[y1 + 2, (x1 + x2) // 2][::-1]
    assert all(abs(int(a) - b) < 30 for a, b in zip(cabin, rgb, strict=True))
    assert abs(int(f.image[y2 - 10, x1][2]) - 255) < 30 and f.image[y2 - 10, x1 - 2][1] < 200
    assert (car.foot[0], car.foot[1]) == pytest.approx((0.75, 0.9), abs=0.01)


def test_vehicle_palette_limits_the_vehicles_per_class() -> None:
    doc = yaml.safe_load((SCENARIO_DIR / "vehicles.yaml").read_text())
    truck = next(a for a in doc["actors"] if a["id"] == "truck")
    doc["actors"].append({**truck, "id": "truck2"})
    with pytest.raises(ConfigError, match="2 vehicles of class truck"):
        parse_scenario(doc)
    doc["actors"][-1] = {**truck, "id": "truck2", "stops": {5: 3}}
    with pytest.raises(ConfigError, match="stops"):
        parse_scenario(doc)


def _doc() -> dict:
    return yaml.safe_load((SCENARIO_DIR / "loiterer.yaml").read_text())


def test_errors_name_the_field() -> None:
    doc = _doc()
    doc["actors"][1]["waypoints"] = [[0.1, 0.2]]
    doc["actors"][0]["colour"] = "red"
    with pytest.raises(ConfigError) as err:
        parse_scenario(doc)
    msg = str(err.value)
    assert "actors[1].walker.waypoints" in msg
    assert "actors[0].loiterer.colour" in msg


def test_start_must_carry_an_offset_and_references_must_resolve() -> None:
    doc = _doc()
    doc["start"] = "2026-03-02T14:00:00"
    with pytest.raises(ConfigError, match="start"):
        parse_scenario(doc)
    doc = _doc()
    doc["site"]["rules"][0]["zone_id"] = "nowhere"
    with pytest.raises(ConfigError, match="nowhere"):
        parse_scenario(doc)
    doc = _doc()
    doc["occlusions"] = [{"actor": "ghost", "start_s": 1, "end_s": 2}]
    with pytest.raises(ConfigError, match="ghost"):
        parse_scenario(doc)


def test_night_rule_is_armed_only_at_night() -> None:
    doc = yaml.safe_load((SCENARIO_DIR / "night.yaml").read_text())
    doc["start"] = "2026-03-02T12:10:00+00:00"  # 13:10 in Berlin
    day = parse_scenario(doc)
    assert [a.rule_id for a in derive_alerts(day)] == ["gate-in"]


def test_ground_truth_document() -> None:
    doc = ground_truth(load_scenario("occluded_loiterer"))
    assert doc["frame_count"] == len(doc["frames"]) == 100
    hidden = [f for f in doc["frames"] if "loiterer" in f["hidden"]]
    assert len(hidden) == 8  # 16 s .. 20 s at 2 fps
    assert all(not any(b["actor"] == "loiterer" for b in f["boxes"]) for f in hidden)
    door = [p for p in doc["presence"] if p["zone_id"] == "door"]
    assert len(door) == 1 and door[0]["end_s"] - door[0]["start_s"] > 30
    assert doc["expected_alerts"][0]["occurred_at"].startswith("2026-03-02T16:30:24")


def test_point_in_polygon() -> None:
    sq = [(0.0, 0.0), (1.0, 0.0), (1.0, 1.0), (0.0, 1.0)]
    assert point_in_polygon(0.5, 0.5, sq)
    assert not point_in_polygon(1.5, 0.5, sq)


def test_cli_truth_and_render(tmp_path, capsys) -> None:
    import json

    import av

    from vigil_cli.main import main

    assert main(["sim", "truth", "night", "--no-boxes"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert [a["rule_id"] for a in doc["derived_alerts"]] == ["gate-in", "fence-night"]
    out = tmp_path / "night.mp4"
    assert main(["sim", "render", "night", str(out)]) == 0
    with av.open(str(out)) as c:
        assert c.streams.video[0].codec_context.name == "h264"
        assert c.streams.video[0].frames == 80
