"""The scene agent's write-behind bookkeeping (agents/scene_pipeline.py), without Kafka.

A small driver below plays the agent's part (publish, commit, hold, write the due
states, ack) against an in-memory "table" and "topic", so the crash and re-delivery
rules can be checked on the real engine: whatever the crash point, the outputs after a
restart from the committed offsets are the uninterrupted run's, ids included.
"""

from __future__ import annotations

import json
import marshal
import zlib
from dataclasses import dataclass, field
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agents.scene_pipeline import (
    StateCache,
    WriteBehind,
    decode_state,
    encode_state,
)
from agents.scene_rules import compile_camera, process
from schemas.events import Event, FrameAnalyzed
from schemas.site_config import config_events, parse_site
from tools.bench.scene import demo_site, demo_streams

STREAMS = demo_streams()
CONFIG = [ev for _, ev in config_events(parse_site(demo_site()))]
SPECS = {cam: compile_camera(cam, CONFIG) for cam in STREAMS}


def engine(frame: FrameAnalyzed, state: dict[str, Any] | None
           ) -> tuple[dict[str, Any], list[Event]]:
    return process(SPECS[frame.camera_id], frame, state)


@dataclass(frozen=True)
class Msg:
    """A stream event as the agent sees it: the frame and where it sits."""

    frame: FrameAnalyzed
    partition: int
    offset: int


@dataclass
class Worker:
    """The agent's order of effects, synchronously: outputs published (and, here,
    acknowledged at once) before the state moves on, states written once due, events
    acked only after their camera's write."""

    table: dict[bytes, bytes]
    write_s: float = 3.0
    published: list[Event] = field(default_factory=list)
    acked: list[Msg] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.cache = StateCache(self.table.get, self.table.__setitem__)
        self.pending: WriteBehind[Msg] = WriteBehind(self.cache.load)

    def frame(self, msg: Msg, now: float) -> None:
        key = msg.frame.camera_id.encode()
        step = self.pending.advance(key, msg.frame, msg.partition, msg.offset, engine)
        if step is not None:
            self.published += step.outputs
            self.pending.commit(step, msg, msg.frame, ["ack"] * len(step.outputs), now)
        if not self.pending.hold(key, msg):
            self.acked.append(msg)

    def write(self, older_than: float | None) -> int:
        n = 0
        for key, p in self.pending.due(older_than):
            self.cache.store(key, p.value)
            n += 1
            self.acked += p.events
        return n


def interleaved(cameras: list[str]) -> list[Msg]:
    """The cameras' frames in time order on one partition, with offsets."""
    frames = sorted((f for cam in cameras for f in STREAMS[cam]),
                    key=lambda f: (f.occurred_at, f.camera_id))
    return [Msg(f, 0, i) for i, f in enumerate(frames)]


def run(worker: Worker, msgs: list[Msg], t0: float = 0.0, step_s: float = 0.5) -> float:
    now = t0
    for m in msgs:
        worker.frame(m, now)
        worker.write(now - worker.write_s)
        now += step_s
    return now


CAMS = ["loit", "crowd6", "line"]


def test_state_formats_round_trip_and_old_formats_are_read() -> None:
    value = {"state": {"tracks": {"t1": [0.1, 0.2, None, True]}, "n": 3}, "partition": 1,
             "offset": 7}
    raw = encode_state(value)
    assert raw[:1] == b"M" and decode_state(raw) == value
    assert decode_state(json.dumps(value).encode()) == value
    assert decode_state(zlib.compress(json.dumps(value).encode())) == value
    with pytest.raises(ValueError, match="not a dict"):
        decode_state(b"M" + marshal.dumps([1, 2], 4))


def test_events_stay_unacked_until_their_cameras_state_is_written() -> None:
    w = Worker({})
    msgs = interleaved(["loit"])[:5]
    for m in msgs:
        w.frame(m, now=0.0)
    assert w.acked == [] and w.table == {}  # nothing written, nothing acked
    assert w.write(older_than=-1.0) == 0  # not due yet
    assert w.write(older_than=0.0) == 1
    assert w.acked == msgs
    stored = decode_state(w.table[b"loit"])
    assert (stored["partition"], stored["offset"]) == (0, msgs[-1].offset)
    assert not w.pending


