"""The scene agent: vigil.detections -> tracking + zone rules -> vigil.scene.

A thin Faust shell around the pure engine `agents.scene_rules.process`; this module only
moves state and events between Kafka and the engine.

State:
- ``scene-state`` (RocksDB table, JSON values, key = camera id, co-partitioned with
  vigil.detections): ``{"state": <engine state>, "partition": p, "offset": o}``. Tracker,
  zone presences, loitering presences and crowd windows all live in it, so a restart or a
  rebalance resumes exactly where the changelog left off. The stored offset makes
  re-delivery idempotent: at-least-once may hand us a frame again whose state change is
  already in the changelog; such a frame is skipped, since its outputs were published
  before the state was stored (below).
- configuration: the compacted vigil.config topic, read in full (it is small) before the
  first frame and again whenever its end offset moves (checked every CONFIG_POLL_S of
  wall clock); per-camera compiled specs are cached and dropped on every change. A Faust
  GlobalTable over the topic (``ConfigTable``) is kept behind
  VIGIL_SCENE_CONFIG_GLOBALTABLE=1: with faust-streaming 0.15.3 it needed two fixes
  (assignor lookup by changelog name, store serializers) and even then the worker
  intermittently consumed nothing after "Worker ready", or agents ran before its values
  were readable, so frames met an empty configuration and missed rule hits.

Ordering for crash safety: outputs are sent and *acknowledged* before the state is
written. A crash in between re-processes the frame from the old state and re-publishes
the same events with the same derived ids, which downstream deduplicates.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Iterable
from typing import Any

import faust
from faust.tables.globaltable import GlobalTable

from agents.app import app, topics
from agents.codec import Undecodable
from agents.dlq import dead_letter
from agents.scene_rules import CameraSpec, compile_camera, process
from agents.ticks import state_table
from schemas.events import Event, FrameAnalyzed

log = logging.getLogger(__name__)

STAGE = "scene"
STATE_TABLE = "scene-state"
CONFIG_TABLE = "scene-config"


class ConfigTable(GlobalTable):  # type: ignore[misc]
    """GlobalTable that counts applied changelog batches, so the compiled per-camera
    config cache knows when to recompile (Faust has no change callback for updates that
    arrive through the changelog)."""

    version = 0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # The store decodes values with the table's own serializers (derived from
        # key_type/value_type, default JSON), not the changelog topic's: config values
        # are Avro events, so use the "vigil" codec (never raises: bad values arrive as
        # Undecodable and are skipped when compiling).
        self.key_serializer = "raw"
        self.value_serializer = "vigil"

    def _changelog_topic_name(self) -> str:
        # Faust's assignor looks global tables up by this name, not by the topic given as
        # changelog_topic; left at its default ("<app>-scene-config-changelog") the lookup
        # raises inside the assignor and the group hangs in "performing assignments".
        return str(topics.config.get_topic_name())

    #: next offset to apply on the config topic's partition 0 (it has one partition)
    applied_until = 0

    def apply_changelog_batch(self, batch: Iterable[Any]) -> None:
        events = list(batch)
        super().apply_changelog_batch(events)
        for ev in events:
            type(self).applied_until = max(type(self).applied_until, ev.message.offset + 1)
        type(self).version += 1


# The app runs with topic_allow_declare=False: create the state changelog (with the
# detections topic's partition count) and the leader topic before Faust subscribes.
scene_state: faust.TableT = state_table(STATE_TABLE, "detections")
#: Off by default: with faust-streaming 0.15.3 a GlobalTable over vigil.config made the
#: worker intermittently stall (no partition consumed after "Worker ready") or serve no
#: values for tens of seconds; see refresh_config. VIGIL_SCENE_CONFIG_GLOBALTABLE=1 on.
USE_GLOBAL_TABLE = os.environ.get("VIGIL_SCENE_CONFIG_GLOBALTABLE") == "1"
if USE_GLOBAL_TABLE:
    config_table: faust.TableT | None = app.tables.add(
        ConfigTable(
            app,
            name=CONFIG_TABLE,
            beacon=app.tables.beacon,
            partitions=1,
            standby_buffer_size=1,
            recovery_buffer_size=1,
            is_global=True,
            changelog_topic=topics.config,
            key_type=bytes,
            help="site configuration (compacted vigil.config)",
        )
    )
else:
    config_table = None

#: seconds between checks of the config topic's end offset (change detection)
CONFIG_POLL_S = 2.0
_config_high = -1
_probe: Any = None  # one confluent Consumer, reused by every check


def _config_high_watermark() -> int:
    global _probe
    from confluent_kafka import Consumer, TopicPartition

    from vigil.kafka import consumer_config

    if _probe is None:
        _probe = Consumer(consumer_config(f"{app.conf.id}-scene-config-probe"))
    _, high = _probe.get_watermark_offsets(
        TopicPartition(topics.config.get_topic_name(), 0), timeout=10)
    return int(high)


if not USE_GLOBAL_TABLE:

    @app.timer(CONFIG_POLL_S)
    async def watch_config() -> None:
        """Notice configuration changes off the frame path: a moved end offset of the
        config topic bumps the version, and the next frame reloads. Runs on every worker
        (each keeps its own in-memory copy; no table is written)."""
        global _config_high
        try:
            high = await asyncio.get_running_loop().run_in_executor(
                None, _config_high_watermark)
        except Exception as exc:  # a broker hiccup: try again at the next tick
            log.warning("scene: cannot read the config topic's end offset: %s", exc)
            return
        if high != _config_high:
            _config_high = high
            ConfigTable.version += 1


_entities: list[Event] | None = None
_entities_version = -1


async def refresh_config() -> None:
    """Load the configuration from the compacted topic itself when needed.

    Faust lets agents consume while a GlobalTable is still being restored (standby
    mode), and in tests its values were not readable for tens of seconds after start;
    frames processed meanwhile would meet an empty configuration and miss rule hits. So
    the table (or, by default, `watch_config`) serves as the *change signal* (a version
    that moves on every change) and the entities are read straight from the topic (small,
    compacted) in a thread: once before the first frame and again after every change."""
    global _entities, _entities_version
    loop = asyncio.get_running_loop()
    if _entities is not None and _entities_version == ConfigTable.version:
        return
    from vigil.config_cli import read_config_state

    seen = ConfigTable.version
    state = await loop.run_in_executor(None, read_config_state)
    _entities = [v for v in state.values() if v is not None]
    _entities_version = seen
    _spec_cache.clear()


_spec_cache: dict[str, tuple[int, CameraSpec]] = {}


def camera_spec(camera_id: str) -> CameraSpec:
    """The compiled config of one camera, recompiled only after a config change."""
    cached = _spec_cache.get(camera_id)
    if cached is not None and cached[0] == _entities_version:
        return cached[1]
    spec = compile_camera(camera_id, _entities or [])
    _spec_cache[camera_id] = (_entities_version, spec)
    return spec


async def handle_frame(frame: FrameAnalyzed, partition: int, offset: int) -> int:
    """Process one frame; returns how many events were published."""
    await refresh_config()
    key = frame.camera_id.encode()
    stored: dict[str, Any] | None = scene_state.get(key)
    if stored and stored.get("partition") == partition and offset <= stored.get("offset", -1):
        return 0  # re-delivery of a frame whose state is already stored
    new_state, events = process(camera_spec(frame.camera_id), frame,
                                stored.get("state") if stored else None)
    futures = [await topics.scene.send(key=key, value=ev) for ev in events]
    for fut in futures:
        await fut  # acknowledged before the state moves on
    scene_state[key] = {"state": new_state, "partition": partition, "offset": offset}
    return len(events)


@app.agent(topics.detections, concurrency=1)
async def scene(stream: faust.StreamT) -> None:
    """Every error goes to the DLQ with its reason; the stream never stops on one frame."""
    async for event in stream.events():
        value = event.value
        try:
            if isinstance(value, Undecodable):
                await dead_letter(value, value.reason, STAGE, event)
            elif isinstance(value, FrameAnalyzed):
                await handle_frame(value, event.message.partition, event.message.offset)
            elif value is not None:
                await dead_letter(value, f"unexpected {type(value).__name__} on detections",
                                  STAGE, event)
        except Exception as exc:
            log.exception("scene: frame failed")
            try:
                await dead_letter(value, f"{type(exc).__name__}: {exc}", STAGE, event)
            except Exception:
                log.exception("scene: dead-lettering failed")
