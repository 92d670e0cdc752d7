"""One site-configuration model: the API and `vigil config validate` give the same verdict.

Hypothesis generates zones, lines, rules and notification routes, valid and invalid:
values at and around every bound (zero, just above and below, the maxima), bad ids
(leading punctuation, too long, spaces, a trailing newline, non-ASCII), unknown or
mismatched cameras, zones and lines, degenerate polygons (bow-ties, repeated vertices,
collinear points, slivers, too many vertices), zero-length lines, bad schedules and
class lists, unknown fields. Each one is

- PUT to the real API (Starlette app, real PostgreSQL read model filled by the real
  projector, real Kafka behind the publisher) against a world holding two cameras, two
  zones and a line; accepted = 202, rejected = 422, anything else fails the test;
- written into a site file holding the same cameras, zones and line, and checked with
  ``vigil config validate`` (the CLI's `main`, in process): accepted = exit 0.

The verdicts must agree. The one difference of shape, not of verdict: the API always
names the entity's camera (a site file may leave it to be inferred), so every generated
entity names one, valid or not.
"""

from __future__ import annotations

import contextlib
import io
import math
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
import yaml
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from starlette.testclient import TestClient

from api.app import create_app
from api.settings import load_api_settings
from schemas.events import CameraConfigured, LineConfigured, Point, ZoneConfigured
from tools.testkit.api import World, make_world
from vigil.settings import get_settings
from vigil_cli.main import main as vigil

pytestmark = pytest.mark.integration

SQUARE = [[0.1, 0.1], [0.4, 0.1], [0.4, 0.4], [0.1, 0.4]]
#: the world both paths see (the API through the read model, the CLI in the file)
SITE: dict[str, Any] = {
    "site_id": "s1", "edge_id": "e1",
    "cameras": [{"camera_id": "cam-1"}, {"camera_id": "cam-2"}],
    "zones": [{"zone_id": "z1", "camera_id": "cam-1", "polygon": SQUARE},
              {"zone_id": "z2", "camera_id": "cam-2", "polygon": SQUARE}],
    "lines": [{"line_id": "l1", "camera_id": "cam-1", "a": [0.0, 0.5], "b": [1.0, 0.5]}],
}


def _clear() -> None:
    from schemas.codec import default_codec

    get_settings.cache_clear()
    default_codec.cache_clear()


@pytest.fixture(scope="module")
def world(stack: dict[str, str]) -> Iterator[World]:
    mp = pytest.MonkeyPatch()
    prefix = f"t{uuid.uuid4().hex[:10]}"
    mp.setenv("VIGIL_TOPIC_PREFIX", prefix)
    _clear()
    try:
        with make_world(stack["KAFKA_BOOTSTRAP"], stack["DATABASE_URL"], prefix) as w:
            for cam in SITE["cameras"]:
                w.send("config", f"camera/{cam['camera_id']}", CameraConfigured.create(
                    producer="t", camera_id=cam["camera_id"], site_id="s1", edge_id="e1",
                    name=cam["camera_id"]))
            for z in SITE["zones"]:
                w.send("config", f"zone/{z['zone_id']}", ZoneConfigured.create(
                    producer="t", zone_id=z["zone_id"], camera_id=z["camera_id"],
                    name=z["zone_id"], kind="zone",
                    polygon=[Point(x=x, y=y) for x, y in z["polygon"]]))
            for ln in SITE["lines"]:
                w.send("config", f"line/{ln['line_id']}", LineConfigured.create(
                    producer="t", line_id=ln["line_id"], camera_id=ln["camera_id"],
                    name=ln["line_id"], a=Point(x=ln["a"][0], y=ln["a"][1]),
                    b=Point(x=ln["b"][0], y=ln["b"][1])))
            w.project()
            w.add_key("admin", "admin")
            yield w
    finally:
        mp.undo()
        _clear()


@pytest.fixture(scope="module")
def client(world: World) -> Iterator[TestClient]:
    app = create_app(get_settings(), world.engine, world.producer, read_schema=world.schema,
                     api_settings=load_api_settings(
                         env={}, keys_schema=world.keys_schema, rate_limit_per_s=100_000,
                         rate_limit_burst=100_000, anon_rate_limit_burst=100_000))
    with TestClient(app, raise_server_exceptions=False) as c:
        yield c


# --------------------------------------------------------------------------- strategies
# Every field has a strategy of good values and one of edge values (around its bounds,
# and wrong). Most examples take good values everywhere but in one field, so each bound
# is met by examples that would otherwise pass; some take edge values everywhere.

