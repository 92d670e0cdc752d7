"""Escalation deadline bookkeeping and the alert knobs (``VIGIL_ALERTS_*``).

docs/architecture.md (Faust): a timer cannot write a table and runs on every worker
unless ``on_leader=True``, and leadership is not fenced. So deadlines live in the alerts
table, and a leader-only timer only *announces the time* by sending one tick per partition
of the alert-ticks topic (co-partitioned with alerts/commands/alert-input). The alerts
agent that owns partition p reads tick p and escalates what is due there.

How tick p finds the deadlines of partition p: Faust writes a table entry to the changelog
partition of the event being processed, and every input of an incident arrives on the
incident's partition. So the agent keeps, next to each incident's state, one index entry
``deadlines-<p>`` = {incident_key: due} written while processing events of partition p.
That entry lives in changelog partition p and moves with partition p on a rebalance or
restart: whoever owns p after recovery sees every pending deadline of p, including ones
that passed while no worker was running (they fire on the first tick).

This module is the pure part: the index operations and the settings.
"""

from __future__ import annotations

from datetime import datetime
from functools import cache

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from agents.alert_state import Policy
from vigil.settings import load_component_settings

#: {incident_key: ISO-8601 due time}; JSON-serialisable as stored in the table.
DeadlineIndex = dict[str, str]


def index_key(partition: int) -> str:
    """Table key of partition `partition`'s deadline index."""
    return f"deadlines-{partition}"


def set_deadline(index: DeadlineIndex, incident: str, due: datetime | None) -> DeadlineIndex:
    """A copy of `index` with the incident's deadline set (or removed when None)."""
    new = dict(index)
    if due is None:
        new.pop(incident, None)
    else:
        new[incident] = due.isoformat()
    return new


def due_incidents(index: DeadlineIndex, now: datetime) -> list[str]:
    """Incidents whose deadline is at or before `now`, earliest first."""
    parsed = [(datetime.fromisoformat(v), k) for k, v in index.items()]
    return [k for due, k in sorted(parsed) if due <= now]


class AlertsSettings(BaseSettings):
    """Alert lifecycle knobs; per-severity escalation overrides the default when set.

    These are the site-wide policy. A rule's own values (RuleConfigured.cooldown_s,
    escalation_s, max_escalation_level, auto_resolve) travel on its RuleTriggered and win
    over them (alert_state.apply_signal).
    """

    model_config = SettingsConfigDict(env_prefix="VIGIL_ALERTS_", extra="forbid", frozen=True)

    cooldown_s: float = Field(300.0, ge=0)
    escalation_s: float = Field(900.0, gt=0)
    escalation_info_s: float | None = Field(None, gt=0)
    escalation_warning_s: float | None = Field(None, gt=0)
    escalation_critical_s: float | None = Field(None, gt=0)
    max_level: int = Field(3, ge=0, le=10)
    auto_resolve: bool = False
    #: a StreamDown must last this long (no StreamUp meanwhile) to become an alert.
    stream_debounce_s: float = Field(30.0, ge=0)
    #: how often the leader announces the time on alert-ticks (escalation resolution).
    tick_s: float = Field(5.0, gt=0)

    def policy_for(self, severity: str, rule_type: str = "") -> Policy:
        per = {
            "info": self.escalation_info_s,
            "warning": self.escalation_warning_s,
            "critical": self.escalation_critical_s,
        }.get(severity)
        return Policy(
            cooldown_s=self.cooldown_s,
            escalation_s=per or self.escalation_s,
            max_level=self.max_level,
            auto_resolve=self.auto_resolve,
            debounce_s=self.stream_debounce_s if rule_type == "stream_down" else 0.0,
        )


@cache
def get_alerts_settings() -> AlertsSettings:
    return load_component_settings(AlertsSettings, "VIGIL_ALERTS_")
