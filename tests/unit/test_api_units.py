"""Pure parts of the API: geometry, cursors, rate limiting, settings, OpenAPI/route sync,
and the error contract for requests that never reach a dependency."""

from __future__ import annotations

import contextlib
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError
from sqlalchemy import create_engine
from starlette.testclient import TestClient

from api.app import all_endpoints, create_app
from api.auth import PERMISSIONS, Principal, hash_key
from api.common import decode_cursor, encode_cursor, split_ref
from api.config_routes import RuleIn, ZoneIn
from api.console.pages import is_console_route
from api.errors import ApiError
from api.openapi import build_openapi, openapi_path
from api.settings import load_api_settings
from schemas.site_config import PointModel
from vigil.errors import ConfigError
from vigil.ratelimit import RateLimiter
from vigil.settings import load_settings


def _poly(*pts: tuple[float, float]) -> list[PointModel]:
    return [PointModel(x=x, y=y) for x, y in pts]


def test_polygon_checks() -> None:
    square = _poly((0, 0), (1, 0), (1, 1), (0, 1))
    assert ZoneIn(camera_id="c", name="n", polygon=square).polygon == square
    bowtie = _poly((0, 0), (1, 1), (1, 0), (0, 1))
    with pytest.raises(ValidationError, match="self-intersecting"):
        ZoneIn(camera_id="c", name="n", polygon=bowtie)
    with pytest.raises(ValidationError, match="no area"):
        ZoneIn(camera_id="c", name="n", polygon=_poly((0, 0), (0.5, 0.5), (1, 1)))
    with pytest.raises(ValidationError):
        ZoneIn(camera_id="c", name="n", polygon=_poly((0, 0), (2, 0), (1, 1)))


@given(st.lists(st.tuples(st.floats(0, 1), st.floats(0, 1)), min_size=3, max_size=8))
def test_polygon_validation_never_crashes(points: list[tuple[float, float]]) -> None:
    with contextlib.suppress(ValidationError):
        ZoneIn(camera_id="c", name="n", polygon=[{"x": x, "y": y} for x, y in points])


def test_rule_thresholds_and_targets() -> None:
    RuleIn(camera_id="c", rule_type="loitering", zone_id="z")
    with pytest.raises(ValidationError):
        RuleIn(camera_id="c", rule_type="loitering", zone_id="z", dwell_s=-1)
    with pytest.raises(ValidationError, match="needs line_id"):
        RuleIn(camera_id="c", rule_type="line_crossing")
    with pytest.raises(ValidationError, match="must not exceed min_people"):
        RuleIn(camera_id="c", rule_type="crowd", zone_id="z", min_people=2, clear_below=3)
    # the site file's bounds (schemas/site_config.py RuleModel): no zero dwell or crowd
    for zero in ({"dwell_s": 0}, {"min_people": 0, "clear_below": 0}, {"window_s": 0}):
        with pytest.raises(ValidationError):
            RuleIn(camera_id="c", rule_type="crowd", zone_id="z", **zero)
    assert RuleIn(camera_id="c", rule_type="crowd").zone_id is None  # the whole frame
    with pytest.raises(ValidationError):
        RuleIn(camera_id="c", rule_type="loitering", zone_id="z",
               schedule={"kind": "custom", "start": "25:00", "end": "06:00"})


def test_cursor_round_trip_and_tampering() -> None:
    at = datetime(2026, 1, 1, tzinfo=UTC)
    assert decode_cursor(encode_cursor(at, "x"), (datetime, str)) == [at, "x"]
    for bad in ("!!!", encode_cursor("x"), encode_cursor("2026-01-01T00:00:00", "x"),
                encode_cursor(1, 2)):
        with pytest.raises(ApiError) as info:
            decode_cursor(bad, (datetime, str))
        assert info.value.status == 400


@given(st.text(max_size=200))
def test_any_cursor_is_400_or_valid(raw: str) -> None:
    try:
        decode_cursor(raw, (datetime, str))
    except ApiError as exc:
        assert exc.status == 400


