"""The operator console in a real browser (Debian's chromium driven by Playwright) against
the real stack: alerts raised by the real alerts agent (a Faust worker) from rule hits,
folded by the real projector, served by the API with the console.

Each test is one operator story and checks what a person sees (rows, states, buttons),
then what the system recorded (the read model). Screenshots of every page go to
``test-artifacts/console/`` (see README, "Operator console").
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
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
        "VIGIL_WORKER_AGENTS": "alerts,evidence,clips",
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
                                  ("anna", "operator", ["site-a"])):
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
