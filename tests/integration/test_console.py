"""The operator console in a real browser (Debian's chromium driven by Playwright) against
the real stack: alerts raised by the real alerts agent (a Faust worker) from rule hits,
folded by the real projector, served by the API with the console.

Each test is one operator story and checks what a person sees (rows, states, buttons),
then what the system recorded (the read model). Screenshots of every page go to
``test-artifacts/console/`` (see README, "Operator console").
"""

from __future__ import annotations

import math
import re
import shutil
import statistics
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from playwright.sync_api import expect

from api.app import create_app
from api.settings import load_api_settings
from api.users import UserStore
from tests.integration.alerts_support import ROOT, Worker, module_env, rule_hit
from tests.integration.test_evidence_agent import config_events, send_hit, send_segments
from tools.testkit.api import World, make_world, seed_world, serve, wait_for
from vigil.settings import get_settings

pytestmark = pytest.mark.integration

EVIDENCE_CAM = "cam-ev"
SHOTS = ROOT / "test-artifacts" / "console"
PASSWORD = "correct horse battery"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture(scope="module")
def env(stack: dict[str, str], tmp_path_factory: pytest.TempPathFactory
        ) -> Iterator[dict[str, str]]:
    tmp = tmp_path_factory.mktemp("console")
    yield from module_env(stack, tmp, {
        # the scene agent too: a zone drawn in the editor must fire its rule
        "VIGIL_WORKER_AGENTS": "alerts,evidence,clips,scene",
        # a short clip window and quick re-checks keep the test short
        "VIGIL_EVIDENCE_PRE_S": "2", "VIGIL_EVIDENCE_POST_S": "3",
        "VIGIL_EVIDENCE_CLIP_RETRY_S": "1", "VIGIL_EVIDENCE_CLIP_NO_RECORDING_S": "30"})


@pytest.fixture(scope="module")
def world(env: dict[str, str], stack: dict[str, str]) -> Iterator[tuple[World, dict[str, Any]]]:
    with make_world(stack["KAFKA_BOOTSTRAP"], stack["DATABASE_URL"],
                    env["VIGIL_TOPIC_PREFIX"]) as w:
        ids = seed_world(w)
        for key, event in config_events(EVIDENCE_CAM):
            w.send("config", key, event)
        users = UserStore(w.engine, w.keys_schema)
        users.ensure_schema()
        for name, role, sites in (("olga", "operator", None), ("vera", "viewer", None),
                                  ("anna", "operator", ["site-a"]), ("ada", "admin", None)):
            users.create(name, PASSWORD, role, sites)
        yield w, ids


