"""Faust agents of the alert lifecycle: re-key inputs by incident, apply the state machine.

Topology (all keyed by incident key and co-partitioned: alerts, commands, alert-input,
alert-ticks; see schemas.topics.CO_PARTITIONED):

    vigil.scene  (camera_id) ─┐ forward_scene / forward_health: re-key by incident
    vigil.health (edge_id)   ─┴──► <prefix>.alert-input (incident_key)
    <prefix>.alert-input ─┐
    vigil.commands      ──┼──► alert_state (pure) ──► vigil.alerts (incident_key)
    <prefix>.alert-ticks ─┘        ▲ state + deadline index in the "alerts" table
    leader timer ──────────────────┘ one tick per partition

Why a forwarding topic rather than Faust's ``group_by``: group_by creates its repartition
topic itself (we run with ``topic_allow_declare=False``, so topics come from the catalog)
and names it after the app and agent; an explicit catalog topic is visible, has a
retention, and its partition count is checked with the other co-partitioned topics.

Order of effects per input (at-least-once, no exactly-once): compute the decision, send
its events and *wait for the broker's ack*, then write the state. A crash before the
state write replays the input, which produces the same events with the same derived ids
(downstream dedups by id); a crash after it finds the input id in the state's processed
set and does nothing. The three handlers share one lock so that the read-send-write of an
incident is never interleaved with another input of the same incident.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import faust
from prometheus_client import Counter, Histogram

from agents.alert_state import (
    COMMAND_TYPES,
    Decision,
    IncidentState,
    apply_command,
    apply_signal,
    escalate,
    home_partition,
    signal_from,
)
from agents.app import app, topics
from agents.codec import Undecodable
from agents.dlq import dead_letter
from agents.escalation import due_incidents, get_alerts_settings, index_key, set_deadline
from agents.ticks import (
    parse_tick,
    send_ticks,
    state_table,
)
from schemas.events import (
    AlertEscalated,
    AlertRaised,
    RuleCleared,
    RuleTriggered,
)
from vigil.logs import event_context

log = logging.getLogger(__name__)

cfg = get_alerts_settings()

#: incident_key -> IncidentState JSON, and "deadlines-<p>" -> {incident_key: due ISO};
#: declared (changelog created, partitions read from the broker) at worker start-up.
alerts_table = state_table("alerts", "alerts")

#: Serialises the handlers: one incident's read-send-write is never interleaved.
_lock = asyncio.Lock()

#: Wall-clock time from the frame that made the rule fire (the alert's last evidence) to
#: the AlertRaised event being acknowledged by Kafka: the frame->alert SLO
#: (infra/prometheus/rules/vigil.rules.yml, VigilFrameToAlertSlowBurn).
FRAME_TO_ALERT = Histogram(
    "vigil_alert_frame_to_alert_seconds", "evidence frame time to AlertRaised acknowledged",
    buckets=(0.25, 0.5, 1, 2, 3, 5, 10, 20, 30, 60, 120, 300))
ALERTS_RAISED = Counter("vigil_alerts_raised_total", "AlertRaised events published",
                        ["severity", "rule_type"])
ALERTS_ESCALATED = Counter("vigil_alerts_escalated_total", "AlertEscalated events published",
                           ["level"])

HEALTH_TYPES = ("EdgeOffline", "EdgeOnline", "StreamDown", "StreamUp", "InferenceDegraded",
                "InferenceRecovered")


def _key(event: faust.types.EventT) -> str:
    k = event.key
    return k.decode() if isinstance(k, bytes | bytearray) else str(k or "")


async def _apply(key: str, partition: int,
                 decide: Callable[[IncidentState | None], Decision]) -> Decision:
    """Decide, publish (acked), then persist state and the partition's deadline index."""
    raw = alerts_table.get(key.encode())
    state = IncidentState.from_json(raw) if raw else None
    d = decide(state)
    for ev in d.events:
        fut = await topics.alerts.send(key=key.encode(), value=ev, force=True)
        await fut
        _observe(ev)
    if d.state != state:
        alerts_table[key.encode()] = d.state.to_json()
    old_due = state.deadline if state else None
    if d.state.deadline != old_due:
        ik = index_key(partition).encode()
        alerts_table[ik] = set_deadline(alerts_table.get(ik) or {}, key, d.state.deadline)
    return d


def _observe(ev: object) -> None:
    if isinstance(ev, AlertRaised):
        ALERTS_RAISED.labels(ev.severity, ev.rule_type).inc()
        age = (datetime.now(UTC) - ev.last_evidence_at).total_seconds()
        FRAME_TO_ALERT.observe(max(0.0, age))
    elif isinstance(ev, AlertEscalated):
        ALERTS_ESCALATED.labels(str(getattr(ev, "level", ""))).inc()