#: ids as a path segment can carry them (no "/", not empty)
IDS = st.sampled_from(["-lead", ".dot", "_u", "A" * 129, "has space", "ok\n", "é", "a#b"])
IDS_OK = st.sampled_from(["x-1", "a", "Z9", "A" * 128, "a:b.c_d-e", "9" * 60])
CAMERAS = st.sampled_from(["cam-9", "-cam", "cam 1", "cam-2"])
COORD = st.sampled_from([-0.1, -1e-12, 0.0, 1e-10, 1.0, 1.0000001, 1.5])
COORD_OK = st.sampled_from([0.0, 0.2, 0.5, 0.8, 1.0])
SECONDS = st.sampled_from([-1.0, -1e-9, 0.0, 1e-9, 3600.0, 3600.001, 86_400.0, 86_400.5,
                           604_800.0, 604_801.0, 1e12])
SECONDS_OK = st.sampled_from([0.5, 10.0, 60.0, 3600.0])
COUNTS = st.sampled_from([-1, 0, 1, 10, 11, 100, 101, 10_000, 10_001])
TIMES = st.sampled_from(["00:00", "23:59", "24:00", "7:05", "12:60", " 07:05", "0705"])
TIMES_OK = st.sampled_from(["00:00", "07:05", "22:00", "23:59"])
NAMES = st.sampled_from(["", "n" * 200, "n" * 201])


def _circle(n: int) -> list[list[float]]:
    return [[0.5 + 0.4 * math.cos(2 * math.pi * i / n), 0.5 + 0.4 * math.sin(2 * math.pi * i / n)]
            for i in range(n)]


POLYGONS_OK = st.sampled_from([
    SQUARE, [[0.0, 0.0], [1.0, 0.0], [0.5, 1.0]], _circle(256),
    [[0.1, 0.1], [0.1 + 1e-4, 0.1], [0.1, 0.1 + 1e-4]],  # area 5e-9: small, fine
])
POLYGONS = st.one_of(
    st.lists(st.lists(st.one_of(COORD, COORD_OK), min_size=2, max_size=2), max_size=6),
    st.sampled_from([
        [[0.1, 0.1], [0.9, 0.9], [0.9, 0.1], [0.1, 0.9]],  # bow-tie
        [[0.1, 0.1], [0.5, 0.5], [0.9, 0.9]],  # collinear
        [[0.1, 0.1], [0.4, 0.1], [0.4, 0.1], [0.1, 0.4]],  # repeated vertex
        [[0.1, 0.1], [0.4, 0.1], [0.4, 0.4], [0.1, 0.1]],  # closed by hand
        [[0.1, 0.1], [0.1 + 1e-5, 0.1], [0.1, 0.1 + 1e-5]],  # area 5e-11: a sliver
        [[0.1, 0.1], [0.2, 0.1]],  # two points
        _circle(257),
    ]))
POINTS_OK = st.lists(COORD_OK, min_size=2, max_size=2)
POINTS = st.one_of(st.lists(st.one_of(COORD, COORD_OK), min_size=2, max_size=2))


class Fields:
    """Draws each field good or, for the one field chosen to be off (or all of them in
    a wild example), from its edge values; a field may also be left out (its default)."""

    def __init__(self, draw: Any, names: list[str]) -> None:
        self.draw = draw
        self.wild = draw(st.integers(0, 4)) == 0
        self.off = draw(st.sampled_from([*names, None]))

    def bad(self, name: str) -> bool:
        return self.wild or name == self.off

    def value(self, name: str, good: Any, edge: Any) -> Any:
        return self.draw(st.one_of(good, edge) if self.bad(name) else good)

    def maybe(self, d: dict[str, Any], name: str, good: Any, edge: Any) -> None:
        if self.draw(st.booleans()):
            d[name] = self.value(name, good, edge)


@st.composite
def zones(draw: Any) -> tuple[str, str, dict[str, Any]]:
    f = Fields(draw, ["id", "camera_id", "polygon", "name", "kind", "extra"])
    z: dict[str, Any] = {"camera_id": f.value("camera_id", st.just("cam-1"), CAMERAS),
                         "polygon": f.value("polygon", POLYGONS_OK, POLYGONS)}
    f.maybe(z, "name", st.just("Door"), NAMES)
    f.maybe(z, "kind", st.sampled_from(["zone", "perimeter"]), st.just("area"))
    if f.bad("extra"):
        z["surprise"] = 1
    return "zone", f.value("id", IDS_OK, IDS), z


