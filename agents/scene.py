"""The scene agent: vigil.detections -> tracking + zone rules -> vigil.scene.

A thin Faust shell around the pure engine `agents.scene_rules.process` and the pure
batch/write-behind bookkeeping `agents.scene_pipeline`; this module only moves state and
events between Kafka and those two.

State:
- ``scene-state`` (RocksDB table, key = camera id, co-partitioned with vigil.detections;
  the value is ``{"state": <engine state>, "partition": p, "offset": o}``, serialised
  here once, as ``b"M"`` + `marshal` format 4: with a JSON-typed table Faust encoded
  every value twice, for RocksDB and for the changelog, and decoded it again on every
  read; and every frame writes its camera's state. At 1000 frames/s compact JSON plus
  level-1 zlib of the ~5 KB state was a fifth of the worker's CPU; marshal writes the
  same dict in an eighth of that time, 3.3 KB, uncompressed. The engine state holds only
  dicts, lists, str, int, float, bool and None, which marshal round-trips exactly, and
  format 4 is read by every Python 3 since 3.4. Values written by older workers (zlib
  JSON, plain JSON) are still read. The values come only from this agent's own
  changelog; marshal is not meant for untrusted input, and neither is this table.)
  Tracker, zone presences, loitering presences and crowd windows all live in
  it, so a restart or a rebalance resumes exactly where the changelog left off. The
  stored offset makes re-delivery idempotent: at-least-once may hand us a frame again
  whose state change is already in the changelog; such a frame is skipped, since its
  outputs were published before the state was stored (below).
- configuration: the compacted vigil.config topic, read in full (it is small) before the
  first frame and again whenever its end offset moves (checked every CONFIG_POLL_S of
  wall clock); per-camera compiled specs are cached and dropped on every change. A Faust
  GlobalTable over the topic (``ConfigTable``) is kept behind
  VIGIL_SCENE_CONFIG_GLOBALTABLE=1: with faust-streaming 0.15.3 it needed two fixes
  (assignor lookup by changelog name, store serializers) and even then the worker
  intermittently consumed nothing after "Worker ready", or agents ran before its values
  were readable, so frames met an empty configuration and missed rule hits.

Ordering for crash safety: a camera's state is written behind (at most every
VIGIL_SCENE_STATE_WRITE_S, see `write_states`), after the broker acknowledged every
output derived since its last write, and the frames it covers are acked only after the
write. A crash in between re-processes those frames from the last written state and
re-publishes the same events with the same derived ids, which downstream deduplicates.
"""

from __future__ import annotations

import asyncio
import functools
import gc
import logging
import time
import weakref
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any

import faust
from faust.streams import _current_event
from faust.tables.globaltable import GlobalTable
from faust.types import EventT, TableT
from mode.types.signals import BaseSignalT

from agents.app import app, at_worker_start, topics
from agents.batches import take_unacked
from agents.codec import Undecodable
from agents.dlq import dead_letter
from agents.gc_policy import FreezingCollector
from agents.scene_pipeline import Pending, StateCache, Step, WriteBehind
from agents.scene_rules import CameraSpec, compile_camera, process
from agents.scene_settings import get_scene_settings
from agents.ticks import ensure_changelog, source_partitions, worker_table
from schemas.codec import default_codec
from schemas.events import Event, FrameAnalyzed

log = logging.getLogger(__name__)
settings = get_scene_settings()  # fails the worker at start, naming a bad variable


@at_worker_start
def _tune_gc() -> None:
    """The worker's generation-0 threshold (VIGIL_SCENE_GC_THRESHOLD0); set at start-up,
    not at import, so a test or tool that imports this module keeps its own."""
    if settings.gc_threshold0:
        gc.set_threshold(settings.gc_threshold0, *gc.get_threshold()[1:])

STAGE = "scene"
_SCENE_TOPIC = str(topics.scene.get_topic_name())
_CODEC = default_codec()
STATE_TABLE = "scene-state"
CONFIG_TABLE = "scene-config"


