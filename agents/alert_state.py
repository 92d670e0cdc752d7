"""The alert state machine of one incident: pure, deterministic, no I/O.

One incident (``camera|zone|rule``, or ``edge|<id>|offline`` for health alerts) has at most
one current alert. Its life: NEW (``open``) -> ACKNOWLEDGED -> RESOLVED, with escalation
levels 1..max while it is open and unacknowledged. Every function here takes the current
`IncidentState` (or None) and one input, and returns a `Decision`: the new state and the
events to publish. The Faust agent only persists the state and sends the events.

Why pure: replaying the same inputs must give the same events with the same ids (ids are
derived from the input ids with `derived_event_id`), and every rule of the lifecycle can be
unit-tested without Kafka.

At-least-once: the state remembers the ids of the last `PROCESSED_MEMORY` inputs it applied
(triggers, clears, commands); a redelivered input is a no-op. Escalation needs no input id:
it is guarded by the state's own deadline and level, so applying a tick twice is harmless.

Time: triggers and clears carry event time (`occurred_at`), commands carry the operator's
wall-clock time; cooldown and the first escalation deadline are computed from those, so
the decision is a function of the inputs. Only `escalate` takes a wall-clock `now`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any, Final, Literal

from aiokafka.partitioner import murmur2

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
    Event,
    InferenceDegraded,
    InferenceRecovered,
    ResolveAlert,
    RuleCleared,
    RuleTriggered,
    RuleType,
    Severity,
    StreamDown,
    StreamUp,
    derived_event_id,
)

PRODUCER = "vigil-alerts/1"
#: How many input ids an incident remembers for redelivery dedup. Redeliveries come from
#: an uncommitted batch after a crash, so they are recent; 256 is far more than a batch
#: of one incident.
PROCESSED_MEMORY = 256

#: An incident's alert: open (NEW in the API's words), acknowledged, resolved; the read
#: model shows these values.
AlertStatus = Literal["open", "acknowledged", "resolved"]
OPEN: Final = "open"
ACKNOWLEDGED: Final = "acknowledged"
RESOLVED: Final = "resolved"


def incident_key(camera_id: str, zone_id: str | None, rule_id: str) -> str:
    """The Kafka key of everything about one incident (alerts, commands, alert input)."""
    return f"{camera_id}|{zone_id or '-'}|{rule_id}"


def home_partition(key: bytes, partitions: int) -> int:
    """The partition Faust/aiokafka (murmur2, Java-compatible) assigns to `key`.

    librdkafka's default partitioner (CRC32) puts the same key elsewhere, so a command
    produced by a confluent-kafka client without ``partitioner=murmur2_random`` lands on a
    partition that does not hold the incident's state (the commands agent re-routes it).
    """
    return (murmur2(key) & 0x7FFFFFFF) % partitions


@dataclass(frozen=True, slots=True)
class Policy:
    """Per-incident knobs, captured when the alert is raised (a later config change does
    not rewrite a running alert's escalation schedule)."""

    cooldown_s: float = 300.0
    escalation_s: float = 900.0
    max_level: int = 3
    auto_resolve: bool = False
    #: a raise must persist this long (not cleared meanwhile) before it becomes an alert;
    #: used for flapping signals such as StreamDown. 0 = raise at once.
    debounce_s: float = 0.0


@dataclass(frozen=True, slots=True)
class Signal:
    """A trigger or clear of one incident, normalised from a rule hit or a health event."""

    kind: Literal["raise", "clear"]
    incident_key: str
    event_id: str
    occurred_at: datetime
    camera_id: str
    zone_id: str | None
    rule_id: str
    rule_type: RuleType
    severity: Severity = "warning"
    site_id: str | None = None
    first_evidence_at: datetime | None = None
    last_evidence_at: datetime | None = None
    snapshot_ref: str | None = None
    reason: str = ""
    correlation_id: str | None = None
    #: health alerts always auto-resolve; rule alerts follow their rule, else the policy.
    auto_resolve: bool | None = None
    #: the rule's own cooldown (seconds), else the policy's.
    cooldown_s: float | None = None
    #: the rule's own escalation delay and highest level, else the policy's.
    escalation_s: float | None = None
    max_level: int | None = None

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        for k in ("occurred_at", "first_evidence_at", "last_evidence_at"):
            d[k] = d[k].isoformat() if d[k] is not None else None
        return d

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Signal:
        d = dict(d)
        for k in ("occurred_at", "first_evidence_at", "last_evidence_at"):
            if d.get(k) is not None:
                d[k] = datetime.fromisoformat(d[k])
        return cls(**d)


def signal_from(event: Event) -> Signal | None:
    """Normalise an alert input; None for events that are not alert inputs."""
    corr = event.correlation_id or event.event_id
    common: dict[str, Any] = {"event_id": event.event_id, "occurred_at": event.occurred_at,
                              "correlation_id": corr}
    if isinstance(event, RuleTriggered):
        return Signal(
            kind="raise", incident_key=incident_key(event.camera_id, event.zone_id,
                                                    event.rule_id),
            camera_id=event.camera_id, zone_id=event.zone_id, rule_id=event.rule_id,
            rule_type=event.rule_type, severity=event.severity,
            first_evidence_at=event.first_evidence_at, last_evidence_at=event.last_evidence_at,
            snapshot_ref=event.frame_ref, auto_resolve=event.auto_resolve,
            cooldown_s=event.cooldown_s, escalation_s=event.escalation_s,
            max_level=event.max_escalation_level, **common,
        )
    if isinstance(event, RuleCleared):
        return Signal(
            kind="clear", incident_key=incident_key(event.camera_id, event.zone_id,
                                                    event.rule_id),
            camera_id=event.camera_id, zone_id=event.zone_id, rule_id=event.rule_id,
            rule_type=event.rule_type, reason=event.reason, **common,
        )
    if isinstance(event, EdgeOffline | EdgeOnline):
        raising = isinstance(event, EdgeOffline)
        return Signal(
            kind="raise" if raising else "clear",
            incident_key=f"edge|{event.edge_id}|offline",
            camera_id=f"edge:{event.edge_id}", zone_id=None, rule_id="edge_offline",
            rule_type="edge_offline", severity="critical", site_id=event.site_id,
            first_evidence_at=event.last_seen_at if isinstance(event, EdgeOffline) else None,
            reason="edge back online", auto_resolve=True, **common,
        )
    if isinstance(event, StreamDown | StreamUp):
        raising = isinstance(event, StreamDown)
        return Signal(
            kind="raise" if raising else "clear",
            incident_key=f"stream|{event.camera_id}|down",
            camera_id=event.camera_id, zone_id=None, rule_id="stream_down",
            rule_type="stream_down", severity="warning",
            reason=event.reason if isinstance(event, StreamDown) else "stream up",
            auto_resolve=True, **common,
        )
    if isinstance(event, InferenceDegraded | InferenceRecovered):
        raising = isinstance(event, InferenceDegraded)
        return Signal(
            kind="raise" if raising else "clear",
            incident_key=f"inference|{event.worker_id}|degraded",
            camera_id=f"worker:{event.worker_id}", zone_id=None, rule_id="inference_degraded",
            rule_type="inference_degraded", severity="critical",
            reason=(event.reason if isinstance(event, InferenceDegraded)
                    else "inference recovered"),
            auto_resolve=True, **common,
        )
    return None


@dataclass(frozen=True, slots=True)
class IncidentState:
    """What the alerts table stores per incident key (JSON via `to_json`/`from_json`)."""

    incident_key: str
    alert_id: str | None = None
    status: AlertStatus | None = None  # None: never alerted
    version: int = 0
    level: int = 0
    occurrences: int = 0
    severity: Severity = "warning"
    raised_at: datetime | None = None
    resolved_at: datetime | None = None
    last_evidence_at: datetime | None = None
    #: when the next escalation is due (None: nothing scheduled).
    deadline: datetime | None = None
    policy: Policy = field(default_factory=Policy)
    correlation_id: str | None = None
    processed: tuple[str, ...] = ()
    #: a debounced raise waiting for `deadline` (Signal JSON); None when nothing pending.
    pending: dict[str, Any] | None = None
    #: who the alert is assigned to (AssignAlert); None = nobody.
    assignee: str | None = None

    # ------------------------------------------------------------------ persistence
    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        for k in ("raised_at", "resolved_at", "last_evidence_at", "deadline"):
            v = getattr(self, k)
            d[k] = v.isoformat() if v is not None else None
        d["processed"] = list(self.processed)
        return d

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> IncidentState:
        d = dict(d)
        for k in ("raised_at", "resolved_at", "last_evidence_at", "deadline"):
            if d.get(k) is not None:
                d[k] = datetime.fromisoformat(d[k])
        d["policy"] = Policy(**d.get("policy", {}))
        d["processed"] = tuple(d.get("processed", ()))
        return cls(**d)

    # ------------------------------------------------------------------ helpers
    def seen(self, input_id: str) -> bool:
        return input_id in self.processed

    def remember(self, input_id: str) -> IncidentState:
        return replace(self, processed=(*self.processed, input_id)[-PROCESSED_MEMORY:])

    @property
    def is_active(self) -> bool:
        return self.status in (OPEN, ACKNOWLEDGED)


@dataclass(frozen=True, slots=True)
class Decision:
    """The outcome of one input: the state to store and the events to publish, in order."""

    state: IncidentState
    events: list[Event]

    @property
    def noop(self) -> bool:
        return not self.events


def _d(seconds: float) -> timedelta:
    return timedelta(seconds=seconds)


# ---------------------------------------------------------------------------- inputs


def apply_signal(state: IncidentState | None, sig: Signal, policy: Policy,
                 now: datetime | None = None) -> Decision:
    """A rule hit or clear (or a health raise/clear) for one incident.

    `now` is the wall-clock time the worker sees the signal. The first escalation
    deadline runs from the later of the signal's event time and `now`: operators get
    their full acknowledgement window from when the alert could first appear on screen,
    even when the rule stage was catching up on old event time (a backlog, a replayed
    or synthetic scene)."""
    st = state or IncidentState(incident_key=sig.incident_key)
    if st.seen(sig.event_id):
        return Decision(st, [])
    if sig.kind == "raise":
        return _raise(st, sig, policy, now)
    return _clear(st, sig)


def _raise(st: IncidentState, sig: Signal, policy: Policy,
           now: datetime | None = None) -> Decision:
    last = sig.last_evidence_at or sig.occurred_at
    in_cooldown = (
        st.status == RESOLVED
        and st.resolved_at is not None
        and sig.occurred_at < st.resolved_at + _d(st.policy.cooldown_s)
    )
    if st.alert_id is not None and (st.is_active or in_cooldown):
        version = st.version + 1
        ev = AlertRepeated.create(
            producer=PRODUCER, event_id=derived_event_id("AlertRepeated", sig.event_id),
            occurred_at=sig.occurred_at, causation_id=sig.event_id,
            correlation_id=st.correlation_id, alert_id=st.alert_id,
            incident_key=st.incident_key, occurrences=st.occurrences + 1,
            last_evidence_at=last, version=version,
        )
        new = replace(st, version=version, occurrences=st.occurrences + 1,
                      last_evidence_at=max(last, st.last_evidence_at or last))
        return Decision(new.remember(sig.event_id), [ev])
    if sig.auto_resolve is not None:
        policy = replace(policy, auto_resolve=sig.auto_resolve)
    if sig.cooldown_s is not None:
        policy = replace(policy, cooldown_s=sig.cooldown_s)
    if sig.escalation_s is not None:
        policy = replace(policy, escalation_s=sig.escalation_s)
    if sig.max_level is not None:
        policy = replace(policy, max_level=sig.max_level)
    if policy.debounce_s > 0:
        if st.pending is not None:  # already waiting: the first raise keeps its time
            return Decision(st.remember(sig.event_id), [])
        pend = replace(st, pending={"signal": sig.to_json(), "policy": asdict(policy)},
                       deadline=sig.occurred_at + _d(policy.debounce_s))
        return Decision(pend.remember(sig.event_id), [])
    return _open(st, sig, policy, sig.occurred_at, now)


def _open(st: IncidentState, sig: Signal, policy: Policy, at: datetime,
          now: datetime | None = None) -> Decision:
    """A new alert for the incident, raised at `at` (the signal's time, or the end of its
    debounce); escalation runs from the later of `at` and the wall-clock `now`."""
    last = sig.last_evidence_at or sig.occurred_at
    alert_id = derived_event_id("alert", sig.event_id)
    ev = AlertRaised.create(
        producer=PRODUCER, event_id=derived_event_id("AlertRaised", sig.event_id),
        occurred_at=at, causation_id=sig.event_id,
        correlation_id=sig.correlation_id, alert_id=alert_id, incident_key=sig.incident_key,
        site_id=sig.site_id, camera_id=sig.camera_id, zone_id=sig.zone_id, rule_id=sig.rule_id,
        rule_type=sig.rule_type, severity=sig.severity,
        first_evidence_at=sig.first_evidence_at or sig.occurred_at, last_evidence_at=last,
        snapshot_ref=sig.snapshot_ref, version=1,
    )
    new = IncidentState(
        incident_key=sig.incident_key, alert_id=alert_id, status=OPEN, version=1, level=0,
        occurrences=1, severity=sig.severity, raised_at=at, last_evidence_at=last,
        deadline=(max(at, now or at) + _d(policy.escalation_s)) if policy.max_level > 0
        else None,
        policy=policy, correlation_id=sig.correlation_id, processed=st.processed,
    )
    return Decision(new.remember(sig.event_id), [ev])


def _clear(st: IncidentState, sig: Signal) -> Decision:
    if st.pending is not None:  # cleared within the debounce: it never was an alert
        return Decision(replace(st, pending=None, deadline=None).remember(sig.event_id), [])
    if not st.is_active or not st.policy.auto_resolve or st.alert_id is None:
        return Decision(st.remember(sig.event_id), [])
    version = st.version + 1
    ev = AlertResolved.create(
        producer=PRODUCER, event_id=derived_event_id("AlertResolved", sig.event_id),
        occurred_at=sig.occurred_at, causation_id=sig.event_id,
        correlation_id=st.correlation_id, alert_id=st.alert_id, incident_key=st.incident_key,
        operator=None, resolution=sig.reason or "condition cleared", automatic=True,
        command_id=None, version=version,
    )
    new = replace(st, status=RESOLVED, version=version, resolved_at=sig.occurred_at,
                  deadline=None)
    return Decision(new.remember(sig.event_id), [ev])


# ---------------------------------------------------------------------------- commands


#: Every operator command the alerts agent applies.
Command = AcknowledgeAlert | ResolveAlert | AssignAlert | CommentOnAlert
COMMAND_TYPES = (AcknowledgeAlert, ResolveAlert, AssignAlert, CommentOnAlert)


def _reject(st: IncidentState, cmd: Command, reason: str) -> Decision:
    ev = CommandRejected.create(
        producer=PRODUCER, event_id=derived_event_id("CommandRejected", cmd.event_id),
        occurred_at=cmd.occurred_at, causation_id=cmd.event_id,
        correlation_id=cmd.correlation_id or cmd.event_id, command_id=cmd.event_id,
        command_type=type(cmd).__name__, alert_id=cmd.alert_id, operator=cmd.operator,
        reason=reason,
    )
    return Decision(st.remember(cmd.event_id), [ev])


def apply_command(state: IncidentState | None, cmd: Command, key: str) -> Decision:
    """Validate and apply an operator command; an invalid one becomes CommandRejected.

    Never raises for a bad command: the operator's view may be stale, the key may be
    wrong, two operators may race. The partition orders them, and the first valid one wins.
    """
    st = state or IncidentState(incident_key=key)
    if st.seen(cmd.event_id):
        return Decision(st, [])
    if st.alert_id is None or st.alert_id != cmd.alert_id:
        return _reject(st, cmd, f"unknown alert {cmd.alert_id} for incident {key}")
    expected = getattr(cmd, "expected_version", None)
    if expected is not None and expected != st.version:
        return _reject(st, cmd, f"stale version: expected {expected}, current {st.version}")
    version = st.version + 1
    if isinstance(cmd, CommentOnAlert):
        # A note is history, not state: allowed on a resolved alert too (post-incident).
        if not cmd.text.strip():
            return _reject(st, cmd, "a comment needs text")
        note = AlertCommented.create(
            producer=PRODUCER, event_id=derived_event_id("AlertCommented", cmd.event_id),
            occurred_at=cmd.occurred_at, causation_id=cmd.event_id,
            correlation_id=st.correlation_id, alert_id=st.alert_id, incident_key=st.incident_key,
            operator=cmd.operator, text=cmd.text, command_id=cmd.event_id, version=version)
        return Decision(replace(st, version=version).remember(cmd.event_id), [note])
    if st.status == RESOLVED:
        return _reject(st, cmd, "alert is already resolved")
    if isinstance(cmd, AssignAlert):
        assignee = cmd.assignee.strip()
        if assignee == (st.assignee or ""):
            return _reject(st, cmd, f"alert is already assigned to {assignee!r}"
                           if assignee else "alert is not assigned")
        assigned = AlertAssigned.create(
            producer=PRODUCER, event_id=derived_event_id("AlertAssigned", cmd.event_id),
            occurred_at=cmd.occurred_at, causation_id=cmd.event_id,
            correlation_id=st.correlation_id, alert_id=st.alert_id, incident_key=st.incident_key,
            operator=cmd.operator, assignee=assignee, command_id=cmd.event_id, version=version)
        return Decision(replace(st, version=version, assignee=assignee or None)
                        .remember(cmd.event_id), [assigned])
    if isinstance(cmd, AcknowledgeAlert):
        if st.status == ACKNOWLEDGED:
            return _reject(st, cmd, "alert is already acknowledged")
        ev: Event = AlertAcknowledged.create(
            producer=PRODUCER, event_id=derived_event_id("AlertAcknowledged", cmd.event_id),
            occurred_at=cmd.occurred_at, causation_id=cmd.event_id,
            correlation_id=st.correlation_id, alert_id=st.alert_id, incident_key=st.incident_key,
            operator=cmd.operator, note=cmd.note, command_id=cmd.event_id, version=version,
        )
        new = replace(st, status=ACKNOWLEDGED, version=version, deadline=None)
    else:
        ev = AlertResolved.create(
            producer=PRODUCER, event_id=derived_event_id("AlertResolved", cmd.event_id),
            occurred_at=cmd.occurred_at, causation_id=cmd.event_id,
            correlation_id=st.correlation_id, alert_id=st.alert_id, incident_key=st.incident_key,
            operator=cmd.operator, resolution=cmd.resolution, automatic=False,
            command_id=cmd.event_id, version=version,
        )
        new = replace(st, status=RESOLVED, version=version, resolved_at=cmd.occurred_at,
                      deadline=None)
    return Decision(new.remember(cmd.event_id), [ev])


# ---------------------------------------------------------------------------- escalation


def escalate(state: IncidentState, now: datetime) -> Decision:
    """Apply the escalation that is due at `now` (wall clock), if any.

    Guarded by the state's own deadline and level, so a duplicate or late tick is a no-op
    and a tick after an outage fires the overdue step once, with ``deadline_at`` = when it
    was due and ``occurred_at`` = now. The next step is scheduled from `now`, not from the
    missed deadline, so an outage does not make every level fire at once on recovery.
    The event id is derived from (alert, level): a re-fire after a crash between send and
    state write repeats the same id, which downstream dedups.

    The same clock ends a debounce: a pending raise whose deadline passed becomes an
    alert raised at the deadline (deterministic: a function of the input and the policy).
    """
    if state.pending is not None:
        if state.deadline is None or now < state.deadline:
            return Decision(state, [])
        sig = Signal.from_json(state.pending["signal"])
        policy = replace(Policy(**state.pending["policy"]), debounce_s=0.0)
        d = _open(replace(state, pending=None), sig, policy, state.deadline)
        return Decision(replace(d.state, pending=None), d.events)
    if (
        state.status != OPEN
        or state.deadline is None
        or state.alert_id is None
        or now < state.deadline
        or state.level >= state.policy.max_level
    ):
        return Decision(state, [])
    level = state.level + 1
    version = state.version + 1
    ev = AlertEscalated.create(
        producer=PRODUCER, event_id=derived_event_id("AlertEscalated", state.alert_id, level),
        occurred_at=now, causation_id=state.alert_id, correlation_id=state.correlation_id,
        alert_id=state.alert_id, incident_key=state.incident_key, level=level,
        deadline_at=state.deadline, version=version,
    )
    nxt = now + _d(state.policy.escalation_s) if level < state.policy.max_level else None
    return Decision(replace(state, level=level, version=version, deadline=nxt), [ev])