@pytest.fixture(scope="module")
def pipeline(env: dict[str, str], world: tuple[World, dict[str, Any]],
             tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """The alerts agent and a projector that keeps folding while the browser watches."""
    w, _ = world
    logs = tmp_path_factory.mktemp("console-logs")
    worker = Worker(env, logs / "worker.log")
    worker.start()
    proj_log = (logs / "projector.log").open("ab")
    projector = subprocess.Popen(
        [sys.executable, "-m", "vigil_cli", "project", "--schema", w.schema,
         "--max-seconds", "900"],
        env=env, cwd=ROOT, stdout=proj_log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        yield
    finally:
        projector.terminate()
        try:
            projector.wait(20)
        except subprocess.TimeoutExpired:
            projector.kill()
        proj_log.close()
        worker.stop()


@pytest.fixture(scope="module")
def base_url(world: tuple[World, dict[str, Any]], pipeline: None) -> Iterator[str]:
    w, _ = world
    from vigil.objects import client

    app = create_app(get_settings(), w.engine, w.producer, read_schema=w.schema,
                     api_settings=load_api_settings(env={}, keys_schema=w.keys_schema,
                                                    cookie_secure=False),
                     object_store=client())
    with serve(app) as url:
        yield url


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    assert CHROMIUM, "Debian's chromium is missing (infra/apt-packages.txt installs it)"
    SHOTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            yield b
        finally:
            b.close()


def login(browser: Any, base_url: str, user: str, viewport: dict[str, int] | None = None
          ) -> Any:
    ctx = browser.new_context(viewport=viewport or {"width": 1366, "height": 768})
    page = ctx.new_page()
    page.goto(f"{base_url}/console/")
    assert "/console/login" in page.url  # not logged in: sent to the login page
    page.fill("input[name=username]", user)
    page.fill("input[name=password]", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url(f"{base_url}/console/")
    assert page.locator("[data-testid=user]").inner_text() == user
    return page


def log_first_paint(page: Any, base_url: str) -> None:
    """The queue's first paint, measured (never asserted: the box is shared): a fresh load
    of the queue, from the request to the rows being drawn (the page's own mark). Logged
    and kept next to the screenshots (first-paint.json)."""
    import json

    page.goto(f"{base_url}/console/")
    page.wait_for_function("() => performance.getEntriesByName('vigil:queue-usable').length")
    timing = page.evaluate(
        "() => { const n = performance.getEntriesByType('navigation')[0];"
        " const m = performance.getEntriesByName('vigil:queue-usable')[0];"
        " return {first_byte_ms: n.responseStart - n.requestStart,"
        " html_bytes: n.transferSize, dom_ready_ms: n.domContentLoadedEventEnd - n.startTime,"
        " usable_ms: m.startTime - n.startTime,"
        " rows: document.querySelectorAll('tr.alert-row').length}; }")
    print(f"queue first paint: {timing}")
    (SHOTS / "first-paint.json").write_text(json.dumps(timing, indent=1))


def row(page: Any, alert_id: str) -> Any:
    return page.locator(f'tr.alert-row[data-alert-id="{alert_id}"]')


def raise_alert(w: World, camera: str, severity: str = "warning") -> str:
    """A rule hit on the scene topic; the alerts agent turns it into an alert."""
    rule = f"rule-{uuid.uuid4().hex[:8]}"
    hit = rule_hit(camera, rule, severity=severity, zone="zone-a1")
    w.send("scene", camera, hit)
    w.producer.flush(10)

    def projected() -> str | None:
        with w.engine.connect() as conn:
            return conn.execute(sa.text(
                f'SELECT alert_id FROM "{w.schema}".alerts WHERE rule_id = :r'),
                {"r": rule}).scalar()

    return str(wait_for(projected, timeout=60, interval=0.2))


def test_operator_sees_a_new_alert_live_and_acknowledges_it_from_the_keyboard(
        world: tuple[World, dict[str, Any]], base_url: str, browser: Any) -> None:
    w, ids = world
    page = login(browser, base_url, "olga")
    seeded = ids["alerts"]["cam-a1"][0]["alert_id"]
    assert row(page, seeded).is_visible()
    page.wait_for_selector("#live[data-state=live]", timeout=15_000)
    page.screenshot(path=str(SHOTS / "queue.png"), full_page=True)
    log_first_paint(page, base_url)

    alert_id = raise_alert(w, "cam-a1", severity="critical")
    new_row = row(page, alert_id)
    new_row.wait_for(timeout=15_000)  # arrived over SSE: the page was never reloaded
    assert page.locator("#critical-banner").is_visible()
    assert "critical" in page.locator("#critical-banner").inner_text().lower()
    page.screenshot(path=str(SHOTS / "queue-new-critical.png"), full_page=True)

    # Newest first: the new alert is the first row; the cursor starts there.
    page.locator("body").press("k")
    assert page.locator("tr.alert-row").first.get_attribute("data-alert-id") == alert_id
    page.keyboard.press("a")
    # Acknowledged, it leaves the "open" tab and shows up under "Acknowledged".
    expect(new_row).to_have_count(0, timeout=30_000)
    page.click('[role=tab][data-state=ACKNOWLEDGED]')
    expect(row(page, alert_id).locator("[data-field=state]")).to_contain_text(
        "ACKNOWLEDGED · olga")
    page.screenshot(path=str(SHOTS / "queue-acknowledged.png"), full_page=True)

    with w.engine.connect() as conn:
        state, by = conn.execute(sa.text(
            f'SELECT state, acknowledged_by FROM "{w.schema}".alerts WHERE alert_id = :a'),
            {"a": alert_id}).one()
    assert (state, by) == ("ACKNOWLEDGED", "olga")

    # Enter opens the detail page (the cursor is on the tab's first row, this alert),
    # whose history shows who acknowledged it.
    assert page.locator("tr.alert-row.cursor").get_attribute("data-alert-id") == alert_id
    page.keyboard.press("Enter")
    page.wait_for_url(f"{base_url}/console/alerts/{alert_id}")
    page.locator("#timeline li.event-AlertAcknowledged").wait_for(timeout=10_000)
    assert "olga" in page.locator("#timeline").inner_text()
    page.screenshot(path=str(SHOTS / "alert-detail.png"), full_page=True)
    page.context.close()


def test_an_alert_shows_its_thumbnail_annotated_snapshot_and_a_clip_that_plays(
        world: tuple[World, dict[str, Any]], base_url: str, browser: Any) -> None:
    """The whole evidence path as the operator sees it: the rule hit's frame rendered by
    the evidence agent, its clip cut from recorded segments by the clips agent."""
    w, _ = world
    now = datetime.now(UTC).replace(microsecond=0)
    hit, _ = send_hit(w, EVIDENCE_CAM, dwell_s=4, now=now)  # window now-6 s .. now+3 s
    send_segments(w, EVIDENCE_CAM, now - timedelta(seconds=8), 3)

    def alert_of_hit() -> str | None:
        with w.engine.connect() as conn:
            return conn.execute(sa.text(
                f'SELECT alert_id FROM "{w.schema}".alerts WHERE rule_id = :r '
                "ORDER BY raised_at DESC LIMIT 1"), {"r": hit.rule_id}).scalar()

    alert_id = str(wait_for(alert_of_hit, timeout=60, interval=0.2))
    page = login(browser, base_url, "olga")
    expect(row(page, alert_id)).to_have_count(1, timeout=30_000)
    # The picture may land after the page is drawn (the queue asks again for a missing
    # one): what counts is that the operator ends up seeing it, without reloading.
    page.wait_for_function(
        "id => { const i = document.querySelector("
        "`tr[data-alert-id='${id}'] img.thumb-img`); return i && i.naturalWidth > 0; }",
        arg=alert_id, timeout=90_000)
    page.goto(f"{base_url}/console/alerts/{alert_id}")
    annotated = page.locator("[data-testid=annotated]")
    annotated.wait_for(timeout=60_000)
    assert page.evaluate("() => document.querySelector('[data-testid=annotated]')"
                         ".naturalWidth") == 640
    video = page.locator("[data-testid=clip]")
    video.wait_for(timeout=90_000)  # the page re-reads the alert until the clip is in
    assert page.locator("[data-testid=trigger-mark]").count() == 1
    page.evaluate("() => document.querySelector('[data-testid=clip]').play()")
    page.wait_for_function(
        "() => { const v = document.querySelector('[data-testid=clip]');"
        " return v.readyState >= 2 && v.currentTime > 0.5; }", timeout=30_000)
    page.screenshot(path=str(SHOTS / "alert-evidence.png"), full_page=True)
    page.context.close()

    def seen_by_olga() -> set[str]:
        with w.engine.connect() as conn:
            return {r[0] for r in conn.execute(sa.text(
                f'SELECT route FROM "{w.schema}".access_log WHERE actor_name = :n '
                "AND :rid = ANY(resource_ids)"), {"n": "olga", "rid": f"alert_id={alert_id}"})}

    # Looking at the evidence is on the access record: the page and the thumbnail.
    assert wait_for(lambda: {"/console/alerts/{alert_id}",
                             "/console/alerts/{alert_id}/thumbnail"} <= seen_by_olga(),
                    timeout=60, interval=0.5)


def test_operator_resolves_from_the_detail_page(
        world: tuple[World, dict[str, Any]], base_url: str, browser: Any) -> None:
    w, _ = world
    alert_id = raise_alert(w, "cam-a2")
    page = login(browser, base_url, "olga")
    page.goto(f"{base_url}/console/alerts/{alert_id}")
    page.fill("#assign-form input[name=assignee]", "anna")
    page.click("#assign-form button[type=submit]")
    expect(page.locator("[data-field=assigned]")).to_have_text("anna", timeout=30_000)
    page.fill("#comment-form input[name=text]", "guard sent to the gate")
    page.click("#comment-form button[type=submit]")
    expect(page.locator("#timeline li.event-AlertCommented")).to_contain_text(
        "guard sent to the gate", timeout=30_000)
    page.select_option("#resolve-form select[name=resolution]", "false_alarm")
    page.click("#resolve-form button[type=submit]")
    expect(page.locator("[data-field=state]")).to_have_text("RESOLVED", timeout=30_000)
    expect(page.locator("[data-field=resolved]")).to_contain_text("false_alarm by olga")
    page.screenshot(path=str(SHOTS / "alert-detail-resolved.png"), full_page=True)
    with w.engine.connect() as conn:
        assigned, state = conn.execute(sa.text(
            f'SELECT assigned_to, state FROM "{w.schema}".alerts WHERE alert_id = :a'),
            {"a": alert_id}).one()
        kinds = conn.execute(sa.text(
            f'SELECT event_type, payload->>\'operator\' FROM "{w.schema}".alert_events '
            "WHERE alert_id = :a ORDER BY log_offset"), {"a": alert_id}).all()
    assert (assigned, state) == ("anna", "RESOLVED")
    # Every action is attributed to the logged-in user in the events it produced.
    assert [k for k in kinds if k[0] != "AlertRaised"] == [
        ("AlertAssigned", "olga"), ("AlertCommented", "olga"), ("AlertResolved", "olga")]
    page.context.close()


def test_viewer_sees_no_actions_and_a_forged_post_is_refused(
        world: tuple[World, dict[str, Any]], base_url: str, browser: Any) -> None:
    _, ids = world
    page = login(browser, base_url, "vera")
    alert_id = ids["alerts"]["cam-a1"][0]["alert_id"]
    page.goto(f"{base_url}/console/alerts/{alert_id}")
    assert page.locator("#ack-form").count() == 0
    assert page.locator("#resolve-form").count() == 0
    page.screenshot(path=str(SHOTS / "alert-detail-viewer.png"), full_page=True)
    # The buttons are hidden, and the server refuses the action anyway, even with a
    # valid CSRF token taken from the page.
    status = page.evaluate(
        """async (id) => {
            const csrf = document.querySelector('meta[name=csrf-token]').content;
            const r = await fetch(`/api/v1/alerts/${id}/ack`, {method: 'POST',
                headers: {'Content-Type': 'application/json', 'X-CSRF-Token': csrf},
                body: '{"note": "forged"}'});
            return [r.status, (await r.json()).error];
        }""", alert_id)
    assert status == [403, "forbidden"]
    page.context.close()


def test_site_scoped_operator_never_sees_another_site(
        world: tuple[World, dict[str, Any]], base_url: str, browser: Any) -> None:
    w, ids = world
    page = login(browser, base_url, "anna", viewport={"width": 390, "height": 844})
    other = ids["alerts"]["cam-b1"][0]["alert_id"]
    mine = ids["alerts"]["cam-a1"][0]["alert_id"]
    assert row(page, mine).is_visible()
    assert row(page, other).count() == 0
    assert "cam-b1" not in page.locator("#alerts").inner_text()
    # Live: a new alert of site B never reaches this page's stream.
    b_alert = raise_alert(w, "cam-b1", severity="critical")
    a_alert = raise_alert(w, "cam-a2")
    row(page, a_alert).wait_for(timeout=15_000)
    assert row(page, b_alert).count() == 0
    page.screenshot(path=str(SHOTS / "queue-phone-site-a.png"), full_page=True)
    # A deep link to the other site's alert answers like an id that does not exist.
    page.goto(f"{base_url}/console/alerts/{other}")
    missing = page.locator("[data-testid=error-message]").inner_text()
    page.goto(f"{base_url}/console/alerts/no-such-alert")
    assert page.locator("[data-testid=error-message]").inner_text() == missing
    page.context.close()


def test_camera_wall_camera_page_and_system_page_are_site_scoped(
        world: tuple[World, dict[str, Any]], base_url: str, browser: Any) -> None:
    page = login(browser, base_url, "olga")
    page.click("nav.main-nav >> text=Cameras")
    page.wait_for_url(f"{base_url}/console/cameras")
    cards = page.locator(".camera-card")
    expect(cards).to_have_count(4)  # cam-a1, cam-a2, cam-b1 and the evidence camera
    page.check("#show-zones")
    # cam-a1 has a zone and a line: their overlay is drawn over its picture
    a1 = page.locator('.camera-card[data-camera-id="cam-a1"]')
    expect(a1.locator("svg.overlay polygon.zone")).to_have_count(1)
    expect(a1.locator("svg.overlay line.tripwire")).to_have_count(1)
    page.screenshot(path=str(SHOTS / "cameras.png"), full_page=True)
    a1.click()
    page.wait_for_url(f"{base_url}/console/cameras/cam-a1")
    expect(page.locator("table.rules tbody")).to_contain_text("rule-a1")
    page.screenshot(path=str(SHOTS / "camera.png"), full_page=True)
    page.goto(f"{base_url}/console/system")
    w, _ = world
    with w.engine.connect() as conn:
        status = conn.execute(sa.text(
            f'SELECT status FROM "{w.schema}".edges WHERE edge_id = :e'), {"e": "edge-a"}
        ).scalar()
    expect(page.locator('#edges tr[data-edge-id="edge-a"] td').nth(2)).to_have_text(status)
    expect(page.locator("#streams tbody tr")).to_have_count(4)
    page.screenshot(path=str(SHOTS / "system.png"), full_page=True)
    page.context.close()

    scoped = login(browser, base_url, "anna")
    scoped.goto(f"{base_url}/console/cameras")
    expect(scoped.locator(".camera-card")).to_have_count(2)
    assert scoped.locator('.camera-card[data-camera-id="cam-b1"]').count() == 0
    scoped.goto(f"{base_url}/console/system")
    expect(scoped.locator("#streams tbody tr")).to_have_count(2)
    assert "edge-b" not in scoped.locator("#edges").inner_text()
    scoped.goto(f"{base_url}/console/cameras/cam-b1")
    expect(scoped.locator("[data-testid=error-message]")).to_contain_text("no camera")
    scoped.context.close()


def test_login_failures_csrf_and_logout(world: tuple[World, dict[str, Any]],
                                        base_url: str, browser: Any) -> None:
    ctx = browser.new_context()
    page = ctx.new_page()
    page.goto(f"{base_url}/console/login")
    for user in ("olga", "nobody-by-this-name"):
        page.fill("input[name=username]", user)
        page.fill("input[name=password]", "wrong password!")
        page.click("button[type=submit]")
        assert page.locator("[data-testid=login-error]").inner_text() == "Login failed."
    page.screenshot(path=str(SHOTS / "login-failed.png"), full_page=True)
    cookies = {c["name"]: c for c in ctx.cookies()}
    assert "vigil_session" not in cookies
    ctx.close()

    page = login(browser, base_url, "olga")
    session = next(c for c in page.context.cookies() if c["name"] == "vigil_session")
    assert session["httpOnly"] and session["sameSite"] == "Lax"
    # A state change with the cookie but without the page's CSRF token is refused.
    _, ids = world
    alert_id = ids["alerts"]["cam-a2"][0]["alert_id"]
    res = httpx.post(f"{base_url}/api/v1/alerts/{alert_id}/ack", json={"note": "x"},
                     cookies={"vigil_session": session["value"]})
    assert res.status_code == 403 and res.json()["error"] == "csrf_failed"
    # A logout form posted from elsewhere (no token) gets a clear page, not a trace.
    res = httpx.post(f"{base_url}/console/logout", data={},
                     cookies={"vigil_session": session["value"]})
    assert res.status_code == 403 and "security token" in res.text
    page.click("form.logout button")
    page.wait_for_url(f"{base_url}/console/login")
    res = httpx.get(f"{base_url}/api/v1/alerts", cookies={"vigil_session": session["value"]})
    assert res.status_code == 401

    # Logins, failed ones too, and the logout are on the access record.
    w, _ = world

    def records() -> list[tuple[str, str, str, int]] | None:
        with w.engine.connect() as conn:
            rows = conn.execute(sa.text(
                f'SELECT route, outcome, actor_name, status FROM "{w.schema}".access_log '
                "WHERE route IN ('/console/login', '/console/logout')")).all()
        got = [tuple(r) for r in rows]
        ok = ("/console/logout", "ok", "olga", 303) in got and \
            sum(1 for r in got if r[:2] == ("/console/login", "denied")) >= 2
        return got if ok else None

    got = wait_for(records, timeout=60, interval=0.5)
    assert ("/console/login", "ok", "olga", 303) in got


def test_users_cli_creates_a_user_who_can_log_in(
        world: tuple[World, dict[str, Any]], env: dict[str, str], base_url: str,
        browser: Any) -> None:
    w, _ = world
    cli_env = dict(env, VIGIL_API_KEYS_SCHEMA=w.keys_schema)
    res = subprocess.run(
        [sys.executable, "-m", "vigil_cli", "users", "create", "--role", "operator",
         "--site", "site-a", "carl"], input=PASSWORD + "\n", env=cli_env,
        capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert res.returncode == 0, res.stderr
    assert PASSWORD not in res.stdout + res.stderr
    page = login(browser, base_url, "carl")
    assert page.locator(".role").inner_text() == "operator"
    page.context.close()


# ----------------------------------------------------------------------------- helpers
def scene_jpeg(w: int = 640, h: int = 360, people: tuple[tuple[float, float, float, float],
                                                         ...] = ()) -> bytes:
    """A camera picture: a floor, a wall, and a figure in every box (normalised)."""
    import cv2
    import numpy as np

    img = np.full((h, w, 3), (70, 80, 90), np.uint8)
    img[: h // 3] = (110, 110, 100)
    for x1, y1, x2, y2 in people:
        cv2.rectangle(img, (int(x1 * w), int(y1 * h)), (int(x2 * w), int(y2 * h)),
                      (40, 90, 200), -1)
        cv2.circle(img, (int((x1 + x2) / 2 * w), int(y1 * h) + 8), 8, (180, 200, 230), -1)
    ok, buf = cv2.imencode(".jpg", img)
    assert ok
    return bytes(buf)


def store_frame_of(w: World, camera: str, edge: str, at: datetime,
                   people: tuple[tuple[float, float, float, float], ...] = ()) -> Any:
    """A frame stored in the object store and announced, as an edge does it."""
    from schemas.events import FrameCaptured
    from vigil.objects import store_frame

    ref = store_frame(scene_jpeg(people=people), f"{camera}/{uuid.uuid4().hex}.jpg")
    return w.send("frames", camera, FrameCaptured.create(
        producer="t", occurred_at=at, edge_id=edge, camera_id=camera, sequence=1,
        width=640, height=360, motion_score=1.0, object_ref=ref))


def projected(w: World, sql: str, params: dict[str, Any], timeout: float = 60) -> Any:
    def once() -> Any:
        with w.engine.connect() as conn:
            return conn.execute(sa.text(sql.format(s=w.schema)), params).first()
    return wait_for(once, timeout=timeout, interval=0.3)


def click_at(page: Any, box: dict[str, float], x: float, y: float) -> None:
    page.mouse.click(box["x"] + x * box["width"], box["y"] + y * box["height"])


# ----------------------------------------------------------------------------- editor
def test_admin_draws_a_zone_and_its_rule_then_a_person_entering_it_raises_an_alert(
        world: tuple[World, dict[str, Any]], base_url: str, browser: Any) -> None:
    """The editor end to end: drawn on the camera's current frame, refused (422) where
    the server says so and next to that field, saved through the config routes; then the
    real scene agent sees a person walk in, fires the rule, and the alert is raised."""
    from schemas.events import FrameAnalyzed
    from tools.bench.scene import FrameSpec, Person, frames

    w, _ = world
    cam = "cam-a2"
    store_frame_of(w, cam, "edge-a", datetime.now(UTC))
    w.producer.flush(10)
    projected(w, "SELECT 1 FROM \"{s}\".frames WHERE camera_id = :c AND object_ref IS NOT NULL",
              {"c": cam})

    # an operator has no editor; the admin has one, over the camera's current frame
    op = login(browser, base_url, "olga")
    op.goto(f"{base_url}/console/cameras/{cam}")
    assert op.locator("#editor").count() == 0
    op.context.close()
    page = login(browser, base_url, "ada")
    page.goto(f"{base_url}/console/cameras/{cam}")
    page.wait_for_function("() => { const i = document.querySelector('#editor-picture img');"
                           " return i && i.naturalWidth === 640; }", timeout=30_000)
    page.click("#new-zone")
    page.fill("#shape-form input[name=id]", "zone-drawn")
    page.fill("#shape-form input[name=name]", "Loading bay")
    page.select_option("#shape-form select[name=kind]", "perimeter")
    page.locator("[data-testid=editor-svg]").scroll_into_view_if_needed()
    box = page.locator("[data-testid=editor-svg]").bounding_box()
    assert box is not None
    for x, y in ((0.2, 0.3), (0.8, 0.9), (0.8, 0.3), (0.2, 0.9)):  # a bow-tie
        click_at(page, box, x, y)
    expect(page.locator("[data-testid=points]")).to_contain_text("4 corner(s)")
    page.click("#shape-form button[type=submit]")
    # the server's 422, next to the polygon (not a generic banner)
    expect(page.locator("[data-testid=polygon-error]")).to_contain_text(
        "self-intersecting", timeout=15_000)
    page.screenshot(path=str(SHOTS / "editor-422.png"), full_page=True)
    page.click("#shape-form [data-action=clear]")
    for x, y in ((0.2, 0.3), (0.8, 0.3), (0.8, 0.9), (0.2, 0.9)):
        click_at(page, box, x, y)
    page.click("#shape-form button[type=submit]")
    expect(page.locator("#shape-form [data-field=status]")).to_have_text(
        "Saved and in effect.", timeout=60_000)
    expect(page.locator("[data-testid=polygon-error]")).to_be_empty()
    with w.engine.connect() as conn:
        poly, kind = conn.execute(sa.text(
            f'SELECT polygon, kind FROM "{w.schema}".zones WHERE zone_id = \'zone-drawn\'')).one()
    assert kind == "perimeter"
    drawn = [(0.2, 0.3), (0.8, 0.3), (0.8, 0.9), (0.2, 0.9)]
    assert len(poly) == 4 and all(abs(p["x"] - x) < 0.01 and abs(p["y"] - y) < 0.01
                                  for p, (x, y) in zip(poly, drawn, strict=True)), poly
    # the zone is now drawn over the camera's picture at the top of the page as well
    expect(page.locator("#camera-view svg.overlay polygon.zone")).to_have_count(2)

    # a directed line: with one end only the server names the missing one, then a -> b
    page.click("#new-line")
    page.fill("#shape-form input[name=id]", "line-drawn")
    page.fill("#shape-form input[name=name]", "Dock door")
    click_at(page, box, 0.1, 0.5)
    page.click("#shape-form button[type=submit]")
    expect(page.locator('#shape-form [data-error-for="b"]')).to_contain_text(
        "required", timeout=15_000)
    # b from the keyboard: the cross starts in the middle, Shift+arrow moves it by 0.05
    page.focus("[data-testid=editor-svg]")
    for _ in range(8):
        page.keyboard.press("Shift+ArrowRight")
    page.keyboard.press("Enter")
    expect(page.locator("[data-testid=points]")).to_contain_text("(0.900, 0.500)")
    page.click("#shape-form [data-action=swap]")  # b -> a: forward is now the other side
    page.click("#shape-form button[type=submit]")
    expect(page.locator("#shape-form [data-field=status]")).to_have_text(
        "Saved and in effect.", timeout=60_000)
    with w.engine.connect() as conn:
        a, b = conn.execute(sa.text(
            f'SELECT a, b FROM "{w.schema}".lines WHERE line_id = \'line-drawn\'')).one()
    assert abs(a["x"] - 0.9) < 0.01 and abs(b["x"] - 0.1) < 0.01, (a, b)

    # the rule: first one the server refuses (a crowd that would clear and fire at once)
    rule_id = f"rule-drawn-{uuid.uuid4().hex[:6]}"
    page.fill("#rule-form input[name=id]", rule_id)
    page.select_option("#rule-form select[name=rule_type]", "crowd")
    page.select_option("#rule-form select[name=zone_id]", "zone-drawn")
    page.fill("#rule-form input[name=min_people]", "2")
    page.fill("#rule-form input[name=clear_below]", "3")
    page.click("#rule-form button[type=submit]")
    expect(page.locator("[data-testid=clear-below-error]")).to_contain_text(
        "min_people", timeout=15_000)
    page.select_option("#rule-form select[name=rule_type]", "perimeter")
    page.select_option("#rule-form select[name=severity]", "critical")
    page.click("#rule-form button[type=submit]")
    expect(page.locator("#rule-form [data-field=status]")).to_have_text(
        "Saved and in effect.", timeout=60_000)
    expect(page.locator(f'#rules-body tr[data-rule-id="{rule_id}"]')).to_contain_text(
        "perimeter")
    page.screenshot(path=str(SHOTS / "editor.png"), full_page=True)

    # A person walks from the left edge into the drawn zone and stays: the scene agent
    # (reading the zone and rule from vigil.config) fires the perimeter rule.
    start = datetime.now(UTC).replace(microsecond=0)
    person = Person(waypoints=[(0.0, 0.05, 0.6), (5.0, 0.5, 0.6), (12.0, 0.5, 0.62)])
    for f in frames(FrameSpec(camera_id=cam, start=start, duration_s=12, people=[person],
                              edge_id="edge-a")):
        w.send("detections", cam, FrameAnalyzed.create(
            producer="t", occurred_at=f.occurred_at, edge_id="edge-a", camera_id=cam,
            frame_sequence=f.frame_sequence, width=640, height=360, skipped=False,
            detections=[replace(d, detection_id=f"{rule_id}-{d.detection_id}")
                        for d in f.detections],
            detector_model="synthetic", detector_version="1"))
    w.producer.flush(10)
    alert_id = projected(w, 'SELECT alert_id FROM "{s}".alerts WHERE rule_id = :r',
                         {"r": rule_id}, timeout=120)[0]
    page.goto(f"{base_url}/console/")
    expect(row(page, alert_id)).to_have_count(1, timeout=15_000)
    expect(row(page, alert_id)).to_contain_text("perimeter")
    page.context.close()


# ----------------------------------------------------------------------------- explore
PERSON_BOX = (0.4, 0.3, 0.55, 0.9)


def seen_person(w: World, camera: str, edge: str, at: datetime, vector: list[float]) -> str:
    """A stored frame with a person in it, its analysis and the person's appearance."""
    from schemas.events import AppearanceEmbedded, Detection, FrameAnalyzed

    frame = store_frame_of(w, camera, edge, at, people=(PERSON_BOX,))
    det = f"det-x-{camera}-{uuid.uuid4().hex[:6]}"
    x1, y1, x2, y2 = PERSON_BOX
    w.send("detections", camera, FrameAnalyzed.create(
        producer="t", occurred_at=at, cause=frame, edge_id=edge, camera_id=camera,
        frame_sequence=1, width=640, height=360, skipped=False, detector_model="m",
        detector_version="1", inference_ms=20.0,
        detections=[Detection(detection_id=det, label="person", score=0.9, x1=x1, y1=y1,
                              x2=x2, y2=y2, has_embedding=True)]))
    w.send("embeddings", camera, AppearanceEmbedded.create(
        producer="t", occurred_at=at, camera_id=camera, detection_id=det, frame_sequence=1,
        model="appearance_embedder", vector=vector))
    return det


def nudged(v: list[float], seed: int, by: float) -> list[float]:
    import math
    import random

    rnd = random.Random(seed)
    out = [x + rnd.gauss(0, by) for x in v]
    n = math.sqrt(sum(x * x for x in out))
    return [x / n for x in out]


@pytest.fixture(scope="module")
def people(world: tuple[World, dict[str, Any]]) -> dict[str, Any]:
    """The same person seen on cam-a1, cam-a2 (site A) and cam-b1 (site B) a minute ago,
    with cam-a1's recording of that minute."""
    from tools.testkit.api import unit_vector

    w, _ = world
    now = datetime.now(UTC).replace(microsecond=0)
    base = unit_vector(4242, w.dim)
    at = now - timedelta(seconds=30)
    ids = {cam: seen_person(w, cam, edge, at + timedelta(seconds=i), nudged(base, i, 0.01))
           for i, (cam, edge) in enumerate((("cam-a1", "edge-a"), ("cam-a2", "edge-a"),
                                            ("cam-b1", "edge-b")))}
    send_segments(w, "cam-a1", now - timedelta(seconds=40), 4)  # 40 s .. 24 s ago
    w.producer.flush(10)
    for det in ids.values():
        projected(w, 'SELECT 1 FROM "{s}".embeddings WHERE detection_id = :d', {"d": det})
    return {"ids": ids, "at": at}


def thumbnail_loaded(page: Any, selector: str) -> None:
    page.wait_for_function(
        "s => { const i = document.querySelector(s); return i && i.naturalWidth > 0; }",
        arg=selector, timeout=30_000)


def test_explore_filters_events_and_alerts_and_finds_similar_people_in_scope(
        world: tuple[World, dict[str, Any]], base_url: str, browser: Any,
        people: dict[str, Any]) -> None:
    w, seeded = world
    ids = people["ids"]
    page = login(browser, base_url, "olga")
    page.click("nav.main-nav >> text=Explore")
    page.wait_for_url(f"{base_url}/console/explore")
    # by camera, zone and rule: the seeded loitering alert and zone events of cam-a1
    page.select_option("#explore-filters select[name=camera]", "cam-a1")
    page.select_option("#explore-filters select[name=zone]", "zone-a1")
    page.select_option("#explore-filters select[name=rule]", "rule-a1")
    page.click("#explore-filters button[type=submit]")
    shown = page.locator("section.explore")
    expect(shown).to_have_attribute("data-shown", "camera=cam-a1&zone=zone-a1&rule=rule-a1",
                                     timeout=15_000)
    seeded_alert = seeded["alerts"]["cam-a1"][0]["alert_id"]
    expect(page.locator(f'#explore-alerts tr[data-alert-id="{seeded_alert}"]')).to_have_count(1)
    expect(page.locator("#explore-events tbody tr").first).to_be_visible()
    cells = page.eval_on_selector_all(
        "#explore-events tbody tr", "rows => rows.map(r => [r.cells[2].textContent, "
        "r.cells[3].textContent])")
    assert cells and all(c == ["cam-a1", "zone-a1"] for c in cells), cells
    # by time: from a minute ago, the January alert is gone
    since = (datetime.now() - timedelta(minutes=1)).strftime("%Y-%m-%dT%H:%M:%S")
    page.fill("#explore-filters input[name=since]", since)
    page.click("#explore-filters button[type=submit]")
    expect(shown).to_have_attribute("data-shown", re.compile("since="), timeout=15_000)
    expect(page.locator(f'#explore-alerts tr[data-alert-id="{seeded_alert}"]')).to_have_count(0)

    # find similar from the person seen on cam-a1: the same person on every camera
    page.fill("#explore-filters input[name=since]", "")
    page.select_option("#explore-filters select[name=zone]", "")
    page.select_option("#explore-filters select[name=rule]", "")
    page.click("#explore-filters button[type=submit]")
    card = f'#people .person-card[data-detection-id="{ids["cam-a1"]}"]'
    page.locator(card).wait_for(timeout=15_000)
    thumbnail_loaded(page, f"{card} img")
    page.click(f"{card} .find-similar")
    similar = page.locator("#similar .person-card")
    expect(page.locator(f'#similar [data-detection-id="{ids["cam-b1"]}"]')).to_have_count(
        1, timeout=15_000)
    expect(page.locator(f'#similar [data-detection-id="{ids["cam-a2"]}"]')).to_have_count(1)
    thumbnail_loaded(page, f'#similar [data-detection-id="{ids["cam-b1"]}"] img')
    link = page.locator(f'#similar [data-detection-id="{ids["cam-b1"]}"] a.moment')
    assert link.get_attribute("href").startswith("/console/cameras/cam-b1?at=")
    page.screenshot(path=str(SHOTS / "explore.png"), full_page=True)
    assert similar.count() >= 2
    page.context.close()

    # site A's operator: neither site B's person nor its picture, in any list
    scoped = login(browser, base_url, "anna")
    scoped.goto(f"{base_url}/console/explore")
    expect(scoped.locator("section.explore")).to_have_attribute("data-shown", "all",
                                                                timeout=15_000)
    card = f'#people .person-card[data-detection-id="{ids["cam-a1"]}"]'
    scoped.locator(card).wait_for(timeout=15_000)
    assert scoped.locator(f'[data-detection-id="{ids["cam-b1"]}"]').count() == 0
    assert "cam-b1" not in scoped.locator("#explore-events").inner_text()
    scoped.click(f"{card} .find-similar")
    expect(scoped.locator(f'#similar [data-detection-id="{ids["cam-a2"]}"]')).to_have_count(
        1, timeout=15_000)
    assert scoped.locator(f'#similar [data-detection-id="{ids["cam-b1"]}"]').count() == 0
    assert "cam-b1" not in scoped.locator("#similar").inner_text()
    status = scoped.evaluate(
        "async id => (await fetch(`/console/detections/${id}/thumbnail`)).status",
        ids["cam-b1"])
    missing = scoped.evaluate(
        "async () => (await fetch('/console/detections/no-such-det/thumbnail')).status")
    assert status == missing == 404
    scoped.screenshot(path=str(SHOTS / "explore-site-a.png"), full_page=True)

    def looked_at() -> set[tuple[str, int]]:
        with w.engine.connect() as conn:
            return {(r[0], r[1]) for r in conn.execute(sa.text(
                f'SELECT resource_ids[1], status FROM "{w.schema}".access_log WHERE '
                "actor_name = 'anna' AND route = '/console/detections/{detection_id}"
                "/thumbnail'"))}

    # each person's picture is on the access record, the refused one too
    assert wait_for(lambda: {(f"detection_id={ids['cam-a1']}", 200),
                             (f"detection_id={ids['cam-b1']}", 404)} <= looked_at(),
                    timeout=60, interval=0.5)

    # the result's moment opens the camera's recording there, and it plays
    scoped.click(f'#similar [data-detection-id="{ids["cam-a2"]}"] a.moment')
    scoped.wait_for_url(f"{base_url}/console/cameras/cam-a2?at=*")
    expect(scoped.locator("#rec-status")).to_contain_text("No recording", timeout=15_000)
    scoped.goto(f"{base_url}/console/explore?camera=cam-a1")
    scoped.locator(f'#people [data-detection-id="{ids["cam-a1"]}"] a.moment').click()
    scoped.wait_for_url(f"{base_url}/console/cameras/cam-a1?at=*")
    scoped.wait_for_function(
        "() => { const v = document.querySelector('[data-testid=rec-player]');"
        " return v && !v.hidden && v.readyState >= 2 && v.currentTime > 0.3; }",
        timeout=30_000)
    scoped.context.close()


# ----------------------------------------------------------------------------- timeline
def test_camera_timeline_shows_recordings_and_alert_marks_and_plays_from_a_click(
        world: tuple[World, dict[str, Any]], base_url: str, browser: Any,
        people: dict[str, Any]) -> None:
    w, _ = world
    # the recording around the alert (Explore's people left 4 segments earlier on)
    send_segments(w, "cam-a1", datetime.now(UTC) - timedelta(seconds=10), 3)  # -10 s .. +2 s
    alert_id = raise_alert(w, "cam-a1")
    projected(w, 'SELECT count(*) FROM "{s}".recordings WHERE camera_id = \'cam-a1\' '
                 "AND start_at > now() - interval '1 hour' HAVING count(*) >= 7", {})
    page = login(browser, base_url, "olga")
    page.goto(f"{base_url}/console/cameras/cam-a1")
    expect(page.locator("#rec-bar .rec-seg")).to_have_count(7, timeout=15_000)
    mark = page.locator(f'#rec-bar .rec-alert[data-alert-id="{alert_id}"]')
    expect(mark).to_have_count(1)
    playing = ("() => { const v = document.querySelector('[data-testid=rec-player]');"
               " return !v.hidden && v.readyState >= 2 && !v.paused && v.currentTime > 0.2; }")
    # the alert's mark plays the recording around it (at 1 h, marks a minute apart are
    # 16 px apart; at 24 h the earlier tests' alerts on this camera share its pixel)
    page.locator("#rec-bar").scroll_into_view_if_needed()
    page.click("#rec-zoom button[data-span='3600000']")
    mark.click()
    page.wait_for_function(playing, timeout=30_000)
    # zoomed to 10 minutes the segments are wide enough to click inside one
    page.click("#rec-zoom button[data-span='600000']")
    seg = page.locator("#rec-bar .rec-seg").nth(5).bounding_box()
    assert seg is not None and seg["width"] > 4, seg
    page.mouse.click(seg["x"] + seg["width"] / 2, seg["y"] + seg["height"] / 2)
    expect(page.locator("#rec-status")).to_contain_text("Playing from")
    expect(page.locator("#rec-status")).not_to_contain_text("nearest")
    page.wait_for_function(playing, timeout=30_000)
    page.screenshot(path=str(SHOTS / "camera-timeline.png"), full_page=True)
    page.context.close()


# ----------------------------------------------------------------------------- system
def test_system_page_shows_inference_latency_degraded_workers_lag_and_dead_letters(
        world: tuple[World, dict[str, Any]], base_url: str, browser: Any,
        people: dict[str, Any]) -> None:
    from schemas.events import FrameAnalyzed, InferenceDegraded
    from schemas.topics import topic_name

    w, _ = world
    now = datetime.now(UTC)
    for i, ms in enumerate((30.0, 50.0, 70.0, 90.0, 410.0)):
        w.send("detections", "cam-a1", FrameAnalyzed.create(
            producer="t", occurred_at=now - timedelta(seconds=10 - i), edge_id="edge-a",
            camera_id="cam-a1", frame_sequence=100 + i, width=640, height=360,
            skipped=False, detections=[], detector_model="m", detector_version="1",
            inference_ms=ms))
    worker = f"infer-{uuid.uuid4().hex[:6]}"
    w.send("health", worker, InferenceDegraded.create(
        producer="t", occurred_at=now, worker_id=worker, reason="triton timed out (2 s)"))
    # a message nobody can decode: the projector dead-letters it
    w.producer.send_raw(topic_name("heartbeats"), b"edge-x", b"\x00not an event")
    w.producer.flush(10)
    projected(w, 'SELECT 1 FROM "{s}".health_events WHERE worker_id = :w', {"w": worker})
    projected(w, 'SELECT 1 FROM "{s}".projector_dead_letters WHERE topic = :t',
              {"t": topic_name("heartbeats")})
    projected(w, 'SELECT 1 FROM "{s}".frame_analyses WHERE camera_id = \'cam-a1\' '
                 "AND frame_sequence = 104", {})

    with w.engine.connect() as conn:  # cam-a1's analysed frames of the last 15 minutes
        took = [r[0] for r in conn.execute(sa.text(
            f'SELECT inference_ms FROM "{w.schema}".frame_analyses WHERE camera_id = '
            "'cam-a1' AND NOT skipped AND occurred_at >= now() - interval '15 minutes'"))]
    assert 410.0 in took
    page = login(browser, base_url, "olga")
    page.goto(f"{base_url}/console/system")
    expect(page.locator('#inference tr[data-camera-id="cam-a1"] [data-field=p50]')).to_have_text(
        f"{math.floor(statistics.median(took) + 0.5)} ms")  # as Math.round does
    expect(page.locator(f'#inference-workers [data-worker-id="{worker}"]')).to_contain_text(
        "DEGRADED")
    expect(page.locator(f'#inference-workers [data-worker-id="{worker}"]')).to_contain_text(
        "triton timed out")
    dead = page.locator("[data-testid=dead-letters]")
    expect(dead).to_contain_text(topic_name("heartbeats"))
    assert int(dead.locator("[data-field=dead-total] .badge").inner_text()) >= 1
    expect(page.locator("[data-testid=lag]")).to_contain_text("partition(s)")
    page.screenshot(path=str(SHOTS / "system.png"), full_page=True)
    # a bad window is a JSON 422 naming the field, not a 500
    res = page.evaluate("async () => { const r = await fetch('/api/v1/system?window_s=5');"
                        " return [r.status, await r.json()]; }")
    assert res[0] == 422 and res[1]["error"] == "validation_error", res
    assert "window_s" in str(res[1]["details"])
    page.context.close()

    scoped = login(browser, base_url, "anna")
    scoped.goto(f"{base_url}/console/system")
    expect(scoped.locator('#inference tr[data-camera-id="cam-a1"]')).to_have_count(1)
    assert scoped.locator('#inference tr[data-camera-id="cam-b1"]').count() == 0
    expect(scoped.locator("[data-testid=dead-letters]")).to_contain_text("Not shown")
    expect(scoped.locator("[data-testid=lag]")).to_contain_text("Not shown")
    assert worker not in scoped.locator("#inference-workers").inner_text()
    scoped.screenshot(path=str(SHOTS / "system-site-a.png"), full_page=True)
    scoped.context.close()
