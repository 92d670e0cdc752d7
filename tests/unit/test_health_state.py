"""Edge liveness decisions."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from agents.health_state import HealthSettings, check, on_heartbeat
from schemas.events import EdgeHeartbeat, EdgeOffline, EdgeOnline

T0 = datetime(2026, 1, 1, tzinfo=UTC)
CFG = HealthSettings(default_interval_s=30, missed=3)


def hb(eid: str, at: datetime, interval: float = 30) -> EdgeHeartbeat:
    return EdgeHeartbeat.create(
        producer="edge", event_id=eid, occurred_at=at, edge_id="e1", site_id="s1",
        version="1", interval_s=interval, streams=[], disk_free_bytes=1, memory_rss_bytes=1,
        spool_backlog=0, spool_evicted=0,
    )


def test_offline_after_three_missed_then_online() -> None:
    st, evs = on_heartbeat(None, hb("h1", T0), CFG)
    assert evs == []
    assert check(st, T0 + timedelta(seconds=89), CFG)[1] == []
    st2, evs = check(st, T0 + timedelta(seconds=95), CFG)
    (off,) = evs
    assert isinstance(off, EdgeOffline) and off.missed_heartbeats == 3
    assert off.last_seen_at == T0 and st2.offline
    assert check(st2, T0 + timedelta(seconds=500), CFG)[1] == []  # only once
    assert check(st, T0 + timedelta(seconds=95), CFG)[1][0].event_id == off.event_id
    st3, evs = on_heartbeat(st2, hb("h2", T0 + timedelta(seconds=200)), CFG)
    (on,) = evs
    assert isinstance(on, EdgeOnline) and on.offline_since == T0 + timedelta(seconds=30)
    assert not st3.offline


def test_interval_from_heartbeat_and_override() -> None:
    st, _ = on_heartbeat(None, hb("h1", T0, interval=2), CFG)
    assert check(st, T0 + timedelta(seconds=6.5), CFG)[1]
    cfg = HealthSettings(interval_s=1, missed=3)
    st, _ = on_heartbeat(None, hb("h1", T0, interval=30), cfg)
    assert check(st, T0 + timedelta(seconds=3.1), cfg)[1]


def test_duplicate_and_late_heartbeats_are_ignored() -> None:
    st, _ = on_heartbeat(None, hb("h2", T0 + timedelta(seconds=30)), CFG)
    assert on_heartbeat(st, hb("h2", T0 + timedelta(seconds=30)), CFG) == (st, [])
    assert on_heartbeat(st, hb("h1", T0), CFG) == (st, [])
