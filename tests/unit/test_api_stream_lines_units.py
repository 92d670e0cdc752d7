"""Pure parts of the stream resume, the lines API, the anonymous rate limit and the
new settings: what needs no broker or database."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError
from sqlalchemy import create_engine
from starlette.testclient import TestClient

from api.app import create_app
from api.config_routes import LineIn
from api.errors import ApiError
from api.settings import load_api_settings
from api.stream import decode_position, encode_position, merge_by_time
from vigil.errors import ConfigError
from vigil.ratelimit import RateLimiter
from vigil.settings import load_settings

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def _row(part: int, off: int, sec: int) -> Any:
    return SimpleNamespace(log_partition=part, log_offset=off,
                           occurred_at=T0 + timedelta(seconds=sec))


@given(st.dictionaries(st.integers(0, 2**31 - 1), st.integers(-1, 2**62), max_size=50))
def test_documented_last_event_id_accepts_every_position_we_send(pos: dict[int, int]) -> None:
    """The OpenAPI document tells SSE clients about Last-Event-ID, and its pattern
    accepts every id the stream sends (a generated client would refuse the others)."""
    import re

    from api.openapi import build_openapi
    from api.stream import ROUTES

    op = build_openapi(ROUTES)["paths"]["/api/v1/alerts/stream"]["get"]
    (header,) = [p for p in op["parameters"] if p["in"] == "header"]
    assert header["name"] == "Last-Event-ID" and not header["required"]
    assert re.fullmatch(header["schema"]["pattern"], encode_position(pos))


@given(st.dictionaries(st.integers(0, 2**31 - 1), st.integers(-1, 2**62), max_size=50))
def test_position_round_trip(pos: dict[int, int]) -> None:
    text = encode_position(pos)
    assert text  # never empty: an empty SSE id would clear the client's Last-Event-ID
    decoded = decode_position(text)
    assert {p: o for p, o in decoded.items() if o != -1 or p in pos} == pos


@pytest.mark.parametrize("bad", ["x", "1", "1:2:3", "a:1", "1:b", "-1:3", "0:-2", ",",
                                 "1:2,", "0:99999999999999999999"])
def test_bad_last_event_id_is_400(bad: str) -> None:
    with pytest.raises(ApiError) as exc:
        decode_position(bad)
    assert exc.value.status == 400


def test_merge_keeps_log_order_per_partition_and_interleaves_by_time() -> None:
    # Partition 0 holds an event whose time is earlier than its predecessor's (two
    # incidents on one partition): log order must win, or a resume could skip it.
    rows = [_row(0, 1, 10), _row(0, 2, 5), _row(1, 7, 1), _row(1, 8, 20)]
    merged = merge_by_time(rows)
    assert [(r.log_partition, r.log_offset) for r in merged] == [(1, 7), (0, 1), (0, 2),
                                                                 (1, 8)]
    assert merge_by_time([]) == []


def _locs(exc: ValidationError) -> list[tuple[Any, ...]]:
    return [tuple(e["loc"]) for e in exc.errors()]


def test_line_validation_names_the_field() -> None:
    ok = LineIn(camera_id="c", name="gate", a={"x": 0, "y": 0.5}, b={"x": 1, "y": 0.5})
    assert (ok.a.x, ok.b.x) == (0, 1)
    with pytest.raises(ValidationError) as exc:
        LineIn(camera_id="c", name="g", a={"x": 0.3, "y": 0.3}, b={"x": 0.3, "y": 0.3})
    assert _locs(exc.value) == [("b",)] and "the same point" in str(exc.value)
    with pytest.raises(ValidationError) as exc:
        LineIn(camera_id="c", name="g", a={"x": 1.5, "y": 0.3}, b={"x": 0.3, "y": 0.3})
    assert ("a", "x") in _locs(exc.value)
    with pytest.raises(ValidationError) as exc:
        LineIn(camera_id="", name="g", a={"x": 0, "y": 0}, b={"x": 1, "y": 1})
    assert _locs(exc.value) == [("camera_id",)]


def test_waiting_spends_nothing() -> None:
    rl = RateLimiter(rate_per_s=1, burst=2)
    assert rl.waiting("a", now=0) == 0
    rl.take("a", now=0)
    rl.take("a", now=0)
    assert rl.waiting("a", now=0) == pytest.approx(1.0)
    assert rl.waiting("a", now=0) == pytest.approx(1.0)  # asking twice costs nothing
    assert rl.waiting("a", now=1.0) == 0


def test_new_settings_fail_fast_naming_the_field() -> None:
    s = load_api_settings(env={})
    assert (s.anon_rate_limit_per_s, s.anon_rate_limit_burst, s.workers) == (2.0, 20, 1)
    for name, value in (("VIGIL_API_ANON_RATE_LIMIT_PER_S", "0"),
                        ("VIGIL_API_ANON_RATE_LIMIT_BURST", "0"),
                        ("VIGIL_API_WORKERS", "0"), ("VIGIL_API_DB_POOL_SIZE", "0"),
                        ("VIGIL_API_STREAM_REPLAY_MAX", "0")):
        with pytest.raises(ConfigError, match=name.removeprefix("VIGIL_API_")):
            load_api_settings(env={name: value})


class _NoProducer:
    def send(self, *a: Any, **k: Any) -> None:
        raise AssertionError("unexpected publish")

    def flush(self, timeout: float = 0) -> int:
        return 0


def test_requests_without_a_key_are_limited_per_address() -> None:
    """No database is reachable here: missing and malformed keys never need one, and
    once the address's budget is spent even a well-formed key is not looked up."""
    engine = create_engine("postgresql+psycopg://nobody@127.0.0.1:1/none")
    app = create_app(load_settings({}), engine, _NoProducer(),  # type: ignore[arg-type]
                     api_settings=load_api_settings(env={}, anon_rate_limit_per_s=0.5,
                                                    anon_rate_limit_burst=3),
                     read_schema="vigil", create_key_table=False)
    with TestClient(app, raise_server_exceptions=False) as c:
        codes = [c.get("/api/v1/alerts").status_code,
                 c.get("/api/v1/alerts", headers={"X-API-Key": "junk"}).status_code,
                 c.get("/api/v1/sites").status_code]
        assert codes == [401, 401, 401]
        # Well-formed key (would need a lookup): refused before the database.
        r = c.get("/api/v1/alerts", headers={"Authorization": "Bearer vgl_abc_secret"})
        assert r.status_code == 429
        body = r.json()
        assert set(body) == {"error", "message", "details"}
        assert body["error"] == "rate_limited" and body["details"]["retry_after_s"] > 0
        assert int(r.headers["retry-after"]) >= 1
        assert c.get("/health").status_code == 200  # public routes are not limited
