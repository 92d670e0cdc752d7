"""Edge liveness: pure logic for the site-health agent, plus its knobs (``VIGIL_HEALTH_*``).

An edge is offline when `missed` heartbeat intervals passed since its last heartbeat
(interval from the heartbeat itself, 30 s by default, so 90 s). Noticing that *nothing*
arrived needs a clock: the leader's ticks (see agents/site_health.py) bring wall-clock
`now` to the partition that owns the edge, and `check` decides. The next heartbeat brings
it back online.

Event ids are derived from inputs (the offline one from the edge and the last-seen
heartbeat, the online one from the heartbeat that ended the outage), so a re-run after a
crash repeats the same ids and downstream dedups them.

Clock note: `last_seen_at` is the heartbeat's event time (edge clock) and `now` the
leader's clock; skew between them shortens or lengthens the grace by the skew, which is
small next to 90 s with NTP.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from datetime import datetime, timedelta
from functools import cache
from typing import Any

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from schemas.events import EdgeHeartbeat, EdgeOffline, EdgeOnline, derived_event_id
from vigil.settings import load_component_settings

#: what the health agent publishes about an edge (keyed by edge id)
EdgeEvent = EdgeOnline | EdgeOffline

PRODUCER = "vigil-health/1"


class HealthSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="VIGIL_HEALTH_", extra="forbid", frozen=True)

    #: used when a heartbeat does not state its interval (interval_s <= 0).
    default_interval_s: float = Field(30.0, gt=0)
    #: overrides every heartbeat's interval (tests shorten it).
    interval_s: float | None = Field(None, gt=0)
    missed: int = Field(3, ge=1)
    tick_s: float = Field(5.0, gt=0)


@cache
def get_health_settings() -> HealthSettings:
    return load_component_settings(HealthSettings, "VIGIL_HEALTH_")


@dataclass(frozen=True, slots=True)
class EdgeState:
    edge_id: str
    site_id: str
    last_seen_at: datetime
    last_heartbeat_id: str
    interval_s: float
    offline: bool = False
    offline_since: datetime | None = None

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["last_seen_at"] = self.last_seen_at.isoformat()
        d["offline_since"] = self.offline_since.isoformat() if self.offline_since else None
        return d

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> EdgeState:
        d = dict(d)
        d["last_seen_at"] = datetime.fromisoformat(d["last_seen_at"])
        if d.get("offline_since"):
            d["offline_since"] = datetime.fromisoformat(d["offline_since"])
        return cls(**d)


def on_heartbeat(
    state: EdgeState | None, hb: EdgeHeartbeat, cfg: HealthSettings
) -> tuple[EdgeState, list[EdgeEvent]]:
    """Record a heartbeat; an edge that was offline comes back online."""
    interval = cfg.interval_s or (hb.interval_s if hb.interval_s > 0 else cfg.default_interval_s)
    if state is not None and hb.event_id == state.last_heartbeat_id:
        return state, []
    if state is not None and hb.occurred_at < state.last_seen_at:
        return state, []  # late or redelivered: never moves last-seen backwards
    events: list[EdgeEvent] = []
    if state is not None and state.offline:
        events.append(EdgeOnline.create(
            producer=PRODUCER, event_id=derived_event_id("EdgeOnline", hb.event_id),
            occurred_at=hb.occurred_at, causation_id=hb.event_id,
            edge_id=hb.edge_id, site_id=hb.site_id, offline_since=state.offline_since,
        ))
    new = EdgeState(edge_id=hb.edge_id, site_id=hb.site_id, last_seen_at=hb.occurred_at,
                    last_heartbeat_id=hb.event_id, interval_s=interval)
    return new, events


def check(state: EdgeState, now: datetime, cfg: HealthSettings
          ) -> tuple[EdgeState, list[EdgeEvent]]:
    """At wall-clock `now`: has the edge missed `cfg.missed` heartbeats?"""
    if state.offline:
        return state, []
    silence = (now - state.last_seen_at).total_seconds()
    if silence < cfg.missed * state.interval_s:
        return state, []
    missed = int(silence // state.interval_s)
    ev = EdgeOffline.create(
        producer=PRODUCER,
        event_id=derived_event_id("EdgeOffline", state.edge_id, state.last_heartbeat_id),
        occurred_at=now, causation_id=state.last_heartbeat_id, edge_id=state.edge_id,
        site_id=state.site_id, last_seen_at=state.last_seen_at, missed_heartbeats=missed,
    )
    offline_since = state.last_seen_at + timedelta(seconds=state.interval_s)
    return replace(state, offline=True, offline_since=offline_since), [ev]
