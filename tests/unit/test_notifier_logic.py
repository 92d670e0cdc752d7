"""Notifier pieces that need no broker: channel configuration, routing, escalation levels,
quiet hours, dedup, backoff, the outbox's guarantees, templates, partitioning."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
from datetime import UTC, datetime
from pathlib import Path

import pytest
from aiokafka.partitioner import DefaultPartitioner

from agents.alert_state import home_partition
from agents.notifier import Notifier, NotifySettings, delivery_id, outcome_event_id
from agents.notify_channels import Channel, Message, Outcome, sign
from agents.notify_outbox import Outbox
from agents.notify_routes import AlertContext, Route, backoff_s, in_quiet_hours, targets
from agents.notify_templates import Templates
from schemas.events import (
    AlertAcknowledged,
    AlertEscalated,
    AlertRaised,
    AlertRepeated,
    EvidenceCaptured,
    RetryNotification,
    RouteConfigured,
)
from schemas.site_config import parse_site
from vigil.errors import ConfigError

T0 = datetime(2026, 1, 5, 12, 0, tzinfo=UTC)


def test_signature_is_hmac_sha256_of_body() -> None:
    body = b'{"a":1}'
    assert sign("k", body) == "sha256=" + hmac.new(b"k", body, hashlib.sha256).hexdigest()


def test_channels_from_env_and_yaml(tmp_path: Path) -> None:
    f = tmp_path / "c.yaml"
    f.write_text(
        "- {name: pager, url: 'http://x/y', secret: s, rate_per_min: 5}\n"
        "- {name: mail, kind: email, host: 127.0.0.1, port: 2525, security: starttls,\n"
        "   username: u, password: pw-secret-1, sender: 'vigil@site'}\n"
        "- {name: ha, kind: mqtt, port: 1884}\n"
        "- {name: slack, kind: chat, url: 'http://x/s', flavor: slack}\n"
        "- {name: sms, kind: http, url: 'http://x/sms', token: t}\n")
    s = NotifySettings(webhooks="ops=http://127.0.0.1:1/h", secret="z", file=f)
    ops, pager, mail, ha, slack, sms = s.channel_configs()
    assert (ops.name, ops.url, ops.secret.get_secret_value()) == ("ops", "http://127.0.0.1:1/h",
                                                                  "z")
    assert (pager.kind, pager.rate_per_min) == ("webhook", 5)
    assert (mail.kind, mail.port, mail.security, mail.sender) == ("email", 2525, "starttls",
                                                                  "vigil@site")
    assert "pw-secret-1" not in repr(mail)  # secrets never printed
    assert (ha.kind, ha.qos, slack.flavor, sms.kind) == ("mqtt", 1, "slack", "http")
    with pytest.raises(ConfigError):
        NotifySettings(webhooks="nourl").channel_configs()
    f.write_text("- {name: mail, kind: email, port: 0}\n")
    with pytest.raises(ConfigError, match=r"\[0\.email\.port\]"):
        NotifySettings(file=f).channel_configs()
    f.write_text("- {name: a, kind: mqtt}\n- {name: a, kind: mqtt}\n")
    with pytest.raises(ConfigError, match="duplicate"):
        NotifySettings(file=f).channel_configs()


# ------------------------------------------------------------------------ routing

OPS = Route("ops", ("mail",), ("ops@x",), levels=(0,))
LEAD = Route("lead", ("mail",), ("lead@x",), levels=(1,))
ADMIN = Route("admin", ("mail", "sms"), ("admin@x",), levels=(2,))
CRIT = Route("crit", ("mqtt",), severities=("critical",))
ROUTES = [OPS, LEAD, ADMIN, CRIT]


def ctx(severity: str = "warning", level: int = 0, told: tuple[int, ...] = ()) -> AlertContext:
    return AlertContext("a1", camera_id="cam-1", site_id="s1", rule_type="loitering",
                        severity=severity, level=level, told_levels=told)


def test_routing_by_severity() -> None:
    warn = {(t.route_id, t.channel) for t in targets(ROUTES, "AlertRaised", ctx(), T0)}
    assert warn == {("ops", "mail")}
    crit = {(t.route_id, t.channel) for t in targets(ROUTES, "AlertRaised", ctx("critical"), T0)}
    assert crit == {("ops", "mail"), ("crit", "mqtt")}


def test_level_two_escalation_reaches_only_the_admin_route() -> None:
    got = targets([OPS, LEAD, ADMIN], "AlertEscalated", ctx(level=1), T0, escalation_level=2)
    assert {(t.route_id, t.channel, t.recipient) for t in got} == {
        ("admin", "mail", "admin@x"), ("admin", "sms", "admin@x")}
    got = targets([OPS, LEAD, ADMIN], "AlertEscalated", ctx(), T0, escalation_level=1)
    assert {t.route_id for t in got} == {"lead"}


def test_closing_event_reaches_every_level_that_was_told() -> None:
    got = targets([OPS, LEAD, ADMIN], "AlertAcknowledged", ctx(level=2, told=(0, 1, 2)), T0)
    assert {t.route_id for t in got} == {"ops", "lead", "admin"}
    got = targets([OPS, LEAD, ADMIN], "AlertRepeated", ctx(level=2, told=(0, 1, 2)), T0)
    assert {t.route_id for t in got} == {"admin"}


def test_filters_on_site_camera_rule_type_and_event_type() -> None:
    r = Route("r", ("m",), site_id="s1", cameras=("cam-1",), rule_types=("loitering",),
              event_types=("AlertRaised",))
    assert targets([r], "AlertRaised", ctx(), T0)
    assert not targets([r], "AlertResolved", ctx(), T0)
    other = AlertContext("a2", camera_id="cam-2", site_id="s1", rule_type="loitering")
    assert not targets([r], "AlertRaised", other, T0)
    assert not targets([Route("r", ("m",), site_id="s2")], "AlertRaised", ctx(), T0)
    assert not targets([Route("r", ("m",), enabled=False)], "AlertRaised", ctx(), T0)


def test_quiet_hours_suppress_a_warning_but_not_a_critical() -> None:
    night = Route("night", ("mail",), ("x@y",), quiet_start="22:00", quiet_end="06:00")
    late = datetime(2026, 1, 5, 23, 30, tzinfo=UTC)
    (w,) = targets([night], "AlertRaised", ctx("warning"), late)
    (c,) = targets([night], "AlertRaised", ctx("critical"), late)
    assert w.suppressed and not c.suppressed
    (day,) = targets([night], "AlertRaised", ctx("warning"), T0)
    assert not day.suppressed


def test_quiet_hours_are_read_in_the_cameras_time_zone() -> None:
    r = Route("r", ("m",), quiet_start="22:00", quiet_end="06:00")
    at = datetime(2026, 1, 5, 21, 30, tzinfo=UTC)  # 22:30 in Berlin (CET), 16:30 in New York
    assert in_quiet_hours(r, at, "Europe/Berlin")
    assert not in_quiet_hours(r, at, "America/New_York")
    pinned = Route("r", ("m",), quiet_start="22:00", quiet_end="06:00", timezone="UTC")
    assert not in_quiet_hours(pinned, at, "Europe/Berlin")


def test_backoff_doubles_up_to_the_cap() -> None:
    assert [backoff_s(n, 2.0, 60.0) for n in range(1, 8)] == [2, 4, 8, 16, 32, 60, 60]


# ------------------------------------------------------------------------ site config

def test_routes_validate_like_rules_and_publish_as_config_events() -> None:
    from schemas.site_config import config_events

    site = parse_site({"cameras": [{"camera_id": "cam-1"}], "routes": [
        {"route_id": "admin", "channels": ["mail"], "recipients": ["admin@x"], "levels": [2],
         "quiet_hours": {"start": "22:00", "end": "06:00"}}]})
    (key, ev), = [(k, e) for k, e in config_events(site) if k.startswith("route/")]
    assert key == "route/admin" and isinstance(ev, RouteConfigured)
    assert (ev.levels, ev.quiet_start, ev.quiet_end) == ([2], "22:00", "06:00")
    bad = {"cameras": [{"camera_id": "cam-1"}], "routes": [
        {"route_id": "r1", "channels": ["mail"], "cameras": ["cam-9"]},
        {"route_id": "r2", "channels": ["mail"], "severities": ["loud"], "levels": [-1],
         "quiet_hours": {"start": "25:00", "end": "06:00"}}]}
    with pytest.raises(ConfigError) as exc:
        parse_site(bad)
    text = str(exc.value)
    assert "routes[1] (r2).severities[0]" in text and "routes[1] (r2).levels" in text
    assert "routes[1] (r2).quiet_hours" in text
    bad["routes"] = bad["routes"][:1]
    with pytest.raises(ConfigError, match=r"routes\[0\] \(r1\): unknown cameras \['cam-9'\]"):
        parse_site(bad)


# ------------------------------------------------------------------------ intake, dedup

class FakeChannel(Channel):
    """A channel boundary double: records what it was asked to send."""

    kind = "fake"

    def __init__(self, name: str, outcomes: list[Outcome] | None = None, rate: float = 6000):
        class Cfg:
            pass

        cfg = Cfg()
        cfg.name, cfg.rate_per_min = name, rate  # type: ignore[attr-defined]
        super().__init__(cfg, Templates())
        self.sent: list[Message] = []
        self.outcomes = outcomes or []

    async def send(self, msg: Message) -> Outcome:
        self.sent.append(msg)
        return self.outcomes.pop(0) if self.outcomes else Outcome(True, 250)


class FakeProducer:
    def __init__(self) -> None:
        self.sent: list[bytes] = []

    async def send(self, topic: str, key: bytes, value: bytes) -> asyncio.Future[None]:
        """Like aiokafka's: queues the record, returns the future of its broker ack."""
        self.sent.append(value)
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        done.set_result(None)
        return done