class ConfigTable(GlobalTable):
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


def _raw_state_table(name: str, source: str) -> TableT:
    """Like `agents.ticks.state_table` but with raw bytes values (see the module
    docstring). Values written by the JSON-typed table before are the same JSON bytes."""
    from agents.app import table_options

    partitions = source_partitions(source)
    ensure_changelog(app, name, partitions)
    return app.Table(
        name, partitions=partitions, options=table_options(), key_type=bytes,
        value_type=bytes,
        schema=faust.Schema(key_type=bytes, value_type=bytes, key_serializer="raw",
                            value_serializer="raw"),
    )


# The app runs with topic_allow_declare=False: the state changelog (with the detections
# topic's partition count) and the leader topic are created at worker start-up, before
# Faust subscribes (not at import: importing this module touches no broker).
scene_state = worker_table(STATE_TABLE, lambda: _raw_state_table(STATE_TABLE, "detections"))
#: camera id -> its decoded state, in front of the table (scene_pipeline.StateCache)
_states = StateCache(lambda key: scene_state.get(key), lambda key, raw: _set_raw(key, raw))
#: camera id -> its state since its last write, not yet written, oldest first
_pending: WriteBehind[EventT] = WriteBehind(_states.load)


def _set_raw(key: bytes, raw: bytes) -> None:
    scene_state[key] = raw


async def _forget_decoded(sender: Any, /, *args: Any, signal: BaseSignalT[Any],
                          **kwargs: Any) -> None:
    _states.clear()
    # Normally empty by now (a rebalance waits until the agent has written them all);
    # whatever is left is not acked, so Faust delivers those frames again after its seek
    # to the committed offsets, and they are re-processed from the written state.
    _pending.clear()


for _signal in (app.on_partitions_revoked, app.on_partitions_assigned,
                app.on_rebalance_complete):
    _signal.connect(_forget_decoded)