# ---------------------------------------------------------------------------- re-keying


async def _forward(stream: Any, stage: str, kinds: tuple[type, ...] | tuple[str, ...]) -> None:
    async for event in stream.events():
        value = event.value
        try:
            if isinstance(value, Undecodable):
                await dead_letter(value, value.reason, stage, event)
                continue
            relevant = (isinstance(value, kinds) if isinstance(kinds[0], type)
                        else type(value).__name__ in kinds)
            if not relevant:
                continue
            sig = signal_from(value)
            if sig is None:
                continue
            fut = await topics.alert_input.send(key=sig.incident_key.encode(), value=value,
                                                force=True)
            await fut
        except Exception as exc:
            log.exception("%s failed", stage)
            await dead_letter(value, f"{type(exc).__name__}: {exc}", stage, event)


@app.agent(topics.scene, concurrency=1)
async def forward_scene(stream: Any) -> None:
    """Rule hits and clears, from camera-keyed scene to incident-keyed alert input."""
    await _forward(stream, "alerts.forward_scene", (RuleTriggered, RuleCleared))


@app.agent(topics.health, concurrency=1)
async def forward_health(stream: Any) -> None:
    """Health events become alerts too (edge offline, stream down, inference degraded)."""
    await _forward(stream, "alerts.forward_health", HEALTH_TYPES)


# ---------------------------------------------------------------------------- lifecycle


@app.agent(topics.alert_input, concurrency=1)
async def alert_inputs(stream: Any) -> None:
    async for event in stream.events():
        value = event.value
        with event_context(value):
            await _alert_input(value, event)


async def _alert_input(value: Any, event: Any) -> None:
    try:
        if isinstance(value, Undecodable):
            await dead_letter(value, value.reason, "alerts.input", event)
            return
        sig = signal_from(value)
        if sig is None:
            await dead_letter(value, f"not an alert input: {type(value).__name__}",
                              "alerts.input", event)
            return
        policy = cfg.policy_for(sig.severity, sig.rule_type)
        async with _lock:
            await _apply(sig.incident_key, event.message.partition,
                         lambda st, s=sig, p=policy: apply_signal(st, s, p, datetime.now(UTC)))
    except Exception as exc:
        log.exception("alert input failed")
        await dead_letter(value, f"{type(exc).__name__}: {exc}", "alerts.input", event)


@app.agent(topics.commands, concurrency=1)
async def alert_commands(stream: Any) -> None:
    async for event in stream.events():
        value = event.value
        try:
            if isinstance(value, Undecodable):
                await dead_letter(value, value.reason, "alerts.commands", event)
                continue
            if not isinstance(value, COMMAND_TYPES):
                await dead_letter(value, f"unknown command {type(value).__name__}",
                                  "alerts.commands", event)
                continue
            key = _key(event)
            home = home_partition(key.encode(), alerts_table.partitions)
            if event.message.partition != home:
                # mis-partitioned by the producer: re-route to the incident's partition
                log.warning("command %s for %s on partition %s, re-routed to %s",
                            value.event_id, key, event.message.partition, home)
                fut = await topics.commands.send(key=key.encode(), value=value,
                                                 partition=home, force=True)
                await fut
                continue
            async with _lock:
                await _apply(key, event.message.partition,
                             lambda st, c=value, k=key: apply_command(st, c, k))
        except Exception as exc:
            log.exception("command failed")
            await dead_letter(value, f"{type(exc).__name__}: {exc}", "alerts.commands", event)


@app.agent(topics.alert_ticks, concurrency=1)
async def alert_ticks(stream: Any) -> None:
    """Apply every escalation due in this tick's partition."""
    async for event in stream.events():
        value = event.value
        try:
            now = parse_tick(value)
            p = event.message.partition
            async with _lock:
                index = alerts_table.get(index_key(p).encode()) or {}
                for key in due_incidents(index, now):
                    if alerts_table.get(key.encode()) is None:  # state gone: drop the entry
                        ik = index_key(p).encode()
                        alerts_table[ik] = set_deadline(alerts_table.get(ik) or {}, key, None)
                        continue
                    await _apply(key, p, lambda st, n=now: escalate(st, n))  # type: ignore[arg-type]
        except Exception as exc:
            log.exception("alert tick failed")
            await dead_letter(value, f"{type(exc).__name__}: {exc}", "alerts.ticks", event)


@app.timer(interval=cfg.tick_s, on_leader=True)
async def alert_clock() -> None:
    """Leader only: announce wall-clock time to every alerts partition."""
    try:
        await send_ticks(topics.alert_ticks, alerts_table.partitions)
    except Exception:  # a missed tick is caught up by the next one
        log.exception("alert tick send failed")
