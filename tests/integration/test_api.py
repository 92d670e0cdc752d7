"""The API against the real stack: PostgreSQL read models filled by the real projector
from events produced to Kafka, commands checked on the real commands topic."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from confluent_kafka import Consumer, TopicPartition
from starlette.testclient import TestClient

from api.app import create_app
from api.console.pages import is_console_route
from api.settings import load_api_settings
from schemas.codec import default_codec
from schemas.events import AlertAcknowledged, AlertRaised, CommandRejected
from tools.testkit.api import T0, World, make_world, seed_world, serve, wait_for
from vigil.settings import get_settings

pytestmark = pytest.mark.integration


def _clear() -> None:
    from schemas.codec import default_codec as dc

    get_settings.cache_clear()
    dc.cache_clear()


@pytest.fixture(scope="module")
def world(stack: dict[str, str]) -> Iterator[tuple[World, dict[str, Any]]]:
    mp = pytest.MonkeyPatch()
    prefix = f"t{uuid.uuid4().hex[:10]}"
    mp.setenv("VIGIL_TOPIC_PREFIX", prefix)
    _clear()
    try:
        with make_world(stack["KAFKA_BOOTSTRAP"], stack["DATABASE_URL"], prefix) as w:
            ids = seed_world(w)
            ids["routes"] = seed_routes(w)
            w.add_key("viewer_a", "viewer", ["site-a"])
            w.add_key("operator_a", "operator", ["site-a"])
            w.add_key("viewer_b", "viewer", ["site-b"])
            w.add_key("auditor", "auditor")
            w.add_key("admin", "admin")
            w.add_key("admin_b", "admin", ["site-b"])
            w.add_key("operator", "operator")
            yield w, ids
    finally:
        mp.undo()
        _clear()


def seed_routes(w: World) -> dict[str, Any]:
    """Notification routes of every visibility: one per site, one for all sites, one of
    no site that names only a site-b camera, and one deleted again."""
    from schemas.events import EntityDeleted, RouteConfigured

    def route(route_id: str, **kw: Any) -> None:
        w.send("config", f"route/{route_id}", RouteConfigured.create(
            producer="seed", occurred_at=T0, route_id=route_id, **kw))

    route("route-a", site_id="site-a", channels=["mail"], recipients=["ops-a@x.example"],
          severities=["critical"], levels=[0, 1], quiet_start="22:00", quiet_end="06:00",
          timezone="Europe/Berlin")
    route("route-b", site_id="site-b", channels=["mail"], recipients=["ops-b@x.example"])
    route("route-all", channels=["ha"])
    route("route-bcam", cameras=["cam-b1"], channels=["sms"], recipients=["+4917000000"])
    route("route-gone", site_id="site-a", channels=["mail"])
    w.send("config", "route/route-gone", EntityDeleted.create(
        producer="seed", occurred_at=T0 + timedelta(seconds=1), entity_kind="route",
        entity_id="route-gone"))
    w.project()
    return {"a": "route-a", "b": "route-b"}


def _store() -> Any:
    from minio import Minio

    s = get_settings()
    return Minio(s.s3_endpoint.split("://", 1)[-1], access_key=s.s3_access_key,
                 secret_key=s.s3_secret_key.get_secret_value(),
                 secure=s.s3_endpoint.startswith("https"), region=s.s3_region)


def build(w: World, **api_overrides: Any) -> Any:
    return create_app(get_settings(), w.engine, w.producer, read_schema=w.schema,
                      api_settings=load_api_settings(
                          env={}, keys_schema=w.keys_schema, **api_overrides),
                      object_store=_store())


@pytest.fixture(scope="module")
def client(world: tuple[World, dict[str, Any]]) -> Iterator[TestClient]:
    w, _ = world
    with TestClient(build(w, rate_limit_per_s=10_000, rate_limit_burst=10_000,
                          anon_rate_limit_burst=10_000),
                    raise_server_exceptions=False) as c:
        yield c


def _error_shape(resp: httpx.Response, status: int) -> dict[str, Any]:
    assert resp.status_code == status, resp.text
    assert resp.headers["content-type"].startswith("application/json")
    body = resp.json()
    assert set(body) == {"error", "message", "details"}, body
    return body


def _consume(topic: str, n: int, timeout: float = 20.0,
             until: Any = None) -> list[Any]:
    """Read up to `n` messages from the start of `topic` (or, with `until`, read until a
    message satisfies it: earlier tests of this module may have written there too)."""
    s = get_settings()
    c = Consumer({"bootstrap.servers": s.kafka_bootstrap, "group.id": f"t-{uuid.uuid4()}",
                  "enable.auto.commit": False})
    try:
        md = c.list_topics(topic, timeout=10)
        c.assign([TopicPartition(topic, p, 0) for p in md.topics[topic].partitions])
        out: list[Any] = []
        deadline = time.monotonic() + timeout
        while len(out) < n and time.monotonic() < deadline:
            msg = c.poll(0.5)
            if msg is not None and not msg.error():
                out.append(msg)
                if until is not None and until(msg):
                    break
        return out
    finally:
        c.close()


# --------------------------------------------------------------------------- health & docs
def test_health_is_static_and_ready_reports_each_dependency(client: TestClient) -> None:
    assert client.get("/health").json() == {"status": "ok"}
    ready = client.get("/health/ready")
    body = ready.json()
    assert set(body["checks"]) == {"postgres", "kafka", "object_store"}
    assert body["checks"]["postgres"]["status"] == "ok"
    assert body["checks"]["kafka"]["status"] == "ok"
    assert ready.status_code == (200 if body["status"] == "ok" else 503)
    deep = client.get("/health/deep").json()
    assert deep["checks"]["read_model"]["status"] == "ok", deep
    assert deep["checks"]["triton"]["status"] in ("fail", "skipped")  # not wired here


def test_metrics_exposes_vigil_api_series(client: TestClient) -> None:
    client.get("/health")
    text = client.get("/metrics").text
    assert "vigil_api_requests_total" in text
    assert 'route="/health"' in text


def test_openapi_matches_routes(client: TestClient) -> None:
    spec = client.get("/openapi.json").json()
    assert spec["openapi"].startswith("3.1")
    documented = {(path, m.upper()) for path, ops in spec["paths"].items() for m in ops}
    served = set()
    for route in client.app.routes:  # type: ignore[attr-defined]
        if is_console_route(route):  # HTML pages over this API, not part of it
            continue
        for m in route.methods - {"HEAD"}:
            served.add((route.path, m))
    assert documented == served


# --------------------------------------------------------------------------- auth
def test_missing_and_bad_keys_are_401_json(client: TestClient) -> None:
    body = _error_shape(client.get("/api/v1/alerts"), 401)
    assert body["error"] == "unauthorized"
    _error_shape(client.get("/api/v1/alerts", headers={"Authorization": "Bearer nope"}), 401)
    _error_shape(client.get("/api/v1/alerts", headers={"X-API-Key": "vgl_abc_def"}), 401)


#: the matrix's export (cam-a1's seeded segment; its id is a function of the range)
EXPORT = {"camera_id": "cam-a1", "from": "2026-01-15T12:00:00+00:00",
          "to": "2026-01-15T12:00:10+00:00"}


def _export_id() -> str:
    from api.recordings import export_id_for

    return export_id_for(get_settings().topic_prefix, EXPORT["camera_id"],
                         datetime.fromisoformat(EXPORT["from"]),
                         datetime.fromisoformat(EXPORT["to"]))


#: What a key of site b (admin_b, and viewer_b where reading is enough) gets from a matrix
#: row about site a: HIDDEN 404 (or 422 naming a site-a camera in the body, like an id
#: that does not exist); FILTERED 2xx with nothing of site a in the answer; EVERY_SITE
#: 403 (resources that span sites need a key for every site).
HIDDEN, FILTERED, EVERY_SITE = "hidden", "filtered", "every-site"
#: what a site-a resource leaves in an answer
SITE_A_MARKS = ("site-a", "cam-a1", "cam-a2")


def _matrix(ids: dict[str, Any]) -> list[tuple[str, str, dict[str, Any], set[str], str]]:
    """(method, path, kwargs, roles allowed, what a site-b key gets) for every protected
    endpoint; the paths name site-a resources."""
    alert = ids["alerts"]["cam-a1"][0]["alert_id"]
    event = ids["events"]["cam-a1"][0]
    det = ids["detections"]["cam-a1"][0]
    read = {"viewer_a", "operator_a", "auditor", "admin", "operator"}
    act = {"operator_a", "admin", "operator"}
    zone = {"camera_id": "cam-a1", "name": "z",
            "polygon": [{"x": 0.1, "y": 0.1}, {"x": 0.5, "y": 0.1}, {"x": 0.5, "y": 0.5}]}
    rule = {"camera_id": "cam-a1", "rule_type": "loitering", "zone_id": "zone-a1"}
    line = {"camera_id": "cam-a1", "name": "l", "a": {"x": 0, "y": 0}, "b": {"x": 1, "y": 1}}
    image = {"files": {"image": ("a.jpg", b"\xff\xd8 a face")}}
    return [
        ("GET", "/api/v1/alerts", {}, read, FILTERED),
        ("GET", f"/api/v1/alerts/{alert}", {}, read, HIDDEN),
        ("POST", f"/api/v1/alerts/{alert}/ack", {"json": {}}, act, HIDDEN),
        ("POST", f"/api/v1/alerts/{alert}/resolve", {"json": {}}, act, HIDDEN),
        ("POST", f"/api/v1/alerts/{alert}/assign", {"json": {"assignee": "olga"}}, act, HIDDEN),
        ("POST", f"/api/v1/alerts/{alert}/comment", {"json": {"text": "seen"}}, act, HIDDEN),
        ("GET", f"/api/v1/commands/{ids['command']}", {}, read, HIDDEN),
        ("GET", "/api/v1/cameras", {}, read, FILTERED),
        ("GET", "/api/v1/cameras/cam-a1", {}, read, HIDDEN),
        ("GET", "/api/v1/sites", {}, read, FILTERED),
        ("GET", "/api/v1/events", {}, read, FILTERED),
        ("GET", f"/api/v1/events/{event}", {}, read, HIDDEN),
        ("GET", f"/api/v1/evidence/{ids['evidence']['cam-a1'][0]}", {}, read, HIDDEN),
        ("GET", "/api/v1/cameras/cam-a1/recordings?from=2026-01-15T12:00:00Z"
                "&to=2026-01-15T12:01:00Z", {}, read, HIDDEN),
        ("POST", "/api/v1/exports", {"json": EXPORT}, act, HIDDEN),
        ("GET", f"/api/v1/exports/{_export_id()}", {}, read, HIDDEN),
        ("GET", f"/api/v1/search/appearance?detection_id={det}", {}, read, HIDDEN),
        ("POST", "/api/v1/search/appearance?k=50", image, read, FILTERED),
        ("GET", "/api/v1/detections", {}, read, FILTERED),
        ("GET", "/api/v1/system", {}, read, FILTERED),
        ("GET", "/api/v1/zones", {}, read, FILTERED),
        ("GET", "/api/v1/lines", {}, read, FILTERED),
        ("GET", "/api/v1/rules", {}, read, FILTERED),
        ("PUT", "/api/v1/zones/zone-x", {"json": zone}, {"admin"}, HIDDEN),
        ("PUT", "/api/v1/lines/line-x", {"json": line}, {"admin"}, HIDDEN),
        ("PUT", "/api/v1/rules/rule-x", {"json": rule}, {"admin"}, HIDDEN),
        ("DELETE", "/api/v1/zones/zone-del", {}, {"admin"}, HIDDEN),
        ("DELETE", "/api/v1/lines/line-del", {}, {"admin"}, HIDDEN),
        ("DELETE", "/api/v1/rules/rule-del", {}, {"admin"}, HIDDEN),
        ("GET", "/api/v1/routes", {}, read, FILTERED),
        ("GET", f"/api/v1/routes/{ids['routes']['a']}", {}, read, HIDDEN),
        ("PUT", "/api/v1/routes/route-x", {"json": {"channels": ["mail"]}}, {"admin"},
         EVERY_SITE),
        ("DELETE", "/api/v1/routes/route-del", {}, {"admin"}, EVERY_SITE),
        ("GET", f"/api/v1/notifications?alert_id={alert}", {}, read, HIDDEN),
        ("POST", f"/api/v1/notifications/{ids['notifications_failed']['cam-a1']}/retry", {},
         act, HIDDEN),
        ("GET", "/api/v1/reports/daily?date=2026-01-15", {}, read, FILTERED),
        ("GET", "/api/v1/audit/commands", {}, {"auditor", "admin"}, FILTERED),
        ("GET", "/api/v1/audit/access", {}, {"auditor", "admin"}, EVERY_SITE),
        ("GET", "/api/v1/audit/access?outcome=denied&route=/api/v1/cameras/{camera_id}",
         {}, {"auditor", "admin"}, EVERY_SITE),
        ("GET", "/api/v1/alerts/stream?max_events=1&timeout_s=0.2", {}, read, FILTERED),
    ]


#: Console pages (session cookie, not keys), with what a site-b user gets; every role may
#: read them, and without a session each sends the browser to the login page.
def _console_matrix(ids: dict[str, Any]) -> list[tuple[str, str]]:
    alert = ids["alerts"]["cam-a1"][0]["alert_id"]
    return [
        ("/console/", FILTERED),
        (f"/console/alerts/{alert}", HIDDEN),
        (f"/console/alerts/{alert}/thumbnail", HIDDEN),
        ("/console/cameras", FILTERED),
        ("/console/cameras/cam-a1", HIDDEN),
        ("/console/cameras/cam-a1/frame", HIDDEN),
        ("/console/system", FILTERED),
        ("/console/explore", FILTERED),
        (f"/console/detections/{ids['person']}/thumbnail", HIDDEN),
        ("/console/no-such-page", HIDDEN),  # the catch-all: 404 for everyone signed in
    ]


#: Routes anyone may call: health and metrics (no personal data), the API document, the
#: console's entry redirects, login form, logout (without a session it only redirects)
#: and its static files.
PUBLIC = {("GET", "/health"), ("GET", "/health/ready"), ("GET", "/health/deep"),
          ("GET", "/metrics"), ("GET", "/openapi.json"), ("GET", "/"), ("GET", "/console"),
          ("GET", "/console/login"), ("POST", "/console/login"), ("POST", "/console/logout"),
          ("GET", "/console/static/{path}")}

CONSOLE_USERS = {"viewer_a": ("viewer", ["site-a"]), "operator_a": ("operator", ["site-a"]),
                 "auditor": ("auditor", None), "admin": ("admin", None),
                 "operator": ("operator", None), "viewer_b": ("viewer", ["site-b"]),
                 "admin_b": ("admin", ["site-b"])}


@pytest.fixture(scope="module")
def matrix(world: tuple[World, dict[str, Any]]
           ) -> Iterator[tuple[TestClient, dict[str, Any], dict[str, str]]]:
    """A client with an image embedder, the ids (plus a command published through it, so
    the command-status route has one to find) and a console session per role."""
    from api.users import UserStore
    from tools.testkit.api import unit_vector

    w, ids = world

    async def fake_embedder(data: bytes) -> list[float]:
        """Stands in for Triton, so an uploaded image reaches pgvector (the matrix checks
        who may search and what comes back, not the model)."""
        return unit_vector(len(data), w.dim)

    app = create_app(get_settings(), w.engine, w.producer, read_schema=w.schema,
                     api_settings=load_api_settings(
                         env={}, keys_schema=w.keys_schema, rate_limit_per_s=10_000,
                         rate_limit_burst=10_000, anon_rate_limit_burst=10_000),
                     object_store=_store(), embed_image=fake_embedder)
    from schemas.events import FrameCaptured

    # a stored frame of cam-a1: the camera page's picture has something to point at
    w.send("frames", "cam-a1", FrameCaptured.create(
        producer="t", occurred_at=T0, edge_id="edge-a", camera_id="cam-a1", sequence=1,
        width=640, height=480, motion_score=0.0, object_ref="frames/cam-a1/1.jpg"))
    # a stored person of cam-a1 (frame and box, no embedding: the search tests count
    # the world's vectors): Explore's cropped thumbnail has a picture to cut
    from schemas.events import Detection, FrameAnalyzed
    from tests.integration.test_console import PERSON_BOX, store_frame_of

    person, now = f"det-m-{uuid.uuid4().hex[:6]}", datetime.now(UTC)
    frame = store_frame_of(w, "cam-a1", "edge-a", now, people=(PERSON_BOX,))
    w.send("detections", "cam-a1", FrameAnalyzed.create(
        producer="t", occurred_at=now, cause=frame, edge_id="edge-a", camera_id="cam-a1",
        frame_sequence=1, width=640, height=360, skipped=False, detector_model="m",
        detector_version="1", inference_ms=20.0,
        detections=[Detection(detection_id=person, label="person", score=0.9,
                              x1=PERSON_BOX[0], y1=PERSON_BOX[1], x2=PERSON_BOX[2],
                              y2=PERSON_BOX[3], has_embedding=False)]))
    w.project()
    users = UserStore(w.engine, w.keys_schema)
    sessions = {}
    for label, (role, sites) in CONSOLE_USERS.items():
        name = f"m-{label}-{uuid.uuid4().hex[:4]}"
        users.create(name, "matrix-password-1", role, sites)
        token = users.login(name, "matrix-password-1").token
        assert token
        sessions[label] = token
    with TestClient(app, raise_server_exceptions=False) as c:
        alert = ids["alerts"]["cam-a1"][0]["alert_id"]
        r = c.post(f"/api/v1/alerts/{alert}/comment", json={"text": "matrix"},
                   headers=w.auth("admin"))
        assert r.status_code == 202, r.text
        yield c, {**ids, "command": r.json()["command_id"], "person": person}, sessions


def _template_of(method: str, url: str, templates: set[tuple[str, str]]
                 ) -> tuple[str, str] | None:
    """The route `url` reaches: of the templates it fits, the most literal one (as the
    router does: /alerts/stream before /alerts/{alert_id})."""
    parts = url.split("?")[0].split("/")
    fits = []
    for m, templ in templates:
        tparts = templ.split("/")
        if m == method and len(parts) == len(tparts) and all(
                t.startswith("{") or t == p for p, t in zip(parts, tparts, strict=True)):
            fits.append((sum(not t.startswith("{") for t in tparts), templ))
    return (method, max(fits)[1]) if fits else None


def _served(app: Any) -> set[tuple[str, str]]:
    """(method, path template) of every route the app serves, console and mounts too."""
    from starlette.routing import Mount, Route

    out = set()
    for route in app.routes:
        if isinstance(route, Mount):
            out.add(("GET", route.path + "/{path}"))
        elif isinstance(route, Route):
            out |= {(m, route.path) for m in (route.methods or set()) - {"HEAD"}}
        else:
            raise AssertionError(f"a route the matrix does not know how to read: {route!r}")
    return out


def test_the_matrix_covers_every_route(matrix: tuple[TestClient, dict[str, Any],
                                                     dict[str, str]]) -> None:
    """Every route of the app (the JSON API, the console's pages and pictures, its static
    files) is in the role x endpoint x site matrix or deliberately public: a new route
    that is in neither fails here until someone decides who may call it."""
    client, ids, _ = matrix
    served = _served(client.app)
    covered = {_template_of(m, url, served) for m, url, *_ in _matrix(ids)}
    covered |= {_template_of("GET", url, served) for url, _ in _console_matrix(ids)}
    assert None not in covered, "a matrix row matches no route"
    missing = served - covered - PUBLIC
    assert not missing, f"routes missing from the matrix: {sorted(missing)}"
    assert served >= PUBLIC, sorted(PUBLIC - served)
    # and the public ones really take no credential
    for method, path in sorted(PUBLIC):
        if method == "GET":
            url = path.replace("{path}", "console.js")
            assert client.get(url, follow_redirects=False).status_code not in (401, 403), url


def _leaks_site_a(text: str, ids: dict[str, Any]) -> list[str]:
    marks = [*SITE_A_MARKS, ids["alerts"]["cam-a1"][0]["alert_id"]]
    return [m for m in marks if m in text]


def test_role_matrix(matrix: tuple[TestClient, dict[str, Any], dict[str, str]],
                     world: tuple[World, dict[str, Any]]) -> None:
    client, ids, _ = matrix
    w, _ = world
    roles = ["viewer_a", "operator_a", "auditor", "admin", "operator"]
    failures = []
    for method, path, kwargs, allowed, _site in _matrix(ids):
        _error_shape(client.request(method, path, **kwargs), 401)
        for role in roles:
            resp = client.request(method, path, headers=w.auth(role), **kwargs)
            ok = resp.status_code < 400
            if ok != (role in allowed):
                failures.append((method, path, role, resp.status_code, resp.text[:200]))
            if not ok:
                body = resp.json()
                if set(body) != {"error", "message", "details"} or resp.status_code != 403:
                    failures.append((method, path, role, resp.status_code, "shape"))
    assert not failures, failures


def test_site_matrix(matrix: tuple[TestClient, dict[str, Any], dict[str, str]],
                     world: tuple[World, dict[str, Any]]) -> None:
    """The same rows with keys of site b: a site-a resource is as absent as a missing one,
    a list holds nothing of site a, and what spans sites needs a key for every site."""
    client, ids, _ = matrix
    w, _ = world
    failures = []
    for method, path, kwargs, allowed, site in _matrix(ids):
        labels = ["admin_b"] + (["viewer_b"] if "viewer_a" in allowed else [])
        for label in labels:
            resp = client.request(method, path, headers=w.auth(label), **kwargs)
            got = resp.status_code
            if site == HIDDEN and got not in (404, 422):
                failures.append((method, path, label, got, resp.text[:200]))
            elif site == HIDDEN and set(resp.json()) != {"error", "message", "details"}:
                failures.append((method, path, label, got, "shape"))
            elif site == FILTERED and (got >= 400 or _leaks_site_a(resp.text, ids)):
                failures.append((method, path, label, got, _leaks_site_a(resp.text, ids)
                                 or resp.text[:200]))
            elif site == EVERY_SITE and got != 403:
                failures.append((method, path, label, got, resp.text[:200]))
    assert not failures, failures


def test_console_matrix(matrix: tuple[TestClient, dict[str, Any], dict[str, str]]) -> None:
    """Console pages: no session -> the login page; every role of site a (or of every
    site) sees site a's pages and pictures; a site-b user gets the same 404 as for a
    missing id, and lists without site a."""
    client, ids, sessions = matrix
    failures = []
    for path, site in _console_matrix(ids):
        anon = client.get(path, follow_redirects=False)
        if path.endswith(("/thumbnail", "/frame")):
            if anon.status_code not in (401, 303):  # a picture: no page to redirect to
                failures.append((path, "anonymous", anon.status_code))
        elif not (anon.status_code == 303
                  and anon.headers["location"].startswith("/console/login")):
            failures.append((path, "anonymous", anon.status_code))
        for label, token in sessions.items():
            resp = client.get(path, headers={"Cookie": f"vigil_session={token}"},
                              follow_redirects=False)
            got = resp.status_code
            site_b = label.endswith("_b")
            if path == "/console/no-such-page":
                if got != 404:
                    failures.append((path, label, got))
            elif not site_b and got not in ((200, 303, 307) if path.endswith(
                    ("/thumbnail", "/frame")) else (200,)):  # a picture, or its redirect
                failures.append((path, label, got, resp.text[:200]))
            elif site_b and site == HIDDEN and got != 404:
                failures.append((path, label, got))
            elif site_b and site == FILTERED and (got != 200 or _leaks_site_a(resp.text, ids)):
                failures.append((path, label, got, _leaks_site_a(resp.text, ids)))
    assert not failures, failures


def test_other_sites_resources_are_invisible(client: TestClient,
                                             world: tuple[World, dict[str, Any]]) -> None:
    w, ids = world
    h = w.auth("viewer_a")
    b_alert = ids["alerts"]["cam-b1"][0]["alert_id"]
    b_event = ids["events"]["cam-b1"][0]
    for path in (f"/api/v1/alerts/{b_alert}", "/api/v1/cameras/cam-b1",
                 f"/api/v1/events/{b_event}",
                 f"/api/v1/search/appearance?detection_id={ids['detections']['cam-b1'][0]}"):
        _error_shape(client.get(path, headers=h), 404)
    op = w.auth("operator_a")
    _error_shape(client.post(f"/api/v1/alerts/{b_alert}/ack", json={}, headers=op), 404)
    # Lists only show the key's sites.
    cams = client.get("/api/v1/cameras", headers=h).json()["items"]
    assert {c["site_id"] for c in cams} == {"site-a"}
    alerts = client.get("/api/v1/alerts", headers=h).json()["items"]
    assert alerts and {a["site_id"] for a in alerts} == {"site-a"}
    events = client.get("/api/v1/events?limit=500", headers=h).json()["items"]
    assert events and {e["camera_id"] for e in events} <= {"cam-a1", "cam-a2"}
    sites = client.get("/api/v1/sites", headers=h).json()["items"]
    assert [s["site_id"] for s in sites] == ["site-a"]
    det = ids["detections"]["cam-a1"][0]
    found = client.get(f"/api/v1/search/appearance?detection_id={det}&k=50", headers=h).json()
    assert found["matches"] and {m["site_id"] for m in found["matches"]} == {"site-a"}
    # A site-b admin cannot configure a site-a camera.
    zone = {"camera_id": "cam-a1", "name": "z",
            "polygon": [{"x": 0.1, "y": 0.1}, {"x": 0.5, "y": 0.1}, {"x": 0.5, "y": 0.5}]}
    _error_shape(client.put("/api/v1/zones/z9", json=zone, headers=w.auth("admin_b")), 422)
    # The stream is scoped too: viewer_b's hub subscriber never sees site-a rows.
    assert client.get("/api/v1/alerts", headers=w.auth("viewer_b")).json()["items"][0][
        "site_id"] == "site-b"


# --------------------------------------------------------------------------- reads
def test_events_keyset_pagination(client: TestClient, world: tuple[World, dict[str, Any]]
                                  ) -> None:
    w, ids = world
    h = w.auth("auditor")
    seen: list[str] = []
    cursor = None
    pages = 0
    while True:
        q = "/api/v1/events?limit=3&camera=cam-a1" + (f"&cursor={cursor}" if cursor else "")
        page = client.get(q, headers=h).json()
        seen += [e["event_id"] for e in page["items"]]
        pages += 1
        cursor = page["next_cursor"]
        if not cursor:
            break
    assert sorted(seen) == sorted(ids["events"]["cam-a1"])
    assert len(seen) == len(set(seen)) and pages == 3
    typed = client.get("/api/v1/events?type=RuleTriggered", headers=h).json()["items"]
    assert {e["event_type"] for e in typed} == {"RuleTriggered"} and len(typed) == 3
    ranged = client.get("/api/v1/events", headers=h, params={
        "since": T0.isoformat(), "until": (T0 + timedelta(seconds=2)).isoformat(),
        "camera": "cam-a1"}).json()["items"]
    assert len(ranged) == 2
    _error_shape(client.get("/api/v1/events?cursor=garbage!!", headers=h), 400)
    _error_shape(client.get("/api/v1/events?limit=0", headers=h), 422)
    _error_shape(client.get("/api/v1/events?since=notadate", headers=h), 422)
    _error_shape(client.get("/api/v1/events?bogus=1", headers=h), 400)
    big = client.get("/api/v1/events?limit=100000", headers=h)
    assert big.status_code == 200  # capped, not refused


def test_event_detail_has_presigned_snapshot(client: TestClient,
                                              world: tuple[World, dict[str, Any]]) -> None:
    w, ids = world
    trig = ids["events"]["cam-a1"][-1]
    body = client.get(f"/api/v1/events/{trig}", headers=w.auth("viewer_a")).json()
    assert body["event_type"] == "RuleTriggered"
    assert body["snapshot_url"] and "X-Amz-Expires=300" in body["snapshot_url"]
    assert "snap.jpg" in body["snapshot_url"]


def test_alert_list_filters_and_detail(client: TestClient,
                                       world: tuple[World, dict[str, Any]]) -> None:
    w, ids = world
    h = w.auth("auditor")
    all_alerts = client.get("/api/v1/alerts", headers=h).json()["items"]
    assert len(all_alerts) == 3
    assert client.get("/api/v1/alerts?state=RESOLVED", headers=h).json()["items"] == []
    cam = client.get("/api/v1/alerts?camera=cam-b1&severity=warning", headers=h).json()
    assert [a["camera_id"] for a in cam["items"]] == ["cam-b1"]
    _error_shape(client.get("/api/v1/alerts?state=BOGUS", headers=h), 422)
    alert = ids["alerts"]["cam-a1"][0]["alert_id"]
    detail = client.get(f"/api/v1/alerts/{alert}", headers=h).json()
    assert detail["history"][0]["event_type"] == "AlertRaised"
    assert "snapshot_ref" not in detail
    cam_detail = client.get("/api/v1/cameras/cam-a1", headers=h).json()
    assert [z["zone_id"] for z in cam_detail["zones"]] == ["zone-a1"]
    assert [r["rule_id"] for r in cam_detail["rules"]] == ["rule-a1"]
    # lines too (other tests may add lines to this camera through the API meanwhile)
    assert "line-a1" in [ln["line_id"] for ln in cam_detail["lines"]]
    assert {ln["camera_id"] for ln in cam_detail["lines"]} == {"cam-a1"}
    assert cam_detail["lines"][0]["a"] == {"x": 0.0, "y": 0.5}
    report = client.get("/api/v1/reports/daily?date=2026-01-15", headers=h).json()
    assert report["alerts_raised"] == 3
    # entries per zone, UTC hour and class (seed_world: 6 people and a car per camera)
    day = {c["camera_id"]: c for c in report["cameras"]}
    assert day["cam-a1"]["zone_entries"] == [
        {"zone_id": "zone-a1", "hour": T0.hour, "label": "car", "entries": 1},
        {"zone_id": "zone-a1", "hour": T0.hour, "label": "person", "entries": 6}]


def test_search_caps_k_and_never_returns_vectors(client: TestClient,
                                                 world: tuple[World, dict[str, Any]]) -> None:
    w, ids = world
    det = ids["detections"]["cam-a1"][0]
    resp = client.get(f"/api/v1/search/appearance?detection_id={det}&k=100000",
                      headers=w.auth("auditor"))
    body = resp.json()
    assert resp.status_code == 200
    assert len(body["matches"]) == sum(len(v) for v in ids["detections"].values()) - 1
    assert "embedding" not in json.dumps(body) and "vector" not in json.dumps(body)
    dists = [m["distance"] for m in body["matches"]]
    assert dists == sorted(dists)
    filtered = client.get(f"/api/v1/search/appearance?detection_id={det}&camera=cam-b1",
                          headers=w.auth("auditor")).json()
    assert {m["camera_id"] for m in filtered["matches"]} == {"cam-b1"}
    # No Triton wired into this app: image search is a 503 JSON, not a hang.
    up = client.post("/api/v1/search/appearance", files={"image": ("a.jpg", b"\xff\xd8x")},
                     headers=w.auth("auditor"))
    _error_shape(up, 503)


# --------------------------------------------------------------------------- commands
def test_ack_publishes_command_keyed_by_incident(client: TestClient,
                                                 world: tuple[World, dict[str, Any]]) -> None:
    w, ids = world
    alert = ids["alerts"]["cam-a2"][0]
    resp = client.post(f"/api/v1/alerts/{alert['alert_id']}/ack", json={"note": "on it"},
                       headers=w.auth("operator_a"))
    assert resp.status_code == 202, resp.text
    command_id = resp.json()["command_id"]
    codec = default_codec()

    def is_mine(m: Any) -> bool:
        return codec.decode(m.value()).event_id == command_id

    msgs = _consume(f"{w.prefix}.commands", 10_000, until=is_mine)
    mine = [m for m in msgs if is_mine(m)]
    assert mine, "command not on the commands topic"
    cmd = codec.decode(mine[0].value())
    assert mine[0].key().decode() == alert["incident_key"]
    assert cmd.event_type == "AcknowledgeAlert" and cmd.operator == "operator_a-name"
    assert cmd.alert_id == alert["alert_id"] and cmd.note == "on it"
    pending = client.get(f"/api/v1/commands/{command_id}", headers=w.auth("operator_a"))
    assert pending.json()["status"] in ("pending", "applied")

    # The alerts agent's answer (simulated here: the agent is not this component) goes
    # through the real projector; the API reports it.
    w.send("alerts", alert["incident_key"], AlertAcknowledged.create(
        producer="alerts-agent", cause=cmd, alert_id=alert["alert_id"],
        incident_key=alert["incident_key"], operator=cmd.operator, note=cmd.note,
        command_id=command_id, version=2))
    w.project()
    done = client.get(f"/api/v1/commands/{command_id}", headers=w.auth("operator_a")).json()
    assert done["status"] == "applied" and done["outcome_event_type"] == "AlertAcknowledged"
    detail = client.get(f"/api/v1/alerts/{alert['alert_id']}", headers=w.auth("viewer_a")
                        ).json()
    assert detail["state"] == "ACKNOWLEDGED"
    assert detail["acknowledged_by"] == "operator_a-name"
    # Another site's key cannot read the command.
    _error_shape(client.get(f"/api/v1/commands/{command_id}", headers=w.auth("viewer_b")),
                 404)
    audit = client.get("/api/v1/audit/commands", headers=w.auth("auditor")).json()["items"]
    assert any(a["command_id"] == command_id and a["outcome"] == "AlertAcknowledged"
               for a in audit)


def test_wait_long_polls_until_rejection(client: TestClient,
                                         world: tuple[World, dict[str, Any]]) -> None:
    w, ids = world
    alert = ids["alerts"]["cam-a1"][0]
    codec = default_codec()

    def agent_rejects() -> None:
        # Stand-in for the alerts agent: read the command, reject it, project.
        def find() -> Any:
            for m in _consume(f"{w.prefix}.commands", 100, timeout=3):
                ev = codec.decode(m.value())
                if ev.event_type == "ResolveAlert" and ev.resolution == "wait-test":
                    return ev
            return None
        cmd = wait_for(find, timeout=20, interval=0.1)
        w.send("alerts", alert["incident_key"], CommandRejected.create(
            producer="alerts-agent", cause=cmd, command_id=cmd.event_id,
            command_type="ResolveAlert", alert_id=alert["alert_id"], operator=cmd.operator,
            reason="stale version"))
        w.project()

    import threading

    t = threading.Thread(target=agent_rejects)
    t.start()
    resp = client.post(f"/api/v1/alerts/{alert['alert_id']}/resolve?wait=25",
                       json={"resolution": "wait-test", "expected_version": 0},
                       headers=w.auth("operator"))
    t.join(30)
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["status"] == "rejected" and body["reason"] == "stale version"


def test_fifty_concurrent_acks_publish_fifty_commands_on_one_key(
        world: tuple[World, dict[str, Any]]) -> None:
    """The API publishes every ack with the incident key; the agent (not tested here)
    applies one. Fifty concurrent requests against a real server all get a 202."""
    w, ids = world
    alert = ids["alerts"]["cam-b1"][0]
    app = build(w, rate_limit_per_s=10_000, rate_limit_burst=10_000)

    async def go(base: str) -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=base, timeout=30) as c:
            return await asyncio.gather(*(
                c.post(f"/api/v1/alerts/{alert['alert_id']}/ack", json={"note": f"n{i}"},
                       headers=w.auth("operator")) for i in range(50)))

    with serve(app) as base:
        responses = asyncio.run(go(base))
    assert [r.status_code for r in responses] == [202] * 50
    command_ids = {r.json()["command_id"] for r in responses}
    assert len(command_ids) == 50
    codec = default_codec()
    msgs = [m for m in _consume(f"{w.prefix}.commands", 200, timeout=5)
            if codec.decode(m.value()).event_id in command_ids]
    assert len(msgs) == 50
    assert {m.key().decode() for m in msgs} == {alert["incident_key"]}
    assert len({m.partition() for m in msgs}) == 1


# --------------------------------------------------------------------------- config
def test_zone_and_rule_validation_and_publishing(client: TestClient,
                                                 world: tuple[World, dict[str, Any]]) -> None:
    w, _ = world
    h = w.auth("admin")
    bowtie = {"camera_id": "cam-a1", "name": "bad", "polygon": [
        {"x": 0.1, "y": 0.1}, {"x": 0.9, "y": 0.9}, {"x": 0.9, "y": 0.1}, {"x": 0.1, "y": 0.9}]}
    body = _error_shape(client.put("/api/v1/zones/z-bad", json=bowtie, headers=h), 422)
    assert "self-intersecting" in json.dumps(body["details"])
    unknown = {"camera_id": "nope", "name": "z", "polygon": [
        {"x": 0.1, "y": 0.1}, {"x": 0.5, "y": 0.1}, {"x": 0.5, "y": 0.5}]}
    _error_shape(client.put("/api/v1/zones/z-u", json=unknown, headers=h), 422)
    neg = {"camera_id": "cam-a1", "rule_type": "loitering", "zone_id": "zone-a1",
           "dwell_s": -1}
    _error_shape(client.put("/api/v1/rules/r-neg", json=neg, headers=h), 422)
    _error_shape(client.put("/api/v1/rules/r-nz", json={
        "camera_id": "cam-a1", "rule_type": "crowd", "zone_id": "zone-none"}, headers=h), 422)
    _error_shape(client.put("/api/v1/zones/z1", content=b"{not json",
                            headers={**h, "content-type": "application/json"}), 400)
    good = {"camera_id": "cam-a1", "name": "Lobby", "kind": "zone", "polygon": [
        {"x": 0.1, "y": 0.1}, {"x": 0.6, "y": 0.1}, {"x": 0.6, "y": 0.6}, {"x": 0.1, "y": 0.6}]}
    resp = client.put("/api/v1/zones/zone-lobby", json=good, headers=h)
    assert resp.status_code == 202, resp.text
    assert resp.json()["key"] == "zone/zone-lobby"
    rule = {"camera_id": "cam-a1", "rule_type": "crowd", "zone_id": "zone-a1",
            "min_people": 4, "clear_below": 2, "schedule": {"kind": "night"}}
    assert client.put("/api/v1/rules/rule-crowd", json=rule, headers=h).status_code == 202
    codec = default_codec()
    msgs = _consume(f"{w.prefix}.config", 100, timeout=5)
    keyed = {m.key().decode(): codec.decode(m.value()) for m in msgs if m.value()}
    assert keyed["zone/zone-lobby"].event_type == "ZoneConfigured"
    assert keyed["rule/rule-crowd"].min_people == 4
    w.project()
    zones = client.get("/api/v1/zones?camera=cam-a1", headers=w.auth("viewer_a")).json()
    assert "zone-lobby" in {z["zone_id"] for z in zones["items"]}


def test_routes_are_readable_per_site(client: TestClient,
                                      world: tuple[World, dict[str, Any]]) -> None:
    w, _ = world

    def ids(role: str) -> set[str]:
        resp = client.get("/api/v1/routes", headers=w.auth(role))
        assert resp.status_code == 200, resp.text
        return {r["route_id"] for r in resp.json()["items"]}

    seeded = {"route-a", "route-b", "route-all", "route-bcam"}
    assert seeded <= ids("admin") and "route-gone" not in ids("admin")  # deleted
    assert ids("viewer_a") & seeded == {"route-a", "route-all"}
    assert ids("viewer_b") & seeded == {"route-b", "route-all", "route-bcam"}
    one = client.get("/api/v1/routes/route-a", headers=w.auth("viewer_a"))
    assert one.status_code == 200, one.text
    body = one.json()
    assert (body["site_id"], body["channels"], body["recipients"], body["severities"],
            body["levels"], body["enabled"]) == (
        "site-a", ["mail"], ["ops-a@x.example"], ["critical"], [0, 1], True)
    assert body["quiet_hours"] == {"start": "22:00", "end": "06:00",
                                   "timezone": "Europe/Berlin"}
    assert client.get("/api/v1/routes/route-all", headers=w.auth("viewer_a")).json()[
        "quiet_hours"] is None
    for role, route_id in (("viewer_a", "route-b"), ("viewer_a", "route-bcam"),
                           ("admin", "route-gone"), ("admin", "nope")):
        assert _error_shape(client.get(f"/api/v1/routes/{route_id}", headers=w.auth(role)),
                            404)["details"] == {"route_id": route_id}
    by_cam = client.get("/api/v1/routes?camera=cam-a1", headers=w.auth("admin")).json()
    assert {r["route_id"] for r in by_cam["items"]} & seeded == {  # no camera filter: any
        "route-a", "route-b", "route-all"}
    by_site = client.get("/api/v1/routes?site=site-b", headers=w.auth("admin")).json()
    assert {r["route_id"] for r in by_site["items"]} & seeded == {
        "route-b", "route-all", "route-bcam"}
    _error_shape(client.get("/api/v1/routes?bogus=1", headers=w.auth("admin")), 400)

    # what the API publishes comes back through the projector, and so does a delete
    h = w.auth("admin")
    put = client.put("/api/v1/routes/route-rt", json={
        "channels": ["mail"], "recipients": ["lead@x.example"], "levels": [1],
        "site_id": "site-a"}, headers=h)
    assert put.status_code == 202, put.text
    w.project()
    got = client.get("/api/v1/routes/route-rt", headers=w.auth("viewer_a")).json()
    assert (got["levels"], got["recipients"], got["config_event_id"]) == (
        [1], ["lead@x.example"], put.json()["event_id"])
    assert client.delete("/api/v1/routes/route-rt", headers=h).status_code == 202
    w.project()
    _error_shape(client.get("/api/v1/routes/route-rt", headers=h), 404)


def test_routes_configured_before_the_routes_table_are_backfilled(
        client: TestClient, world: tuple[World, dict[str, Any]]) -> None:
    """A deployed projector had folded routes into nothing before migration 0043; the
    migration makes it read the config topic again, so they appear without a replay."""
    import psycopg

    from projections.migrate import set_search_path, upgrade

    w, _ = world
    w.project(consumer_name="deployed")  # its offsets are stored past every route
    with psycopg.connect(w.dsn) as conn, conn.transaction():  # back to before 0043
        set_search_path(conn, w.schema)
        conn.execute("DROP TABLE routes")
        conn.execute("DELETE FROM schema_migrations WHERE version = 43")
    assert upgrade(w.dsn, w.schema, w.dim) == ["0043_routes"]
    w.project(consumer_name="deployed")
    listed = client.get("/api/v1/routes", headers=w.auth("admin")).json()["items"]
    assert {"route-a", "route-b", "route-all", "route-bcam"} <= {r["route_id"]
                                                                for r in listed}


def test_routes_validation_and_notification_retry(
        client: TestClient, world: tuple[World, dict[str, Any]]) -> None:
    w, ids = world
    h = w.auth("admin")

    def locs(resp: httpx.Response) -> list[list[Any]]:
        return [e["loc"] for e in _error_shape(resp, 422)["details"]["errors"]]

    assert ["body", "severities", "0"] in locs(client.put(
        "/api/v1/routes/r-bad", json={"channels": ["mail"], "severities": ["loud"]}, headers=h))
    assert ["body", "channels"] in locs(client.put(
        "/api/v1/routes/r-bad", json={"channels": []}, headers=h))
    assert ["body", "cameras", "0"] in locs(client.put(
        "/api/v1/routes/r-bad", json={"channels": ["mail"], "cameras": ["nope"]}, headers=h))
    assert ["body", "quiet_hours"] in locs(client.put("/api/v1/routes/r-bad", json={
        "channels": ["mail"], "quiet_hours": {"start": "25:00", "end": "06:00"}}, headers=h))
    good = {"channels": ["mail", "sms"], "recipients": ["admin@x.example"], "levels": [2],
            "cameras": ["cam-a1"], "quiet_hours": {"start": "22:00", "end": "06:00"}}
    resp = client.put("/api/v1/routes/admin-l2", json=good, headers=h)
    assert resp.status_code == 202, resp.text
    assert resp.json()["key"] == "route/admin-l2"
    codec = default_codec()
    msgs = _consume(f"{w.prefix}.config", 1000, timeout=10,
                    until=lambda m: m.key() == b"route/admin-l2")
    ev = codec.decode(msgs[-1].value())
    assert (ev.event_type, ev.levels, ev.quiet_start) == ("RouteConfigured", [2], "22:00")

    alert = ids["alerts"]["cam-a1"][0]["alert_id"]
    failed = ids["notifications_failed"]["cam-a1"]
    listed = client.get(f"/api/v1/notifications?alert_id={alert}&status=failed",
                        headers=w.auth("viewer_a"))
    assert listed.status_code == 200, listed.text
    (item,) = listed.json()["items"]
    assert (item["event_id"], item["reason"]) == (failed, "ConnectionRefusedError")
    _error_shape(client.get("/api/v1/notifications", headers=w.auth("viewer_a")), 422)
    _error_shape(client.post(f"/api/v1/notifications/{failed}/retry",
                             headers=w.auth("viewer_a")), 403)
    _error_shape(client.post("/api/v1/notifications/nope/retry", headers=h), 404)
    b_failed = ids["notifications_failed"]["cam-b1"]
    _error_shape(client.post(f"/api/v1/notifications/{b_failed}/retry",
                             headers=w.auth("operator_a")), 404)  # another site's
    resp = client.post(f"/api/v1/notifications/{failed}/retry", headers=w.auth("operator_a"))
    assert resp.status_code == 202, resp.text
    cmd_id = resp.json()["command_id"]
    msgs = _consume(f"{w.prefix}.notifications", 1000, timeout=10,
                    until=lambda m: codec.decode(m.value()).event_id == cmd_id)
    cmd = codec.decode(msgs[-1].value())
    assert (cmd.event_type, cmd.notification_event_id, cmd.alert_id) == (
        "RetryNotification", failed, alert)


def test_line_validation_publishing_listing_and_deletion(
        client: TestClient, world: tuple[World, dict[str, Any]]) -> None:
    w, _ = world
    h = w.auth("admin")

    def locs(resp: httpx.Response) -> list[list[str]]:
        return [e["loc"] for e in _error_shape(resp, 422)["details"]["errors"]]

    base = {"camera_id": "cam-a1", "name": "Entrance"}
    same = {**base, "a": {"x": 0.4, "y": 0.4}, "b": {"x": 0.4, "y": 0.4}}
    assert locs(client.put("/api/v1/lines/l-bad", json=same, headers=h)) == [["body", "b"]]
    outside = {**base, "a": {"x": -0.1, "y": 0.4}, "b": {"x": 0.4, "y": 1.2}}
    assert sorted(locs(client.put("/api/v1/lines/l-bad", json=outside, headers=h))) == [
        ["body", "a", "x"], ["body", "b", "y"]]
    unknown = {**base, "camera_id": "nope", "a": {"x": 0, "y": 0}, "b": {"x": 1, "y": 1}}
    assert locs(client.put("/api/v1/lines/l-bad", json=unknown, headers=h)) == [
        ["body", "camera_id"]]
    good = {**base, "a": {"x": 0.0, "y": 0.6}, "b": {"x": 1.0, "y": 0.6}}
    # A site-b admin cannot see (so cannot configure or delete) site-a cameras' lines.
    assert locs(client.put("/api/v1/lines/line-new", json=good,
                           headers=w.auth("admin_b"))) == [["body", "camera_id"]]
    _error_shape(client.delete("/api/v1/lines/line-a1", headers=w.auth("admin_b")), 404)
    resp = client.put("/api/v1/lines/line-new", json=good, headers=h)
    assert resp.status_code == 202, resp.text
    assert resp.json()["key"] == "line/line-new"
    assert client.delete("/api/v1/lines/line-b1", headers=h).status_code == 202
    codec = default_codec()
    msgs = _consume(f"{w.prefix}.config", 500, timeout=5)
    keyed = {m.key().decode(): codec.decode(m.value()) for m in msgs if m.value()}
    published = keyed["line/line-new"]
    assert published.event_type == "LineConfigured"
    assert (published.a.x, published.a.y, published.b.x, published.b.y) == (0, 0.6, 1, 0.6)
    assert keyed["line/line-b1"].event_type == "EntityDeleted"
    w.project()  # the read model learns about lines from the topic, like every agent
    lines = client.get("/api/v1/lines", headers=w.auth("auditor")).json()["items"]
    by_id = {ln["line_id"]: ln for ln in lines}
    assert by_id["line-new"]["a"] == {"x": 0.0, "y": 0.6} and "line-b1" not in by_id
    assert "line-a1" in by_id
    scoped = client.get("/api/v1/lines", headers=w.auth("viewer_b")).json()["items"]
    assert all(ln["camera_id"] == "cam-b1" for ln in scoped)
    one_cam = client.get("/api/v1/lines?camera=cam-a1", headers=h).json()["items"]
    assert {ln["camera_id"] for ln in one_cam} == {"cam-a1"}


# --------------------------------------------------------------------------- limits
def test_requests_without_a_valid_key_are_limited_per_address(
        world: tuple[World, dict[str, Any]]) -> None:
    w, _ = world
    app = build(w, anon_rate_limit_per_s=0.5, anon_rate_limit_burst=3)
    with TestClient(app, raise_server_exceptions=False) as c:
        ok = w.auth("viewer_a")
        assert c.get("/api/v1/sites", headers=ok).status_code == 200
        bad = {"Authorization": f"Bearer {w.keys['viewer_a'][:-2]}xx"}  # guessed secret
        codes = [c.get("/api/v1/sites", headers=bad).status_code for _ in range(3)]
        assert codes == [401, 401, 401]
        body = _error_shape(c.get("/api/v1/sites", headers=bad), 429)
        assert body["error"] == "rate_limited"
        _error_shape(c.get("/api/v1/alerts"), 429)  # no key at all: same address budget
        # A verified key does not spend, and is not blocked by, the anonymous budget.
        assert [c.get("/api/v1/sites", headers=ok).status_code for _ in range(5)] == [200] * 5
        resp = c.get("/api/v1/sites", headers=bad)
        assert resp.status_code == 429 and int(resp.headers["Retry-After"]) >= 1


def test_rate_limit_and_body_limit(world: tuple[World, dict[str, Any]]) -> None:
    w, _ = world
    app = build(w, rate_limit_per_s=1, rate_limit_burst=3, max_body_bytes=1024)
    with TestClient(app, raise_server_exceptions=False) as c:
        codes = [c.get("/api/v1/sites", headers=w.auth("viewer_a")).status_code
                 for _ in range(5)]
        assert codes[:3] == [200, 200, 200] and codes[-1] == 429
        body = _error_shape(c.get("/api/v1/sites", headers=w.auth("viewer_a")), 429)
        assert body["error"] == "rate_limited"
        # Other keys keep their own budget.
        assert c.get("/api/v1/sites", headers=w.auth("auditor")).status_code == 200
        big = c.put("/api/v1/zones/z", content=b"x" * 5000,
                    headers={**w.auth("admin"), "content-type": "application/json"})
        _error_shape(big, 413)


def test_cors_is_configurable(world: tuple[World, dict[str, Any]]) -> None:
    w, _ = world
    app = build(w, cors_origins=["https://ops.example"])
    with TestClient(app) as c:
        r = c.options("/api/v1/alerts", headers={"Origin": "https://ops.example",
                                                 "Access-Control-Request-Method": "GET"})
        assert r.headers["access-control-allow-origin"] == "https://ops.example"


# --------------------------------------------------------------------------- live stream
def test_stream_delivers_alert_within_a_second_of_projection(
        world: tuple[World, dict[str, Any]]) -> None:
    w, _ = world
    app = build(w, rate_limit_per_s=1000, rate_limit_burst=1000, stream_poll_s=0.1)
    received: dict[str, float] = {}
    new_alert = f"alert-live-{uuid.uuid4().hex[:6]}"
    other_alert = f"alert-live-b-{uuid.uuid4().hex[:6]}"

    async def listen(base: str, key: str, sink: list[dict[str, Any]]) -> None:
        async with httpx.AsyncClient(base_url=base, timeout=30) as c, c.stream(
                "GET", "/api/v1/alerts/stream?max_events=1&timeout_s=20",
                headers={"Authorization": f"Bearer {key}"}) as resp:
            assert resp.status_code == 200
            async for line in resp.aiter_lines():
                if line.startswith("data: "):
                    sink.append(json.loads(line[6:]))
                    received[key] = time.monotonic()

    def projected_at(alert_id: str) -> float:
        from schemas.tables import alerts, in_schema

        def present() -> bool:
            with w.engine.connect() as conn:
                c = in_schema(conn, w.schema)
                return c.execute(sa.select(alerts.c.alert_id).where(
                    alerts.c.alert_id == alert_id)).first() is not None
        wait_for(present, timeout=30, interval=0.02)
        return time.monotonic()

    async def main(base: str) -> tuple[list[dict[str, Any]], list[dict[str, Any]], float]:
        got_a: list[dict[str, Any]] = []
        got_b: list[dict[str, Any]] = []
        ta = asyncio.create_task(listen(base, w.keys["viewer_a"], got_a))
        tb = asyncio.create_task(listen(base, w.keys["viewer_b"], got_b))
        await asyncio.sleep(1.0)  # subscribed and watermark taken
        # A site-b alert first (viewer_a must never see it), then a site-a one.
        for alert_id, site, cam in ((other_alert, "site-b", "cam-b1"),
                                    (new_alert, "site-a", "cam-a1")):
            w.send("alerts", f"inc-{alert_id}", AlertRaised.create(
                producer="t", alert_id=alert_id, incident_key=f"inc-{alert_id}",
                site_id=site, camera_id=cam, zone_id=None, rule_id="rule-a1",
                rule_type="loitering", severity="critical", first_evidence_at=T0,
                last_evidence_at=T0, snapshot_ref=None, version=1))
        await asyncio.to_thread(w.project)
        t_proj = await asyncio.to_thread(projected_at, new_alert)
        await asyncio.wait_for(asyncio.gather(ta, tb), 15)
        return got_a, got_b, t_proj

    with serve(app) as base:
        got_a, got_b, t_proj = asyncio.run(main(base))
    assert [m["alert_id"] for m in got_a] == [new_alert]
    assert [m["alert_id"] for m in got_b] == [other_alert]
    assert received[w.keys["viewer_a"]] - t_proj < 1.0


def test_stream_resumes_from_last_event_id_exactly_once_in_order(
        world: tuple[World, dict[str, Any]]) -> None:
    """An alert projected while the client is away is replayed on reconnect (from the
    read model), once, in order, and the stream then continues live."""
    w, _ = world
    app = build(w, rate_limit_per_s=1000, rate_limit_burst=1000, stream_poll_s=0.1)
    tag = uuid.uuid4().hex[:6]
    key = w.keys["viewer_a"]

    def raise_alert(n: int, incident: str | None = None) -> str:
        alert_id = f"alert-resume-{tag}-{n}"
        inc = incident or f"inc-resume-{tag}-{n}"
        w.send("alerts", inc, AlertRaised.create(
            producer="t", occurred_at=T0 + timedelta(days=30, seconds=n), alert_id=alert_id,
            incident_key=inc, site_id="site-a", camera_id="cam-a1", zone_id=None,
            rule_id="rule-a1", rule_type="loitering", severity="warning",
            first_evidence_at=T0, last_evidence_at=T0, snapshot_ref=None, version=1))
        return alert_id

    async def read(base: str, n: int, last_id: str | None, sink: list[tuple[str, str]],
                   on_ready: asyncio.Event | None = None) -> str | None:
        """Read until `n` of this test's alert events arrived, then hang up (as a
        dropped connection would); returns the last ``id:`` seen."""
        headers = {"Authorization": f"Bearer {key}"}
        if last_id is not None:
            headers["Last-Event-ID"] = last_id
        current = None
        async with httpx.AsyncClient(base_url=base, timeout=30) as c, c.stream(
                "GET", "/api/v1/alerts/stream?timeout_s=25",
                headers=headers) as resp:
            assert resp.status_code == 200
            async for line in resp.aiter_lines():
                if line.startswith("id: "):
                    current = line[4:]
                    if on_ready is not None:
                        on_ready.set()  # the first id is the position on connect
                elif line.startswith("data: "):
                    msg = json.loads(line[6:])
                    if msg["alert_id"].startswith(f"alert-resume-{tag}"):
                        sink.append((msg["alert_id"], msg["event_type"]))
                        if len(sink) >= n:
                            break
        return current

    async def main(base: str) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
        first: list[tuple[str, str]] = []
        ready = asyncio.Event()
        t1 = asyncio.create_task(read(base, 1, None, first, ready))
        await asyncio.wait_for(ready.wait(), 15)
        a0 = raise_alert(0)
        await asyncio.to_thread(w.project)
        last_id = await asyncio.wait_for(t1, 15)
        assert first == [(a0, "AlertRaised")] and last_id
        # Disconnected: three alerts, two of them on one incident (same partition).
        a1 = raise_alert(1)
        a2 = raise_alert(2, incident=f"inc-resume-{tag}-1")
        a3 = raise_alert(3)
        await asyncio.to_thread(w.project)
        second: list[tuple[str, str]] = []
        resume_ready = asyncio.Event()
        t2 = asyncio.create_task(read(base, 4, last_id, second, resume_ready))
        await asyncio.wait_for(resume_ready.wait(), 15)
        a4 = raise_alert(4)  # live, after the replay
        await asyncio.to_thread(w.project)
        await asyncio.wait_for(t2, 20)
        assert {a for a, _ in second} == {a1, a2, a3, a4}
        return first, second

    with serve(app) as base:
        _, second = asyncio.run(main(base))
    ids = [a for a, _ in second]
    assert len(ids) == len(set(ids)) == 4  # nothing twice, a0 not replayed
    assert ids[-1].endswith("-4")  # the replay comes before the live event
    assert ids.index(f"alert-resume-{tag}-1") < ids.index(f"alert-resume-{tag}-2")


def test_stream_resume_too_far_back_says_reset_and_bad_ids_are_400(
        world: tuple[World, dict[str, Any]]) -> None:
    w, _ = world
    app = build(w, stream_replay_max=1, stream_poll_s=0.1)
    with TestClient(app, raise_server_exceptions=False) as c:
        h = w.auth("auditor")
        _error_shape(c.get("/api/v1/alerts/stream?timeout_s=0.5",
                           headers={**h, "Last-Event-ID": "not-a-position"}), 400)
        # From the very beginning: more than one missed event, so no partial replay.
        body = c.get("/api/v1/alerts/stream?timeout_s=0.5",
                     headers={**h, "Last-Event-ID": "0:-1"}).text
        frames = [f for f in body.split("\n\n") if f.strip()]
        reset = next(f for f in frames if "event: reset" in f)
        assert '"max_replay": 1' in reset and "\nevent: AlertRaised" not in body
        # The reset carries the current position: resuming from it replays nothing.
        position = reset.split("\n")[0].removeprefix("id: ")
        again = c.get("/api/v1/alerts/stream?timeout_s=0.5",
                      headers={**h, "Last-Event-ID": position}).text
        assert "event: " not in again and f"id: {position}" in again