class Clock:
    def __init__(self) -> None:
        self.t = 1_000_000.0

    def __call__(self) -> float:
        return self.t


def raised(severity: str = "warning", at: datetime = T0) -> AlertRaised:
    return AlertRaised.create(
        producer="t", occurred_at=at, alert_id="a1", incident_key="cam-1|z|r", site_id="s1",
        camera_id="cam-1", zone_id="z", rule_id="r", rule_type="loitering", severity=severity,
        first_evidence_at=at, last_evidence_at=at, snapshot_ref="snapshots/cam-1/a.jpg",
        version=1)


def notifier(tmp_path: Path, channels: dict[str, Channel], routes: list[RouteConfigured],
             **cfg: object) -> tuple[Notifier, Clock, FakeProducer]:
    clock, prod = Clock(), FakeProducer()
    n = Notifier(NotifySettings(**cfg), prod, Outbox(tmp_path / "o.sqlite"), channels, clock)
    for r in routes:
        n.apply_config(f"route/{r.route_id}", r)
    return n, clock, prod


def route(route_id: str, **kw: object) -> RouteConfigured:
    return RouteConfigured.create(producer="t", route_id=route_id, **kw)  # type: ignore[arg-type]


def test_repeats_within_the_cooldown_produce_one_message(tmp_path: Path) -> None:
    mail = FakeChannel("mail")
    n, clock, _ = notifier(tmp_path, {"mail": mail},
                           [route("ops", channels=["mail"], recipients=["a@x", "b@x"])],
                           cooldown_s=300)
    first = raised()
    assert n.intake(first) == 2
    assert n.intake(first) == 0  # the same event again (a replay): same delivery ids
    for i in range(5):
        clock.t += 10
        rep = AlertRepeated.create(producer="t", alert_id="a1", incident_key="cam-1|z|r",
                                   occurrences=i + 2, last_evidence_at=T0, version=i + 2)
        assert n.intake(rep) == 0
    clock.t += 301
    rep = AlertRepeated.create(producer="t", alert_id="a1", incident_key="cam-1|z|r",
                               occurrences=9, last_evidence_at=T0, version=9)
    assert n.intake(rep) == 2  # cooldown over: one more message per recipient
    esc = AlertEscalated.create(producer="t", alert_id="a1", incident_key="cam-1|z|r", level=1,
                                deadline_at=T0, version=10)
    assert n.intake(esc) == 2  # state changes are never deduplicated


