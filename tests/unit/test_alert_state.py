"""The alert lifecycle as a pure function of its inputs."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from agents.alert_state import (
    ACKNOWLEDGED,
    OPEN,
    RESOLVED,
    IncidentState,
    Policy,
    apply_command,
    apply_signal,
    escalate,
    incident_key,
    signal_from,
)
from schemas.events import (
    AcknowledgeAlert,
    AlertAcknowledged,
    AlertAssigned,
    AlertCommented,
    AlertEscalated,
    AlertRaised,
    AlertRepeated,
    AlertResolved,
    AssignAlert,
    CommandRejected,
    CommentOnAlert,
    EdgeOffline,
    EdgeOnline,
    ResolveAlert,
    RuleCleared,
    RuleTriggered,
)

T0 = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
POLICY = Policy(cooldown_s=300, escalation_s=900, max_level=2, auto_resolve=True)
KEY = incident_key("cam-1", "z1", "r1")


def trig(eid: str, at: datetime = T0) -> RuleTriggered:
    return RuleTriggered.create(
        producer="t", event_id=eid, occurred_at=at, camera_id="cam-1", zone_id="z1",
        rule_id="r1", rule_type="loitering", severity="warning", value=400, threshold=300,
        track_ids=["t1"], first_evidence_at=at - timedelta(seconds=400), last_evidence_at=at,
        evidence_event_ids=["f1"], frame_ref="s3://snap/1.jpg",
    )


def clear(eid: str, at: datetime) -> RuleCleared:
    return RuleCleared.create(producer="t", event_id=eid, occurred_at=at, camera_id="cam-1",
                              zone_id="z1", rule_id="r1", rule_type="loitering", reason="left")


def raised() -> IncidentState:
    sig = signal_from(trig("e1"))
    assert sig is not None
    return apply_signal(None, sig, POLICY).state


def ack(cid: str, alert_id: str, at: datetime = T0, expected: int | None = None):
    return AcknowledgeAlert.create(producer="api", event_id=cid, occurred_at=at,
                                   alert_id=alert_id, operator="op", expected_version=expected)


def test_incident_key() -> None:
    assert incident_key("c", None, "r") == "c|-|r"
    assert KEY == "cam-1|z1|r1"


def test_trigger_raises_with_derived_ids_and_deadline() -> None:
    sig = signal_from(trig("e1"))
    assert sig is not None
    d = apply_signal(None, sig, POLICY)
    (ev,) = d.events
    assert isinstance(ev, AlertRaised)
    assert ev.incident_key == KEY and ev.version == 1 and ev.snapshot_ref == "s3://snap/1.jpg"
    assert d.state.status == OPEN and d.state.deadline == T0 + timedelta(seconds=900)
    again = apply_signal(None, sig, POLICY).events[0]
    assert again.event_id == ev.event_id and again.alert_id == ev.alert_id  # replay-stable


def test_redelivered_input_is_noop() -> None:
    st = raised()
    sig = signal_from(trig("e1"))
    assert sig is not None
    d = apply_signal(st, sig, POLICY)
    assert d.noop and d.state == st


def test_repeat_while_open_and_in_cooldown_then_new_alert() -> None:
    st = raised()
    s2 = signal_from(trig("e2", T0 + timedelta(seconds=10)))
    assert s2 is not None
    d = apply_signal(st, s2, POLICY)
    (rep,) = d.events
    assert isinstance(rep, AlertRepeated) and rep.occurrences == 2 and rep.version == 2
    c = signal_from(clear("c1", T0 + timedelta(seconds=20)))
    assert c is not None
    d = apply_signal(d.state, c, POLICY)
    assert isinstance(d.events[0], AlertResolved) and d.events[0].automatic
    s3 = signal_from(trig("e3", T0 + timedelta(seconds=100)))  # within cooldown
    assert s3 is not None
    d3 = apply_signal(d.state, s3, POLICY)
    assert isinstance(d3.events[0], AlertRepeated) and d3.state.status == RESOLVED
    s4 = signal_from(trig("e4", T0 + timedelta(seconds=1000)))  # after cooldown
    assert s4 is not None
    d4 = apply_signal(d3.state, s4, POLICY)
    assert isinstance(d4.events[0], AlertRaised)
    assert d4.events[0].alert_id != st.alert_id and d4.state.status == OPEN


def test_clear_without_auto_resolve_keeps_alert_open() -> None:
    sig = signal_from(trig("e1"))
    assert sig is not None
    st = apply_signal(None, sig, Policy(auto_resolve=False)).state
    c = signal_from(clear("c1", T0))
    assert c is not None
    d = apply_signal(st, c, Policy())
    assert d.noop and d.state.status == OPEN


def test_ack_then_resolve() -> None:
    st = raised()
    assert st.alert_id is not None
    d = apply_command(st, ack("k1", st.alert_id, expected=1), KEY)
    (ev,) = d.events
    assert isinstance(ev, AlertAcknowledged) and ev.version == 2 and ev.command_id == "k1"
    assert d.state.status == ACKNOWLEDGED and d.state.deadline is None
    res = ResolveAlert.create(producer="api", event_id="k2", alert_id=st.alert_id,
                              operator="op", resolution="fixed")
    d2 = apply_command(d.state, res, KEY)
    assert isinstance(d2.events[0], AlertResolved) and d2.state.status == RESOLVED


def test_invalid_commands_are_rejected_with_reason() -> None:
    st = raised()
    assert st.alert_id is not None
    cases = [
        (None, ack("x1", "nope"), "unknown alert"),
        (st, ack("x2", "nope"), "unknown alert"),
        (st, ack("x3", st.alert_id, expected=7), "stale version"),
    ]
    for state, cmd, reason in cases:
        (ev,) = apply_command(state, cmd, KEY).events
        assert isinstance(ev, CommandRejected) and reason in ev.reason
        assert ev.causation_id == cmd.event_id
    acked = apply_command(st, ack("a1", st.alert_id), KEY).state
    (ev,) = apply_command(acked, ack("a2", st.alert_id), KEY).events
    assert isinstance(ev, CommandRejected) and "already acknowledged" in ev.reason
    res = ResolveAlert.create(producer="api", event_id="r1", alert_id=st.alert_id, operator="o")
    resolved = apply_command(acked, res, KEY).state
    (ev,) = apply_command(resolved, ack("a3", st.alert_id), KEY).events
    assert isinstance(ev, CommandRejected) and "resolved" in ev.reason


def test_assign_and_comment_are_versioned_idempotent_and_validated() -> None:
    st = raised()
    assert st.alert_id is not None
    assign = AssignAlert.create(producer="api", event_id="as1", alert_id=st.alert_id,
                                operator="olga", assignee="shift-lead")
    d = apply_command(st, assign, KEY)
    (ev,) = d.events
    assert isinstance(ev, AlertAssigned) and ev.assignee == "shift-lead" and ev.version == 2
    assert d.state.assignee == "shift-lead" and d.state.status == OPEN
    assert apply_command(d.state, assign, KEY).noop  # redelivery
    again = AssignAlert.create(producer="api", event_id="as2", alert_id=st.alert_id,
                               operator="olga", assignee="shift-lead")
    (rej,) = apply_command(d.state, again, KEY).events
    assert isinstance(rej, CommandRejected) and "already assigned" in rej.reason
    note = CommentOnAlert.create(producer="api", event_id="cm1", alert_id=st.alert_id,
                                 operator="olga", text="called the guard")
    d2 = apply_command(d.state, note, KEY)
    (ev2,) = d2.events
    assert isinstance(ev2, AlertCommented) and ev2.text == "called the guard"
    assert ev2.version == 3 and d2.state.assignee == "shift-lead"
    empty = CommentOnAlert.create(producer="api", event_id="cm2", alert_id=st.alert_id,
                                  operator="olga", text="  ")
    assert isinstance(apply_command(d2.state, empty, KEY).events[0], CommandRejected)
    # Resolved: a comment is still history, an assignment is refused.
    res = ResolveAlert.create(producer="api", event_id="r9", alert_id=st.alert_id, operator="o")
    resolved = apply_command(d2.state, res, KEY).state
    late = CommentOnAlert.create(producer="api", event_id="cm3", alert_id=st.alert_id,
                                 operator="olga", text="post-incident note")
    assert isinstance(apply_command(resolved, late, KEY).events[0], AlertCommented)
    reassign = AssignAlert.create(producer="api", event_id="as3", alert_id=st.alert_id,
                                  operator="olga", assignee="admin")
    (rej2,) = apply_command(resolved, reassign, KEY).events
    assert isinstance(rej2, CommandRejected) and "resolved" in rej2.reason
    # The state survives its JSON round trip (the alerts table) with the assignee.
    assert IncidentState.from_json(d2.state.to_json()) == d2.state


def test_fifty_concurrent_acks_yield_one_acknowledgement() -> None:
    st = raised()
    assert st.alert_id is not None
    events = []
    for i in range(50):
        d = apply_command(st, ack(f"c{i}", st.alert_id, expected=1), KEY)
        st = d.state
        events.extend(d.events)
    # redelivery of the winning command is a no-op
    assert apply_command(st, ack("c0", st.alert_id, expected=1), KEY).noop
    assert sum(isinstance(e, AlertAcknowledged) for e in events) == 1
    assert sum(isinstance(e, CommandRejected) for e in events) == 49


def test_escalation_levels_once_each_and_late_fire() -> None:
    st = raised()
    assert escalate(st, T0 + timedelta(seconds=899)).noop
    late = T0 + timedelta(hours=5)  # no worker ran at the deadline
    d = escalate(st, late)
    (ev,) = d.events
    assert isinstance(ev, AlertEscalated) and ev.level == 1
    assert ev.deadline_at == T0 + timedelta(seconds=900) and ev.occurred_at == late
    assert escalate(d.state, late).noop  # same tick again: nothing
    assert escalate(st, late).events[0].event_id == ev.event_id  # re-fire after crash: same id
    d2 = escalate(d.state, late + timedelta(seconds=900))
    assert d2.events[0].level == 2
    assert d2.state.deadline is None  # max level reached
    assert escalate(d2.state, late + timedelta(days=1)).noop


def test_acknowledged_alert_does_not_escalate() -> None:
    st = raised()
    assert st.alert_id is not None
    acked = apply_command(st, ack("a", st.alert_id), KEY).state
    assert escalate(acked, T0 + timedelta(hours=1)).noop


def test_state_json_roundtrip() -> None:
    st = raised()
    assert IncidentState.from_json(st.to_json()) == st


def test_health_signals_auto_resolve() -> None:
    off = EdgeOffline.create(producer="h", event_id="o1", occurred_at=T0, edge_id="e1",
                             site_id="s1", last_seen_at=T0, missed_heartbeats=3)
    on = EdgeOnline.create(producer="h", event_id="o2", occurred_at=T0 + timedelta(seconds=5),
                           edge_id="e1", site_id="s1")
    s_off, s_on = signal_from(off), signal_from(on)
    assert s_off is not None and s_on is not None
    assert s_off.incident_key == "edge|e1|offline" == s_on.incident_key
    d = apply_signal(None, s_off, Policy(auto_resolve=False))
    assert isinstance(d.events[0], AlertRaised) and d.events[0].severity == "critical"
    d2 = apply_signal(d.state, s_on, Policy())
    assert isinstance(d2.events[0], AlertResolved) and d2.events[0].automatic


def _stream(kind: str, eid: str, at: datetime):
    from schemas.events import StreamDown, StreamUp

    if kind == "down":
        return StreamDown.create(producer="e", event_id=eid, occurred_at=at, edge_id="e1",
                                 camera_id="cam-9", reason="rtsp timeout")
    return StreamUp.create(producer="e", event_id=eid, occurred_at=at, edge_id="e1",
                           camera_id="cam-9")


def test_stream_down_is_debounced() -> None:
    pol = Policy(escalation_s=900, debounce_s=30)
    down = signal_from(_stream("down", "d1", T0))
    up = signal_from(_stream("up", "u1", T0 + timedelta(seconds=10)))
    assert down is not None and up is not None and down.incident_key == "stream|cam-9|down"
    d = apply_signal(None, down, pol)
    assert d.noop and d.state.pending is not None
    assert d.state.deadline == T0 + timedelta(seconds=30)
    st = IncidentState.from_json(d.state.to_json())
    assert st == d.state
    # flapped back within the debounce: never an alert, nothing left to fire
    d2 = apply_signal(st, up, pol)
    assert d2.noop and d2.state.pending is None and d2.state.deadline is None
    assert escalate(d2.state, T0 + timedelta(hours=1)).noop
    # stays down past the debounce: raised at the debounce deadline, then escalates
    assert escalate(st, T0 + timedelta(seconds=29)).noop
    d3 = escalate(st, T0 + timedelta(seconds=45))
    (raised,) = d3.events
    assert isinstance(raised, AlertRaised) and raised.occurred_at == T0 + timedelta(seconds=30)
    assert d3.state.status == OPEN and d3.state.pending is None
    assert d3.state.deadline == T0 + timedelta(seconds=930)
    assert escalate(d3.state, T0 + timedelta(seconds=45)).noop
    d4 = apply_signal(d3.state, signal_from(_stream("up", "u2", T0 + timedelta(seconds=60))),
                      pol)  # type: ignore[arg-type]
    assert isinstance(d4.events[0], AlertResolved) and d4.events[0].automatic


def test_escalation_window_runs_from_when_the_alert_is_seen() -> None:
    """A rule hit with old event time (backlog, replayed or synthetic scene) still gives
    operators the whole acknowledgement window, counted from the wall clock."""
    sig = signal_from(trig("old", at=T0))
    assert sig is not None
    seen = T0 + timedelta(days=30)
    d = apply_signal(None, sig, POLICY, now=seen)
    assert d.state.deadline == seen + timedelta(seconds=900)
    assert escalate(d.state, seen + timedelta(seconds=899)).noop
    assert not escalate(d.state, seen + timedelta(seconds=900)).noop
    live = apply_signal(None, sig, POLICY, now=T0 - timedelta(seconds=5))
    assert live.state.deadline == T0 + timedelta(seconds=900)


def test_the_rules_own_policy_wins_over_the_site_default() -> None:
    """auto_resolve and cooldown travel on RuleTriggered (schema v2); v1 hits carry None
    and fall back to the site-wide policy."""
    site = Policy(cooldown_s=300, escalation_s=900, max_level=2, auto_resolve=False)
    hit = trig("p1").evolve(auto_resolve=True, cooldown_s=10.0)
    sig = signal_from(hit)
    assert sig is not None and sig.auto_resolve is True and sig.cooldown_s == 10.0
    opened = apply_signal(None, sig, site, now=T0)
    assert opened.state.policy.auto_resolve and opened.state.policy.cooldown_s == 10.0
    clr = signal_from(clear("c1", T0 + timedelta(seconds=30)))
    assert clr is not None
    resolved = apply_signal(opened.state, clr, site)
    assert [type(e).__name__ for e in resolved.events] == ["AlertResolved"]
    # 20 s after resolution is past the rule's 10 s cooldown: a new alert, not a repeat
    again = signal_from(trig("p2", at=T0 + timedelta(seconds=50)).evolve(cooldown_s=10.0))
    assert again is not None
    reopened = apply_signal(resolved.state, again, site, now=T0 + timedelta(seconds=50))
    assert [type(e).__name__ for e in reopened.events] == ["AlertRaised"]
    # a v1 hit (no policy on it) keeps the site default: no auto-resolve
    v1 = apply_signal(None, signal_from(trig("p3")), site, now=T0)  # type: ignore[arg-type]
    assert not v1.state.policy.auto_resolve


def test_rules_own_escalation_delay_and_max_level_win_over_the_policy() -> None:
    """Per-rule escalation_s (RuleConfigured -> RuleTriggered) sets the deadline."""
    from dataclasses import replace as evolve

    sig = signal_from(evolve(trig("e-esc"), escalation_s=60.0, max_escalation_level=1))
    d = apply_signal(None, sig, POLICY)
    assert d.state.deadline == T0 + timedelta(seconds=60)
    up = escalate(d.state, T0 + timedelta(seconds=61))
    assert [type(e).__name__ for e in up.events] == ["AlertEscalated"]
    assert up.state.deadline is None  # max level 1 reached: no further escalation
    plain = apply_signal(None, signal_from(trig("e-plain")), POLICY)
    assert plain.state.deadline == T0 + timedelta(seconds=900)
