"""The access record end to end: API requests -> vigil.access -> the projector's chained
access_log -> GET /api/v1/audit/access and `vigil audit verify-access`, which detects an
edited, deleted, truncated or forged record."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from psycopg import sql
from starlette.testclient import TestClient

from projections.access_log import verify_access
from schemas.topics import topic_name
from tests.integration.test_api import build
from tools.testkit.api import World, make_world, seed_world
from vigil.settings import get_settings

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def world(stack: dict[str, str]) -> Iterator[tuple[World, dict[str, Any]]]:
    mp = pytest.MonkeyPatch()
    prefix = f"t{uuid.uuid4().hex[:10]}"
    mp.setenv("VIGIL_TOPIC_PREFIX", prefix)
    get_settings.cache_clear()
    try:
        with make_world(stack["KAFKA_BOOTSTRAP"], stack["DATABASE_URL"], prefix) as w:
            ids = seed_world(w)
            w.add_key("viewer_a", "viewer", ["site-a"])
            w.add_key("auditor", "auditor")
            w.add_key("auditor_a", "auditor", ["site-a"])
            w.add_key("admin", "admin")
            yield w, ids
    finally:
        mp.undo()
        get_settings.cache_clear()


def app(w: World) -> Any:
    return build(w, rate_limit_per_s=10_000, rate_limit_burst=10_000)


@pytest.fixture(scope="module")
def recorded(world: tuple[World, dict[str, Any]]) -> dict[str, Any]:
    """Requests of several kinds made once, then projected."""
    w, ids = world
    det = ids["detections"]["cam-a1"][0]
    event = ids["events"]["cam-a1"][0]
    zone = {"camera_id": "cam-a1", "name": "Secret room name",
            "polygon": [{"x": 0.1, "y": 0.1}, {"x": 0.5, "y": 0.1}, {"x": 0.5, "y": 0.5}]}
    with TestClient(app(w), raise_server_exceptions=False) as c:
        v = w.auth("viewer_a")
        answers = {
            "camera": c.get("/api/v1/cameras/cam-a1", headers=v),
            "event": c.get(f"/api/v1/events/{event}", headers=v),
            "search": c.get(f"/api/v1/search/appearance?detection_id={det}", headers=v),
            "other_site": c.get("/api/v1/cameras/cam-b1", headers=v),
            "anonymous": c.get("/api/v1/cameras/cam-a1"),
            "denied_write": c.put("/api/v1/zones/zone-q", json=zone, headers=v),
            "write": c.put("/api/v1/zones/zone-q", json=zone, headers=w.auth("admin")),
            "listing": c.get("/api/v1/cameras", headers=v),  # not personal: not recorded
            "stream": c.get("/api/v1/alerts/stream?max_events=1&timeout_s=0.2", headers=v),
        }
        assert answers["write"].status_code == 202, answers["write"].text
        assert answers["search"].status_code == 200, answers["search"].text
    w.project()
    return {"answers": answers, "det": det, "event": event}


def _records(w: World, **params: str) -> list[dict[str, Any]]:
    with TestClient(app(w), raise_server_exceptions=False) as c:
        resp = c.get("/api/v1/audit/access", params=params, headers=w.auth("auditor"))
    assert resp.status_code == 200, resp.text
    return resp.json()["items"]


def test_reads_of_personal_data_and_changes_are_recorded(
        world: tuple[World, dict[str, Any]], recorded: dict[str, Any]) -> None:
    w, _ = world
    rows = _records(w)
    by_op: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        by_op.setdefault(r["operation"], []).append(r)
    viewer_id = w.keys["viewer_a"].split("_")[1]
    cam = next(r for r in by_op["get_camera"] if r["resource_ids"] == ["camera_id=cam-a1"]
               and r["actor_id"] == viewer_id)
    assert (cam["method"], cam["route"], cam["status"], cam["outcome"], cam["role"],
            cam["actor_name"], cam["actor_kind"], cam["client_address"]) == (
        "GET", "/api/v1/cameras/{camera_id}", 200, "ok", "viewer", "viewer_a-name", "key",
        "testclient")
    assert any(r["resource_ids"] == ["camera_id=cam-b1"] and r["outcome"] == "not_found"
               for r in by_op["get_camera"])  # another site's camera: refused, on record
    assert any(r["actor_id"] == "anonymous" and r["outcome"] == "denied"
               for r in by_op["get_camera"])
    assert by_op["get_event"][0]["resource_ids"] == [f"event_id={recorded['event']}"]
    assert by_op["search_by_detection"][0]["resource_ids"] == \
        [f"detection_id={recorded['det']}"]
    assert by_op["alert_stream"][0]["outcome"] == "ok"  # the live view
    puts = sorted((r["role"], r["status"]) for r in by_op["put_zone"])
    assert puts == [("admin", 202), ("viewer", 403)]
    assert "list_cameras" not in by_op
    assert [r["seq"] for r in rows] == sorted((r["seq"] for r in rows), reverse=True)


def test_records_never_hold_the_personal_data(world: tuple[World, dict[str, Any]],
                                              recorded: dict[str, Any]) -> None:
    w, _ = world
    text = json.dumps(_records(w))
    assert "Secret room name" not in text  # no request bodies
    matches = recorded["answers"]["search"].json()["matches"]
    assert matches  # the answer held other people's detections ...
    for m in matches:
        if m["detection_id"] != recorded["det"]:  # ... none of which is on record
            assert m["detection_id"] not in text
    for answer in recorded["answers"].values():
        for url_field in ("snapshot_url", "frame_url", "url"):
            if answer.headers.get("content-type", "").startswith("application/json"):
                value = answer.json().get(url_field) if isinstance(answer.json(), dict) else None
                if value:
                    assert value not in text


def test_the_listing_filters_and_is_for_unscoped_auditors(
        world: tuple[World, dict[str, Any]], recorded: dict[str, Any]) -> None:
    w, _ = world
    denied = _records(w, outcome="denied")
    assert denied and {r["outcome"] for r in denied} == {"denied"}
    viewer_id = w.keys["viewer_a"].split("_")[1]
    mine = _records(w, actor_id=viewer_id, route="/api/v1/cameras/{camera_id}")
    assert mine and all(r["actor_id"] == viewer_id for r in mine)
    assert {r["operation"] for r in _records(w, resource_id="camera_id=cam-b1")} == \
        {"get_camera"}
    page = _records(w, limit="2")
    assert len(page) == 2
    with TestClient(app(w), raise_server_exceptions=False) as c:
        first = c.get("/api/v1/audit/access?limit=2", headers=w.auth("auditor")).json()
        second = c.get(f"/api/v1/audit/access?limit=2&cursor={first['next_cursor']}",
                       headers=w.auth("auditor")).json()
        assert second["items"][0]["seq"] < first["items"][-1]["seq"]
        for label, status in (("viewer_a", 403), ("auditor_a", 403)):
            resp = c.get("/api/v1/audit/access", headers=w.auth(label))
            assert resp.status_code == status and resp.json()["message"], resp.text
        bad = c.get("/api/v1/audit/access?outcome=maybe", headers=w.auth("auditor"))
        assert bad.status_code == 422


def test_an_intact_record_verifies(world: tuple[World, dict[str, Any]],
                                   recorded: dict[str, Any]) -> None:
    w, _ = world
    result = verify_access(w.dsn, w.schema, topic_name("access"))
    assert result.ok, result.problems
    assert result.rows == 8 and result.log_records >= result.rows
    env = {**os.environ, "VIGIL_PROJECTOR_SCHEMA": w.schema}
    cli = subprocess.run([sys.executable, "-m", "vigil_cli", "audit", "verify-access"],
                         env=env, capture_output=True, text=True, timeout=120)
    assert cli.returncode == 0, cli.stdout + cli.stderr
    assert "intact" in cli.stdout


def test_the_table_is_append_only(world: tuple[World, dict[str, Any]],
                                  recorded: dict[str, Any]) -> None:
    w, _ = world
    with psycopg.connect(w.dsn) as conn:
        for stmt in ("UPDATE {}.access_log SET outcome = 'ok'", "DELETE FROM {}.access_log",
                     "TRUNCATE {}.access_log"):
            with pytest.raises(psycopg.errors.RaiseException, match="append-only"), \
                    conn.transaction():
                conn.execute(sql.SQL(stmt).format(sql.Identifier(w.schema)))


def _tampered(w: World, *statements: str) -> list[str]:
    """verify_access's problems after `statements` (run with the trigger disabled, in a
    transaction that is rolled back: every case starts from the intact record)."""
    with psycopg.connect(w.dsn) as conn:
        conn.execute(sql.SQL("SET search_path TO {}").format(sql.Identifier(w.schema)))
        conn.execute("ALTER TABLE access_log DISABLE TRIGGER access_log_append_only")
        for s in statements:
            conn.execute(s)
        result = verify_access(w.dsn, w.schema, topic_name("access"), conn=conn)
        conn.rollback()
    assert not result.ok
    return result.problems


def test_tampering_is_detected(world: tuple[World, dict[str, Any]],
                               recorded: dict[str, Any]) -> None:
    w, _ = world
    # an edited field (someone hides where a read came from)
    problems = _tampered(w, "UPDATE access_log SET client_address = '10.9.9.9' WHERE seq = 3")
    assert any("seq 3: content edited" in p for p in problems), problems
    # an edit with the row's own hashes recomputed: the next link breaks
    problems = _tampered(
        w, "UPDATE access_log SET outcome = 'ok', content_hash = 'x', "
           "hash = encode(sha256(convert_to(prev_hash || 'x', 'UTF8')), 'hex') WHERE seq = 2")
    assert any("seq 3: link broken" in p for p in problems), problems
    # a deleted record in the middle
    problems = _tampered(w, "DELETE FROM access_log WHERE seq = 4")
    assert any("seq 4..4 missing" in p for p in problems), problems
    # the newest records deleted: the chain is whole, the log says otherwise
    problems = _tampered(w, "DELETE FROM access_log WHERE seq > 5")
    assert any("is on the log but not in the access record" in p for p in problems), problems
    # a forged record appended with a valid link: not on the log
    problems = _tampered(w, """
        INSERT INTO access_log SELECT seq + 1, 'forged-event', occurred_at, actor_kind,
            actor_id, actor_name, role, method, route, operation, resource_ids,
            client_address, status, outcome, content_hash, hash,
            encode(sha256(convert_to(hash || content_hash, 'UTF8')), 'hex'),
            log_partition, log_offset + 1
        FROM access_log ORDER BY seq DESC LIMIT 1""")
    assert any("forged-event" in p and "not on the log" in p for p in problems), problems


def test_the_cli_reports_tampering_with_exit_status_1(world: tuple[World, dict[str, Any]],
                                                      recorded: dict[str, Any]) -> None:
    w, _ = world
    with psycopg.connect(w.dsn) as conn:  # committed this time: the last test of the module
        conn.execute(sql.SQL("SET search_path TO {}").format(sql.Identifier(w.schema)))
        conn.execute("ALTER TABLE access_log DISABLE TRIGGER access_log_append_only")
        conn.execute("DELETE FROM access_log WHERE seq = 2")
    env = {**os.environ, "VIGIL_PROJECTOR_SCHEMA": w.schema}
    cli = subprocess.run([sys.executable, "-m", "vigil_cli", "audit", "verify-access",
                          "--json"], env=env, capture_output=True, text=True, timeout=120)
    assert cli.returncode == 1, cli.stdout + cli.stderr
    report = json.loads(cli.stdout)
    assert report["ok"] is False and any("seq 2..2 missing" in p for p in report["problems"])