@st.composite
def lines(draw: Any) -> tuple[str, str, dict[str, Any]]:
    f = Fields(draw, ["id", "camera_id", "a", "b", "name"])
    ln: dict[str, Any] = {"camera_id": f.value("camera_id", st.just("cam-2"), CAMERAS),
                          "a": f.value("a", st.just([0.0, 0.5]), POINTS)}
    near = st.sampled_from([list(ln["a"]), [ln["a"][0], ln["a"][1] + 1e-12],
                            [ln["a"][0], ln["a"][1] + 1e-6]])
    ln["b"] = f.value("b", st.sampled_from([[1.0, 0.5], [0.5, 1.0]]),
                      st.one_of(POINTS, near))
    f.maybe(ln, "name", st.just("Gate"), NAMES)
    return "line", f.value("id", IDS_OK, IDS), ln


@st.composite
def rules(draw: Any) -> tuple[str, str, dict[str, Any]]:
    f = Fields(draw, ["id", "camera_id", "rule_type", "target", "severity", "direction",
                      "dwell_s", "gap_tolerance_s", "window_s", "cooldown_s",
                      "escalation_s", "min_people", "clear_below", "max_escalation_level",
                      "classes", "schedule", "extra"])
    kind = draw(st.sampled_from(["loitering", "crowd", "perimeter", "line_crossing"]))
    r: dict[str, Any] = {"camera_id": f.value("camera_id", st.just("cam-1"), CAMERAS),
                         "rule_type": f.value("rule_type", st.just(kind), st.just("theft"))}
    if f.bad("target"):
        f.maybe(r, "zone_id", st.sampled_from(["z1", "z2", "nowhere", "-z"]), st.nothing())
        f.maybe(r, "line_id", st.sampled_from(["l1", "nowhere"]), st.nothing())
    elif kind == "line_crossing":
        r["line_id"] = "l1"
        f.maybe(r, "direction", st.sampled_from(["forward", "backward"]), st.nothing())
    elif kind != "crowd" or draw(st.booleans()):
        r["zone_id"] = "z1"
    if f.bad("direction"):
        r["direction"] = draw(st.sampled_from(["forward", "sideways"]))
    f.maybe(r, "severity", st.sampled_from(["info", "warning", "critical"]), st.just("loud"))
    f.maybe(r, "enabled", st.booleans(), st.nothing())
    for name in ("dwell_s", "gap_tolerance_s", "window_s", "cooldown_s", "escalation_s"):
        f.maybe(r, name, SECONDS_OK, SECONDS)
    f.maybe(r, "min_people", st.sampled_from([3, 5, 10]), COUNTS)
    f.maybe(r, "clear_below", st.sampled_from([0, 1, 2]), COUNTS)
    f.maybe(r, "max_escalation_level", st.sampled_from([0, 1, 3]), COUNTS)
    f.maybe(r, "auto_resolve", st.booleans(), st.nothing())
    f.maybe(r, "classes", st.sampled_from([["person"], ["person", "car"], ["c" * 64],
                                           [f"c{i}" for i in range(20)]]),
            st.sampled_from([[], [""], ["c" * 65], [f"c{i}" for i in range(21)]]))
    if draw(st.booleans()) or f.bad("schedule"):
        sched: dict[str, Any] = {"kind": f.value("schedule", st.sampled_from(
            ["always", "night", "custom"]), st.just("weekly"))}
        if sched["kind"] == "custom" or f.bad("schedule"):
            f.maybe(sched, "start", TIMES_OK, TIMES)
            f.maybe(sched, "end", TIMES_OK, TIMES)
        r["schedule"] = sched
    if f.bad("extra"):
        r["surprise"] = 1
    return "rule", f.value("id", IDS_OK, IDS), r


@st.composite
def routes(draw: Any) -> tuple[str, str, dict[str, Any]]:
    f = Fields(draw, ["id", "channels", "cameras", "site_id", "levels", "severities",
                      "rule_types", "recipients", "quiet_hours"])
    rt: dict[str, Any] = {"channels": f.value("channels", st.sampled_from(
        [["mail"], ["mail", "sms"], ["ops:pager.1"]]), st.sampled_from(
        [[], ["bad channel"], [""]]))}
    f.maybe(rt, "cameras", st.sampled_from([["cam-1"], ["cam-1", "cam-2"]]),
            st.sampled_from([["cam-9"], ["-cam"]]))
    f.maybe(rt, "site_id", st.just("s1"), st.just("-s"))
    f.maybe(rt, "levels", st.sampled_from([[0], [2, 10]]), st.sampled_from([[11], [-1]]))
    f.maybe(rt, "severities", st.just(["critical"]), st.just(["loud"]))
    f.maybe(rt, "rule_types", st.just(["crowd", "edge_offline"]), st.just(["nope"]))
    f.maybe(rt, "recipients", st.just(["ops@x.example"]), st.just([" "]))
    if draw(st.booleans()) or f.bad("quiet_hours"):
        q = {"start": f.value("quiet_hours", TIMES_OK, TIMES),
             "end": f.value("quiet_hours", TIMES_OK, TIMES)}
        f.maybe(q, "timezone", st.just("Europe/Berlin"), st.just("Mars/Base"))
        rt["quiet_hours"] = q
    return "route", f.value("id", IDS_OK, IDS), rt


