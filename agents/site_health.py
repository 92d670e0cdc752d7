"""Faust agent for site health: heartbeats -> last seen per edge -> EdgeOffline / EdgeOnline.

Last-seen state lives in the "edges" table, one entry per heartbeats partition
(``edges-<p>`` = {edge_id: EdgeState}): an edge's heartbeats all arrive on one partition,
and keeping the partition's edges under one key lets the tick for partition p find every
edge it must check without scanning the table (a few hundred edges per partition at most).

The clock: the leader sends one tick per partition of ``<prefix>.health-ticks``
(co-partitioned with heartbeats, see agents/ticks.py); the owner of partition p checks
its edges against the tick's time. Health events go to vigil.health keyed by edge_id; the
alerts agents turn them into alerts (incident ``edge|<id>|offline``) that auto-resolve.

Order of effects as in agents/alerts.py: send and wait for the ack, then write the table;
event ids are derived, so a replay after a crash repeats the same ids.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from prometheus_client import Gauge

from agents.app import app, topics
from agents.codec import Undecodable
from agents.dlq import dead_letter
from agents.health_state import EdgeState, check, get_health_settings, on_heartbeat
from agents.ticks import (
    parse_tick,
    send_ticks,
    state_table,
)
from schemas.events import EdgeHeartbeat, Event

log = logging.getLogger(__name__)

cfg = get_health_settings()

#: declared (changelog created, partitions read from the broker) at worker start-up
edges_table = state_table("edges", "heartbeats")

health_ticks = topics.health_ticks

#: 1 online / 0 offline per edge, as this worker's site-health agent last decided (only
#: the worker owning the edge's heartbeats partition reports it: `max by (edge_id)` over
#: workers is the fleet view). The same transitions as EdgeOnline / EdgeOffline.
EDGE_ONLINE = Gauge("vigil_edge_online", "1 when the edge sends heartbeats, 0 when offline",
                    ["edge_id", "site_id"])
#: Free bytes on the edge's spool/recording disk, from its last heartbeat: edges are often
#: behind NAT and not scraped, so the worker exports what they report.
EDGE_DISK_FREE = Gauge("vigil_edge_disk_free_bytes",
                       "free bytes on the edge's state disk (last heartbeat)",
                       ["edge_id", "site_id"])


def _export(st: EdgeState) -> None:
    EDGE_ONLINE.labels(st.edge_id, st.site_id).set(0 if st.offline else 1)

_lock = asyncio.Lock()


def _load(p: int) -> dict[str, EdgeState]:
    raw = edges_table.get(f"edges-{p}".encode()) or {}
    return {k: EdgeState.from_json(v) for k, v in raw.items()}


def _store(p: int, edges: dict[str, EdgeState]) -> None:
    edges_table[f"edges-{p}".encode()] = {k: v.to_json() for k, v in edges.items()}


async def _publish(events: list[Event]) -> None:
    for ev in events:
        fut = await topics.health.send(key=ev.edge_id.encode(), value=ev,  # type: ignore[attr-defined]
                                       force=True)
        await fut


@app.agent(topics.heartbeats, concurrency=1)
async def heartbeats(stream: Any) -> None:
    async for event in stream.events():
        value = event.value
        try:
            if isinstance(value, Undecodable):
                await dead_letter(value, value.reason, "health.heartbeats", event)
                continue
            if not isinstance(value, EdgeHeartbeat):
                await dead_letter(value, f"not a heartbeat: {type(value).__name__}",
                                  "health.heartbeats", event)
                continue
            p = event.message.partition
            async with _lock:
                edges = _load(p)
                old = edges.get(value.edge_id)
                new, events = on_heartbeat(old, value, cfg)
                await _publish(events)
                _export(new)
                EDGE_DISK_FREE.labels(value.edge_id, new.site_id).set(value.disk_free_bytes)
                if new != old:
                    edges[value.edge_id] = new
                    _store(p, edges)
        except Exception as exc:
            log.exception("heartbeat failed")
            await dead_letter(value, f"{type(exc).__name__}: {exc}", "health.heartbeats", event)


@app.agent(health_ticks, concurrency=1)
async def health_clock_ticks(stream: Any) -> None:
    """Check every edge of the tick's partition for missed heartbeats."""
    async for event in stream.events():
        value = event.value
        try:
            now = parse_tick(value)
            p = event.message.partition
            async with _lock:
                edges = _load(p)
                changed = False
                for edge_id, st in list(edges.items()):
                    new, events = check(st, now, cfg)
                    await _publish(events)
                    _export(new)
                    if new != st:
                        edges[edge_id] = new
                        changed = True
                if changed:
                    _store(p, edges)
        except Exception as exc:
            log.exception("health tick failed")
            await dead_letter(value, f"{type(exc).__name__}: {exc}", "health.ticks", event)


@app.timer(interval=cfg.tick_s, on_leader=True)
async def health_clock() -> None:
    """Leader only: announce wall-clock time to every heartbeats partition."""
    try:
        await send_ticks(health_ticks, edges_table.partitions)
    except Exception:
        log.exception("health tick send failed")