def test_context_of_later_events_comes_from_the_raise(tmp_path: Path) -> None:
    mail = FakeChannel("mail")
    n, _, _ = notifier(tmp_path, {"mail": mail}, [
        route("lead", channels=["mail"], recipients=["lead@x"], levels=[1]),
        route("admin", channels=["mail"], recipients=["admin@x"], levels=[2])])
    n.intake(raised())
    assert n.outbox.rows() == []  # level 0: no route for it
    esc = AlertEscalated.create(producer="t", alert_id="a1", incident_key="cam-1|z|r", level=2,
                                deadline_at=T0, version=3)
    n.intake(esc)
    (row,) = n.outbox.rows()
    assert (row.route_id, row.recipient) == ("admin", "admin@x")
    assert row.message["payload"]["camera_id"] == "cam-1"
    assert row.message["payload"]["severity"] == "warning"
    assert row.message["snapshot_ref"] == "snapshots/cam-1/a.jpg"
    ack = AlertAcknowledged.create(producer="t", alert_id="a1", incident_key="cam-1|z|r",
                                   operator="op", note="", command_id="c", version=4)
    n.intake(ack)
    assert {r.route_id for r in n.outbox.rows() if r.event_type == "AlertAcknowledged"} == {
        "admin"}


def test_quiet_hours_rows_are_recorded_but_never_sent(tmp_path: Path) -> None:
    mail = FakeChannel("mail")
    n, _, _ = notifier(tmp_path, {"mail": mail}, [
        route("night", channels=["mail"], recipients=["x@y"], quiet_start="22:00",
              quiet_end="06:00", timezone="UTC")])
    late = datetime(2026, 1, 5, 23, 0, tzinfo=UTC)
    n.intake(raised("warning", late))
    crit = raised("critical", late)
    crit = AlertRaised.create(**{**{f: getattr(crit, f) for f in (
        "occurred_at", "incident_key", "site_id", "camera_id", "zone_id", "rule_id",
        "rule_type", "severity", "first_evidence_at", "last_evidence_at", "snapshot_ref",
        "version")}, "producer": "t", "alert_id": "a2"})
    n.intake(crit)
    asyncio.run(_settle(n))
    assert {r.alert_id: r.status for r in n.outbox.rows()} == {"a1": "suppressed", "a2": "sent"}