def test_due_states_are_written_oldest_first_and_only_when_old_enough() -> None:
    w = Worker({})
    a, b, c = (interleaved([cam])[0] for cam in ("loit", "crowd6", "line"))
    w.frame(a, 1.0)
    w.frame(b, 2.0)
    w.frame(c, 3.0)
    w.frame(interleaved(["loit"])[1], 4.0)  # a later frame keeps loit's place and time
    order = [k for k, _ in w.pending.due(2.5)]
    assert order == [b"loit", b"crowd6"]
    assert list(w.pending.unwritten) == [b"line"]


def test_a_redelivered_frame_covered_by_the_latest_state_is_skipped_but_held() -> None:
    w = Worker({})
    msgs = interleaved(["loit"])[:3]
    for m in msgs:
        w.frame(m, 0.0)
    n = len(w.published)
    w.frame(msgs[1], 0.0)  # at-least-once: delivered again before the write
    assert len(w.published) == n
    assert w.pending.unwritten[b"loit"].events[-1] is msgs[1]  # acked with the write
    w.write(None)
    w.frame(msgs[2], 0.0)  # again after the write: covered by the stored offset
    assert len(w.published) == n and w.acked[-1] is msgs[2]
    # the same offset on another partition is not the same frame
    assert w.pending.advance(b"loit", msgs[2].frame, 1, msgs[2].offset, engine) is not None


def test_a_step_changes_nothing_until_committed() -> None:
    w = Worker({})
    m = interleaved(["loit"])[0]
    step = w.pending.advance(b"loit", m.frame, 0, 0, engine)
    assert step is not None and not w.pending and w.pending.latest(b"loit") is None
    w.pending.commit(step, m, m.frame, [], 5.0)
    assert w.pending.latest(b"loit") is step.value
    p = w.pending.unwritten[b"loit"]
    assert (p.since, p.acks, p.frames) == (5.0, [], [])  # no outputs: nothing to await


def test_clear_forgets_unwritten_states_and_held_events() -> None:
    w = Worker({})
    for m in interleaved(CAMS)[:6]:
        w.frame(m, 0.0)
    assert w.pending.held()
    w.pending.clear()
    w.cache.clear()
    assert not w.pending and w.pending.held() == set() and w.write(None) == 0


def test_the_cache_serves_its_own_writes_and_rereads_after_clear() -> None:
    table: dict[bytes, bytes] = {}
    reads: list[bytes] = []

    def get(key: bytes) -> bytes | None:
        reads.append(key)
        return table.get(key)

    cache = StateCache(get, table.__setitem__)
    cache.store(b"k", {"state": {}, "offset": 1})
    assert cache.load(b"k") == {"state": {}, "offset": 1} and reads == []
    table[b"k"] = encode_state({"state": {}, "offset": 2})  # restored from the changelog
    cache.clear()
    assert cache.load(b"k") == {"state": {}, "offset": 2} and reads == [b"k"]
    assert cache.load(b"missing") is None


@settings(max_examples=25, deadline=None)
@given(crash_at=st.integers(0, 400), write_s=st.sampled_from([0.0, 1.0, 3.0, 30.0]))
def test_a_crash_anywhere_resumes_with_the_uninterrupted_outputs(crash_at: int,
                                                                 write_s: float) -> None:
    """Kill the worker after `crash_at` frames (unwritten states and unacked events
    lost), restart from the table and the committed offset (the first unacked frame):
    the outputs, deduplicated by id as every consumer does, are the uninterrupted
    run's, and nothing the restarted worker publishes is new."""
    msgs = interleaved(CAMS)
    crash_at = min(crash_at, len(msgs))
    straight = Worker({}, write_s=write_s)
    run(straight, msgs)
    straight.write(None)
    expected = [e.event_id for e in straight.published]

    table: dict[bytes, bytes] = {}
    first = Worker(table, write_s=write_s)
    now = run(first, msgs[:crash_at])
    acked = {m.offset for m in first.acked}
    committed = next((m.offset for m in msgs if m.offset not in acked), len(msgs))
    second = Worker(table, write_s=write_s)  # the table survives, memory does not
    run(second, msgs[committed:], t0=now)
    second.write(None)
    seen: dict[str, None] = {}
    for e in first.published + second.published:
        seen.setdefault(e.event_id)
    assert list(seen) == expected
    assert {e.event_id for e in second.published} <= set(expected)
