"""Deadline index bookkeeping and per-severity policy."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from agents.escalation import AlertsSettings, due_incidents, index_key, set_deadline

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def test_index_set_remove_and_due_order() -> None:
    idx = set_deadline({}, "b", T0 + timedelta(seconds=20))
    idx = set_deadline(idx, "a", T0 + timedelta(seconds=10))
    idx = set_deadline(idx, "c", T0 + timedelta(seconds=99))
    assert due_incidents(idx, T0) == []
    assert due_incidents(idx, T0 + timedelta(seconds=30)) == ["a", "b"]
    idx2 = set_deadline(idx, "a", None)
    assert "a" in idx and "a" not in idx2  # copies, never mutates
    assert set_deadline(idx2, "zz", None) == idx2
    assert index_key(3) == "deadlines-3"


def test_policy_per_severity(monkeypatch) -> None:
    monkeypatch.setenv("VIGIL_ALERTS_ESCALATION_S", "60")
    monkeypatch.setenv("VIGIL_ALERTS_ESCALATION_CRITICAL_S", "5")
    s = AlertsSettings()
    assert s.policy_for("critical").escalation_s == 5
    assert s.policy_for("warning").escalation_s == 60
    assert s.policy_for("info").cooldown_s == 300