async def _settle(n: Notifier) -> None:
    """Dispatch due rows, wait for the sends, then publish their outcomes (what the
    reporter task does in `run`)."""
    await n.dispatch_once()
    while n.inflight:
        await asyncio.sleep(0.01)
    await n.report()


def test_failures_back_off_then_give_up_and_retry_rearms(tmp_path: Path) -> None:
    bad = Outcome(False, None, "ConnectionRefusedError: nope")
    mail = FakeChannel("mail", [bad] * 5)
    n, clock, prod = notifier(tmp_path, {"mail": mail},
                              [route("ops", channels=["mail"], recipients=["a@x"])],
                              backoff_base_s=10, backoff_max_s=40, retry_for_s=100)

    async def go() -> None:
        n.intake(raised())
        await _settle(n)  # attempt 1 fails: next in 10 s
        (row,) = n.outbox.rows()
        assert (row.attempts, row.next_at - clock.t) == (1, 10)
        await _settle(n)
        assert len(mail.sent) == 1  # not due yet
        for wait in (10, 20, 40):  # attempts 2, 3, 4
            clock.t += wait
            await _settle(n)
        (row,) = n.outbox.rows()
        assert row.next_at == row.created_at + 100  # the last try is at the deadline
        clock.t += 30
        await _settle(n)
        (row,) = n.outbox.rows()
        assert (row.status, row.attempts) == ("failed", 5)
        assert len(prod.sent) == 1  # NotificationFailed, once
        cmd = RetryNotification.create(producer="t", alert_id="a1", requested_by="op",
                                       notification_event_id=outcome_event_id(
                                           "NotificationFailed", row))
        assert n.retry(cmd) == 1
        await _settle(n)  # the channel works now
        (row,) = n.outbox.rows()
        assert (row.status, row.generation) == ("sent", 1)
        assert len(prod.sent) == 2

    asyncio.run(go())


def test_a_confirmed_delivery_is_never_picked_again(tmp_path: Path) -> None:
    o = Outbox(tmp_path / "o.sqlite")
    did = delivery_id("e1", "ops", "mail", "a@x")
    row = {"delivery_id": did, "alert_event_id": "e1", "event_type": "AlertRaised",
           "route_id": "ops", "channel": "mail", "recipient": "a@x", "message": {},
           "status": "pending", "next_at": 0.0, "created_at": 0.0, "raised_at": 0.0}
    o.intake("a1", {}, [row], [])
    assert [r.delivery_id for r in o.due(1.0, 10, set())] == [did]
    assert o.mark_sent(did, 1.0, 250, 1)
    assert not o.mark_sent(did, 2.0, 250, 2)  # confirmed once, never twice
    o.close()
    reopened = Outbox(tmp_path / "o.sqlite")  # a restart
    assert reopened.due(10.0, 10, set()) == []
    assert reopened.intake("a1", {}, [row], []) == 0  # a replayed alert event adds nothing