ENTITIES = st.one_of(zones(), lines(), rules(), routes())


# --------------------------------------------------------------------------- the two paths


def _api_body(kind: str, item: dict[str, Any]) -> dict[str, Any]:
    """The same entity as the API's JSON: points as {"x", "y"}."""
    body = dict(item)
    if kind == "zone" and isinstance(body.get("polygon"), list):
        body["polygon"] = [{"x": p[0], "y": p[1]} for p in body["polygon"]]
    if kind == "line":
        for end in ("a", "b"):
            body[end] = {"x": body[end][0], "y": body[end][1]}
    return body


def api_verdict(client: TestClient, headers: dict[str, str], kind: str, entity_id: str,
                item: dict[str, Any]) -> tuple[bool, str]:
    resp = client.put(f"/api/v1/{kind}s/{quote(entity_id, safe='')}",
                      json=_api_body(kind, item), headers=headers)
    assert resp.status_code in (202, 422), (resp.status_code, resp.text)
    return resp.status_code == 202, resp.text


def cli_verdict(path: Path, kind: str, entity_id: str, item: dict[str, Any]
                ) -> tuple[bool, str]:
    site = {k: list(v) if isinstance(v, list) else v for k, v in SITE.items()}
    site.setdefault(f"{kind}s", [])
    site[f"{kind}s"] = [*site[f"{kind}s"], {f"{kind}_id": entity_id, **item}]
    path.write_text(yaml.safe_dump(site, allow_unicode=True))
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = vigil(["config", "validate", str(path)])
    assert code in (0, 2), (code, err.getvalue())
    return code == 0, out.getvalue() + err.getvalue()


@settings(max_examples=400, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(entity=ENTITIES)
def test_the_api_and_config_validate_agree(client: TestClient, world: World, tmp_path: Path,
                                           entity: tuple[str, str, dict[str, Any]]) -> None:
    kind, entity_id, item = entity
    api_ok, api_says = api_verdict(client, world.auth("admin"), kind, entity_id, item)
    cli_ok, cli_says = cli_verdict(tmp_path / "site.yaml", kind, entity_id, item)
    event(f"{kind} {'accepted' if cli_ok else 'rejected'}")  # --hypothesis-show-statistics
    assert api_ok == cli_ok, (f"{kind} {entity_id!r} {item}\nAPI: {api_says}\n"
                              f"vigil config validate: {cli_says}")


def test_the_generated_cases_cover_both_verdicts(client: TestClient, world: World,
                                                 tmp_path: Path) -> None:
    """A fixed sample around the bounds that moved: the old API accepted a zero dwell
    and an empty crowd, the old file a leading-dash id and a 1e-15 line."""
    cases = [
        ("rule", "r-dwell0", {"camera_id": "cam-1", "rule_type": "loitering", "zone_id": "z1",
                              "dwell_s": 0}, False),
        ("rule", "r-crowd0", {"camera_id": "cam-1", "rule_type": "crowd", "zone_id": "z1",
                              "min_people": 0, "clear_below": 0}, False),
        ("rule", "r-frame", {"camera_id": "cam-1", "rule_type": "crowd"}, True),
        ("rule", "r-lvl", {"camera_id": "cam-1", "rule_type": "crowd",
                           "max_escalation_level": 11}, False),
        ("zone", "-lead", {"camera_id": "cam-1", "polygon": SQUARE}, False),
        ("zone", "z-ok", {"camera_id": "cam-1", "polygon": SQUARE}, True),
        ("line", "l-short", {"camera_id": "cam-1", "a": [0.5, 0.5], "b": [0.5, 0.5 + 1e-15]},
         False),
        ("rule", "r-z2", {"camera_id": "cam-1", "rule_type": "loitering", "zone_id": "z2"},
         False),
    ]
    for kind, entity_id, item, expected in cases:
        api_ok, says = api_verdict(client, world.auth("admin"), kind, entity_id, item)
        cli_ok, cli_says = cli_verdict(tmp_path / "site.yaml", kind, entity_id, item)
        assert (api_ok, cli_ok) == (expected, expected), (entity_id, says, cli_says)