#: Off by default: with faust-streaming 0.15.3 a GlobalTable over vigil.config made the
#: worker intermittently stall (no partition consumed after "Worker ready") or serve no
#: values for tens of seconds; see refresh_config. VIGIL_SCENE_CONFIG_GLOBALTABLE=1 on.
USE_GLOBAL_TABLE = settings.config_globaltable
if USE_GLOBAL_TABLE:
    _global_config = ConfigTable(
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
    app.tables.add(_global_config)
    config_table: TableT | None = _global_config
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


#: config entities per camera id: compiling a camera scans only its own (scanning them
#: all for every camera cost seconds of CPU per config change at 1000 cameras)
_entities: dict[str, list[Event]] | None = None
_entities_version = -1


async def refresh_config() -> None:
    """Load the configuration from the compacted topic itself when needed.

    Faust lets agents consume while a GlobalTable is still being restored (standby
    mode), and in tests its values were not readable for tens of seconds after start;
    frames processed meanwhile would meet an empty configuration and miss rule hits. So
    the table (or, by default, `watch_config`) serves as the *change signal* (a version
    that moves on every change) and the entities are read straight from the topic (small,
    compacted) in a thread: once before the first frame and again after every change."""
    global _entities, _entities_version, _config_high
    loop = asyncio.get_running_loop()
    if _entities is not None and _entities_version == ConfigTable.version:
        return
    from schemas.config_state import read_config_state

    seen = ConfigTable.version
    if not USE_GLOBAL_TABLE:
        # the end offset before reading: the read covers at least this far, so
        # `watch_config` reloads only on a change after it. Left at -1, the timer's first
        # tick took every start for a change and stalled the agent for a full re-read
        # (about 0.6 s, early in every run; the p99 of a 100-camera bench run).
        try:
            high = await loop.run_in_executor(None, _config_high_watermark)
        except Exception as exc:  # the timer compares against -1 and reloads once more
            log.warning("scene: cannot read the config topic's end offset: %s", exc)
            high = -1
    state = await loop.run_in_executor(  # a group under the app id: the worker's ACLs
        None, functools.partial(read_config_state, group_prefix=f"{app.conf.id}-config-reader"))
    by_camera: dict[str, list[Event]] = {}
    for v in state.values():
        if v is not None:
            by_camera.setdefault(str(getattr(v, "camera_id", "")), []).append(v)
    _entities = by_camera
    _entities_version = seen
    if not USE_GLOBAL_TABLE:
        _config_high = high
    _spec_cache.clear()


_spec_cache: dict[str, tuple[int, CameraSpec]] = {}


def camera_spec(camera_id: str) -> CameraSpec:
    """The compiled config of one camera, recompiled only after a config change."""
    cached = _spec_cache.get(camera_id)
    if cached is not None and cached[0] == _entities_version:
        return cached[1]
    spec = compile_camera(camera_id, (_entities or {}).get(camera_id, []))
    _spec_cache[camera_id] = (_entities_version, spec)
    return spec


def _engine(frame: FrameAnalyzed, state: dict[str, Any] | None
            ) -> tuple[dict[str, Any], list[Event]]:
    return process(camera_spec(frame.camera_id), frame, state)


def _advance(frame: FrameAnalyzed, event: EventT) -> Step | None:
    """One camera advanced by one frame from its latest value (unwritten or stored);
    None for a re-delivered frame (scene_pipeline.WriteBehind.advance)."""
    return _pending.advance(frame.camera_id.encode(), frame, event.message.partition,
                            event.message.offset, _engine)


def _write(key: bytes, p: Pending[EventT]) -> None:
    """Store a camera's state as if while processing its last frame: Faust picks the
    RocksDB partition and the changelog partition from the current event, and in a batch
    that is not necessarily this camera's (faust.streams has no public setter)."""
    token = _current_event.set(weakref.ref(p.event))
    try:
        _states.store(key, p.value)
    finally:
        _current_event.reset(token)


Ack = Callable[[EventT], Awaitable[Any]]


async def _publish(key: bytes, event: Event) -> Awaitable[Any]:
    """Hand one output to the producer; the returned future is its acknowledgement.

    Straight to Faust's producer with the codec's bytes: ``Topic.send`` built a
    FutureMessage, a PendingMessage and a callback chain per output, a tenth of the
    worker's CPU at 1000 frames/s. The partition is the producer's (murmur2 of the key),
    as it was through the topic."""
    return await app.producer.send(_SCENE_TOPIC, key, _CODEC.encode(event), None, None,
                                   None)


async def handle_batch(batch: Sequence[EventT], ack: Ack) -> int:
    """Process a batch of detection events; returns how many scene events were published.

    Outputs are handed to the producer frame by frame and not awaited here; each camera's
    new state stays in memory (`_pending`) and its events stay unacked until
    `write_states` stores it. Events with nothing to store (dead-lettered, or re-delivered
    and covered by a written state) are acked at once, after the dead letter was handed
    to the producer (Faust commits only after flushing the producer).
    """
    await refresh_config()
    published = 0
    now = time.monotonic()
    for event in batch:
        value = event.value
        try:
            if isinstance(value, Undecodable):
                await dead_letter(value, value.reason, STAGE, event)
            elif isinstance(value, FrameAnalyzed):
                key = value.camera_id.encode()
                step = _advance(value, event)
                if step is not None:
                    acks = [await _publish(key, ev) for ev in step.outputs]
                    # only now (all outputs handed to the producer) does the state move on
                    _pending.commit(step, event, value, acks, now)
                    published += len(step.outputs)
                if _pending.hold(key, event):
                    # committed with the camera's next write, not before (also a
                    # re-delivered frame that only the unwritten state covers)
                    continue
            elif value is not None:
                await dead_letter(value, f"unexpected {type(value).__name__} on detections",
                                  STAGE, event)
        except Exception as exc:
            log.exception("scene: frame failed")
            await _dead_letter_safely(value, f"{type(exc).__name__}: {exc}", event)
        await ack(event)
    return published


async def write_states(ack: Ack, older_than: float | None) -> int:
    """Write the unwritten states first dirtied before `older_than` (monotonic; None:
    all of them), then ack their events; returns how many were written.

    Crash safety: a camera's outputs are *acknowledged* by the broker before its state
    is written, and its events are acked only after that (Faust commits an offset only
    after flushing the producer, so after the changelog write). A crash anywhere
    re-processes the camera's frames from its last written state and re-publishes the
    same events with the same derived ids, which downstream deduplicates; the stored
    offset makes frames already in a written state count as re-delivered.
    """
    written = 0
    for key, p in _pending.due(older_than):
        try:
            for fut in p.acks:
                await fut  # acknowledged before the state moves on
        except Exception as exc:
            # the camera's state stays where it was written last (its next frame starts
            # from there and re-derives what it can, with the same ids); the frames whose
            # outputs failed go to the DLQ
            log.exception("scene: publishing the outputs of %s failed", key.decode())
            for ev, frame in p.frames:
                await _dead_letter_safely(frame, f"publishing outputs: {exc}", ev)
        else:
            try:
                _write(key, p)
                written += 1
            except Exception as exc:  # the store refused it: the frames are accounted for
                log.exception("scene: storing the state of %s failed", key.decode())
                _states.forget(key)
                for ev in p.events:
                    await _dead_letter_safely(ev.value, f"storing state: {exc}", ev)
        for ev in p.events:
            await ack(ev)
    return written


async def _dead_letter_safely(value: Any, reason: str, event: EventT) -> None:
    try:
        await dead_letter(value, reason, STAGE, event)
    except Exception:
        log.exception("scene: dead-lettering failed")


def _must_write_all() -> bool:
    """True while Faust waits for this agent's events to be acked: a rebalance or a
    shutdown has stopped the flow (``Consumer.stop_flow``) and will not commit or give
    the partitions up until every event handed to a stream is acked."""
    # flow_active is faust's Consumer's, which every transport's consumer is; the
    # ConsumerT interface that app.consumer is typed with does not declare it
    return bool(app.rebalancing) or not app.consumer.flow_active  # type: ignore[attr-defined]


@app.agent(topics.detections, concurrency=1)
async def scene(stream: faust.StreamT) -> None:
    """Frames in batches (up to VIGIL_SCENE_BATCH_MAX, waiting at most
    VIGIL_SCENE_BATCH_WITHIN_S), states written behind (VIGIL_SCENE_STATE_WRITE_S).

    At 1000 cameras every frame wrote its camera's state (a RocksDB put and a changelog
    record of ~3 KB) and every batch waited for the broker to acknowledge its outputs
    before the next one was taken; both capped one worker below the target. Now a camera's
    state is written once per VIGIL_SCENE_STATE_WRITE_S (a few frames' worth), oldest
    first, a few cameras per batch, so the writes do not come in bursts; its events are
    acked only after that write (`take_unacked`), so a crash or a rebalance re-delivers
    exactly what no written state covers. Every error goes to the DLQ with its reason;
    the stream never stops on one frame."""
    write_s = settings.state_write_s
    collector = FreezingCollector(settings.gc_freeze_s, settings.gc_full_s)
    async for batch in take_unacked(stream, settings.batch_max, settings.batch_within_s):
        collector.tick()
        try:
            if batch:
                await handle_batch(batch, stream.ack)
            if _pending:
                write_all = _must_write_all()
                await write_states(stream.ack,
                                   None if write_all else time.monotonic() - write_s)
        except Exception as exc:  # config unreadable: not one frame's fault
            log.exception("scene: batch failed")
            held = _pending.held()
            for event in batch:
                if id(event) not in held and not event.message.acked:
                    await _dead_letter_safely(event.value, f"batch failed: {exc}", event)
                    await stream.ack(event)