def test_rate_limited_rows_wait_without_spending_an_attempt(tmp_path: Path) -> None:
    mail = FakeChannel("mail", rate=6)  # 6/min: burst 1, then one per 10 s
    n, clock, _ = notifier(tmp_path, {"mail": mail},
                           [route("ops", channels=["mail"], recipients=["a@x"])])

    async def go() -> None:
        n.intake(raised())
        esc = AlertEscalated.create(producer="t", alert_id="a1", incident_key="cam-1|z|r",
                                    level=1, deadline_at=T0, version=2)
        n.intake(esc)
        await _settle(n)
        await _settle(n)
        by_type = {r.event_type: r for r in n.outbox.rows()}
        assert by_type["AlertRaised"].status == "sent"
        waiting = by_type["AlertEscalated"]
        assert (waiting.status, waiting.attempts) == ("pending", 0)
        assert waiting.next_at > clock.t

    asyncio.run(go())


class FakeMail(FakeChannel):
    attaches_snapshot = True


def rule_alert(alert_id: str = "a1", hit: str = "hit-1") -> AlertRaised:
    """A rule alert as the alerts agent raises it: caused by the RuleTriggered `hit`."""
    return AlertRaised.create(
        producer="t", occurred_at=T0, causation_id=hit, alert_id=alert_id,
        incident_key=f"cam-1|z|{alert_id}", site_id="s1", camera_id="cam-1", zone_id="z",
        rule_id="r", rule_type="loitering", severity="warning", first_evidence_at=T0,
        last_evidence_at=T0, snapshot_ref="snapshots/cam-1/frame.jpg", version=1)


def captured(hit: str = "hit-1", at: datetime = T0) -> EvidenceCaptured:
    return EvidenceCaptured.create(
        producer="t", occurred_at=at, causation_id=hit, camera_id="cam-1",
        rule_event_id=hit, rule_id="r", rule_type="loitering", frame_event_id="f",
        analysis_event_id="an", frame_at=at, first_evidence_at=at, last_evidence_at=at,
        width=640, height=480, snapshot_ref=f"snapshots/ev/{hit}/frame.jpg",
        annotated_ref=f"snapshots/ev/{hit}/annotated.jpg",
        thumbnail_ref=f"snapshots/ev/{hit}/thumbnail.jpg", track_ids=["t1"],
        detection_ids=["d1"], highlighted_detection_ids=["d1"])


def test_first_email_waits_for_the_annotated_snapshot_then_goes(tmp_path: Path) -> None:
    mail, hook = FakeMail("mail"), FakeChannel("hook")
    n, clock, _ = notifier(tmp_path, {"mail": mail, "hook": hook},
                           [route("ops", channels=["mail", "hook"], recipients=["a@x"])],
                           evidence_wait_s=5, evidence_keep_s=3600)
    clock.t = T0.timestamp() + 1

    async def go() -> None:
        n.intake(rule_alert())
        await _settle(n)
        assert [m.recipient for m in hook.sent] == ["a@x"]  # no picture: no wait
        assert mail.sent == []  # held for the evidence
        clock.t += 2
        assert n.evidence(captured()) == 1
        await _settle(n)
        (m,) = mail.sent
        assert (m.snapshot_ref, m.annotated) == ("snapshots/ev/hit-1/annotated.jpg", True)
        # a later email of the alert has the annotated snapshot at once
        n.intake(AlertEscalated.create(producer="t", alert_id="a1", incident_key="cam-1|z|a1",
                                       level=1, deadline_at=T0, version=2))
        await _settle(n)
        assert [x.annotated for x in mail.sent] == [True, True]

    asyncio.run(go())


def test_evidence_late_past_the_bound_sends_the_frame_and_says_so(tmp_path: Path) -> None:
    mail = FakeMail("mail")
    n, clock, _ = notifier(tmp_path, {"mail": mail},
                           [route("ops", channels=["mail"], recipients=["a@x"])],
                           evidence_wait_s=5)
    clock.t = T0.timestamp()

    async def go() -> None:
        n.intake(rule_alert())
        clock.t += 4.9
        await _settle(n)
        assert mail.sent == []
        clock.t += 0.2
        await _settle(n)
        (m,) = mail.sent
        assert (m.snapshot_ref, m.annotated, m.evidence_wait_s) == (
            "snapshots/cam-1/frame.jpg", False, 5)
        assert n.evidence(captured()) == 0  # too late for this one; nothing sent twice
        await _settle(n)
        assert len(mail.sent) == 1

    asyncio.run(go())
    from agents.notify_email import EmailChannel

    text = asyncio.run(EmailChannel.build(_email(), mail.sent[0])).get_body().get_content()
    assert "annotated snapshot was not ready within 5 s" in text
    assert "camera's frame is attached instead" in text