def test_rate_limiter_is_per_key_and_refills() -> None:
    rl = RateLimiter(rate_per_s=2, burst=2)
    assert rl.take("a", now=0) == 0 and rl.take("a", now=0) == 0
    assert rl.take("a", now=0) > 0
    assert rl.take("b", now=0) == 0
    assert rl.take("a", now=0.6) == 0


def test_roles_and_scope() -> None:
    auditor = Principal("k", "n", "auditor", None)
    assert auditor.can("read") and auditor.can("audit")
    assert not auditor.can("act") and not auditor.can("configure")
    viewer = Principal("k", "n", "viewer", frozenset({"s1"}))
    assert not viewer.can("audit") and viewer.sees_site("s1") and not viewer.sees_site("s2")
    assert not viewer.sees_site(None)
    assert PERMISSIONS["configure"] == {"admin"}
    assert len(hash_key("x")) == 64


def test_settings_fail_fast() -> None:
    s = load_api_settings(env={"VIGIL_API_CORS_ORIGINS": "https://a, https://b",
                               "VIGIL_API_HOST": "0.0.0.0"})
    assert s.cors_origins == ["https://a", "https://b"]
    with pytest.raises(ConfigError, match="VIGIL_API_BOGUS"):
        load_api_settings(env={"VIGIL_API_BOGUS": "1"})
    with pytest.raises(ConfigError, match="MAX_PAGE_SIZE"):
        load_api_settings(env={"VIGIL_API_MAX_PAGE_SIZE": "0"})


def test_split_ref() -> None:
    known = ("snapshots", "frames")
    assert split_ref("s3://b/k/x.jpg", "snapshots", known) == ("b", "k/x.jpg")
    assert split_ref("frames/c/1.jpg", "snapshots", known) == ("frames", "c/1.jpg")
    assert split_ref("c/1.jpg", "snapshots", known) == ("snapshots", "c/1.jpg")


class _NoProducer:
    """Requests in these tests never reach Kafka."""

    def send(self, *a: Any, **k: Any) -> None:
        raise AssertionError("unexpected publish")

    def flush(self, timeout: float = 0) -> int:
        return 0


def _app() -> Any:
    engine = create_engine("postgresql+psycopg://nobody@127.0.0.1:1/none")
    return create_app(load_settings({}), engine, _NoProducer(),  # type: ignore[arg-type]
                      api_settings=load_api_settings(env={}), read_schema="vigil",
                      create_key_table=False)


def test_openapi_in_step_with_routes() -> None:
    app = _app()
    spec = build_openapi(all_endpoints())
    documented = {(p, m.upper()) for p, ops in spec["paths"].items() for m in ops}
    # The console's HTML pages are not part of the JSON API's contract (they use it).
    api_routes = [r for r in app.routes if not is_console_route(r)]
    served = {(openapi_path(r.path), m) for r in api_routes for m in r.methods - {"HEAD"}}
    assert documented == served
    assert spec["openapi"] == "3.1.0"
    ids = [op["operationId"] for ops in spec["paths"].values() for op in ops.values()]
    assert len(ids) == len(set(ids))
    for ops in spec["paths"].values():
        for op in ops.values():
            if "security" in op:
                assert {"401", "403", "422", "429"} <= set(op["responses"])


def test_errors_are_json_without_dependencies() -> None:
    with TestClient(_app(), raise_server_exceptions=False) as c:
        assert c.get("/health").json() == {"status": "ok"}
        for resp, status in ((c.get("/api/v1/alerts"), 401), (c.get("/nope"), 404),
                             (c.delete("/health"), 405),
                             (c.get("/api/v1/alerts", headers={"X-API-Key": "junk"}), 401)):
            assert resp.status_code == status
            assert set(resp.json()) == {"error", "message", "details"}
        assert c.get("/openapi.json").json()["info"]["title"] == "Vigil API"