def _email() -> object:
    from agents.notify_channels import EmailConfig
    from agents.notify_email import EmailChannel

    async def fetch(ref: str) -> tuple[bytes, str]:
        return b"\xff\xd8jpeg", ref.rsplit("/", 1)[-1]

    return EmailChannel(EmailConfig(name="mail"), Templates(), fetch)


def test_evidence_before_the_alert_and_health_alerts_never_wait(tmp_path: Path) -> None:
    mail = FakeMail("mail")
    n, clock, _ = notifier(tmp_path, {"mail": mail},
                           [route("ops", channels=["mail"], recipients=["a@x"])],
                           evidence_wait_s=5)
    clock.t = T0.timestamp()
    n.evidence(captured("hit-early"))
    n.intake(rule_alert("a-early", "hit-early"))
    health = AlertRaised.create(
        producer="t", occurred_at=T0, causation_id="off-1", alert_id="a-edge",
        incident_key="edge|e1|offline", camera_id="edge:e1", rule_id="edge_offline",
        rule_type="edge_offline", severity="critical", first_evidence_at=T0,
        last_evidence_at=T0, version=1)
    n.intake(health)
    asyncio.run(_settle(n))
    assert {m.payload["alert_id"]: m.annotated for m in mail.sent} == {
        "a-early": True, "a-edge": False}


def test_a_crash_while_holding_loses_nothing(tmp_path: Path) -> None:
    mail = FakeMail("mail")
    n, clock, _ = notifier(tmp_path, {"mail": mail},
                           [route("ops", channels=["mail"], recipients=["a@x"])],
                           evidence_wait_s=5)
    clock.t = T0.timestamp()
    alert = rule_alert()
    n.intake(alert)
    n.outbox.close()  # the process dies while the mail is held
    again, clock2, _ = notifier(tmp_path, {"mail": mail},
                                [route("ops", channels=["mail"], recipients=["a@x"])],
                                evidence_wait_s=5)
    clock2.t = clock.t + 1
    assert again.intake(alert) == 0  # the replayed alert adds nothing
    assert again.evidence(captured()) == 1  # the replayed evidence releases the held row
    asyncio.run(_settle(again))
    (m,) = mail.sent
    assert m.annotated and again.outbox.rows()[0].status == "sent"


def test_a_rule_alert_without_site_gets_its_cameras_site(tmp_path: Path) -> None:
    """The alerts agent raises rule alerts without site_id; the camera's configuration
    names it, and the message (MQTT topic, templates) must not lose it to a None."""
    from schemas.events import CameraConfigured

    mail = FakeChannel("mail")
    n, _, _ = notifier(tmp_path, {"mail": mail},
                       [route("ops", channels=["mail"], recipients=["a@x"])])
    n.apply_config("camera/cam-1", CameraConfigured.create(
        producer="t", camera_id="cam-1", site_id="site-9", edge_id="e", name="c"))
    a = rule_alert()
    a = AlertRaised.create(**{**{f: getattr(a, f) for f in (
        "occurred_at", "alert_id", "incident_key", "camera_id", "zone_id", "rule_id",
        "rule_type", "severity", "first_evidence_at", "last_evidence_at", "version")},
        "producer": "t", "site_id": None})
    n.intake(a)
    (row,) = n.outbox.rows()
    assert row.message["payload"]["site_id"] == "site-9"


def test_templates_render_per_event_type_and_overrides(tmp_path: Path) -> None:
    msg = Message("d1", "AlertEscalated", "e1", {"camera_id": "cam-1", "zone_id": "z",
                                                 "rule_type": "loitering", "level": 2,
                                                 "severity": "critical", "alert_id": "a1"},
                  console_url="http://console/alerts/a1")
    subject, body = Templates().render(msg)
    assert subject == "[ESCALATED L2] loitering at cam-1 / z unacknowledged"
    assert "http://console/alerts/a1" in body
    (tmp_path / "AlertEscalated.subject").write_text("L{{ level }} {{ camera_id }}\n")
    assert Templates(tmp_path).render(msg)[0] == "L2 cam-1"
    (tmp_path / "AlertRaised.txt").write_text("{% if %}")
    with pytest.raises(ConfigError):
        Templates(tmp_path)


def test_home_partition_matches_faust_partitioner() -> None:
    parts = list(range(8))
    for key in (b"cam-1|z1|r1", b"edge|e1|offline", b"x"):
        assert home_partition(key, 8) == DefaultPartitioner()(key, parts, parts)

