"""The scene agent's batch and write-behind bookkeeping, without Faust or Kafka.

`agents/scene.py` moves frames and events between Kafka and this module; everything it
decides lives here, so it is unit-tested without a broker (tests/unit/test_scene_pipeline.py):

- which frame is a re-delivery (its offset is covered by the camera's latest state);
- each camera's state since its last write, kept in memory (`Pending`) and written
  behind, oldest first, once it is `write_s` old (`WriteBehind.due`);
- which stream events stay unacked until that write (`WriteBehind.hold`), so a crash
  or a rebalance re-delivers exactly what no written state covers;
- the stored value's format (`encode_state` / `decode_state`) and the decoded-value
  cache in front of the table (`StateCache`).

The order of effects that makes this crash-safe is the agent's (module docstring of
agents/scene.py): outputs handed to the producer before `commit`, the broker's acks
awaited before the state is written, events acked after the write.
"""

from __future__ import annotations

import json
import marshal
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from schemas.events import Event, FrameAnalyzed

#: A stream event (Faust's EventT in the agent, anything in a test): only carried here.
E = TypeVar("E")
#: The engine: (frame, the camera's engine state or None) -> (new engine state, outputs)
Engine = Callable[[FrameAnalyzed, dict[str, Any] | None], tuple[dict[str, Any], list[Event]]]

#: first byte of a marshal-encoded state value (zlib streams start with 0x78, JSON with "{")
MARSHAL_TAG = b"M"
MARSHAL_VERSION = 4


def decode_state(raw: bytes) -> dict[str, Any]:
    """A stored value in any of the formats the agent has written (agents/scene.py)."""
    if raw[:1] == MARSHAL_TAG:
        value = marshal.loads(memoryview(raw)[1:])
    elif raw[:1] == b"{":  # plain JSON, as the first workers wrote it
        value = json.loads(raw)
    else:  # zlib-compressed JSON
        value = json.loads(zlib.decompress(raw))
    if not isinstance(value, dict):
        raise ValueError(f"scene state is a {type(value).__name__}, not a dict")
    return value


def encode_state(value: dict[str, Any]) -> bytes:
    return MARSHAL_TAG + marshal.dumps(value, MARSHAL_VERSION)


class StateCache:
    """Decoded values in front of the state table (`get_raw` / `set_raw`).

    While the worker owns a camera's partition only the agent writes its state, so the
    cached value *is* the table's and the table is not read again (a RocksDB read and
    decode was a twentieth of the worker's CPU); `clear` on every rebalance, so a value
    restored or written elsewhere is read from the table."""

    def __init__(self, get_raw: Callable[[bytes], bytes | None],
                 set_raw: Callable[[bytes, bytes], None]) -> None:
        self._get_raw = get_raw
        self._set_raw = set_raw
        self.decoded: dict[bytes, dict[str, Any]] = {}

    def load(self, key: bytes) -> dict[str, Any] | None:
        value = self.decoded.get(key)
        if value is not None:
            return value
        raw = self._get_raw(key)
        if raw is None:
            return None
        value = self.decoded[key] = decode_state(raw)
        return value

    def store(self, key: bytes, value: dict[str, Any]) -> None:
        self._set_raw(key, encode_state(value))
        self.decoded[key] = value

    def forget(self, key: bytes) -> None:
        self.decoded.pop(key, None)

    def clear(self) -> None:
        self.decoded.clear()


@dataclass
class Pending(Generic[E]):
    """A camera's state since its last write: kept in memory, written behind."""

    event: E  # the camera's last frame so far: its partition gets the write
    value: dict[str, Any]
    #: monotonic time of the first frame since the last write (written `write_s` after)
    since: float
    #: every event of this camera since the last write: acked once the state is written
    events: list[E] = field(default_factory=list)
    #: the producer's acknowledgements of the outputs since the last write
    acks: list[Any] = field(default_factory=list)
    #: the frames that had outputs (dead-lettered if publishing them fails)
    frames: list[tuple[E, FrameAnalyzed]] = field(default_factory=list)


@dataclass(frozen=True)
class Step:
    """One frame applied to its camera's latest state: the value to store and the
    outputs to publish. Nothing has changed yet: `WriteBehind.commit` makes it so."""

    key: bytes
    value: dict[str, Any]
    outputs: list[Event]


class WriteBehind(Generic[E]):
    """Per-camera states not yet written, oldest first (dicts keep insertion order and a
    camera keeps its place until it is written)."""

    def __init__(self, load: Callable[[bytes], dict[str, Any] | None]) -> None:
        self._load = load
        self.unwritten: dict[bytes, Pending[E]] = {}

    def latest(self, key: bytes) -> dict[str, Any] | None:
        """The camera's latest value: unwritten if there is one, else the stored one."""
        p = self.unwritten.get(key)
        return p.value if p is not None else self._load(key)

    def advance(self, key: bytes, frame: FrameAnalyzed, partition: int, offset: int,
                engine: Engine) -> Step | None:
        """The camera advanced by one frame; None for a re-delivered frame (its offset on
        this partition is covered by the latest value). Changes nothing."""
        latest = self.latest(key)
        if latest and latest.get("partition") == partition and offset <= latest.get(
                "offset", -1):
            return None
        new_state, outputs = engine(frame, latest.get("state") if latest else None)
        return Step(key, {"state": new_state, "partition": partition, "offset": offset},
                    outputs)

    def commit(self, step: Step, event: E, frame: FrameAnalyzed, acks: list[Any],
               now: float) -> None:
        """The state moves on: call once every output of `step` is with the producer."""
        p = self.unwritten.get(step.key)
        if p is None:
            p = self.unwritten[step.key] = Pending(event, step.value, now)
        p.event, p.value = event, step.value
        if acks:
            p.acks += acks
            p.frames.append((event, frame))

    def hold(self, key: bytes, event: E) -> bool:
        """Keep `event` unacked until the camera's next write; False when nothing is
        unwritten for the camera (the caller acks at once)."""
        p = self.unwritten.get(key)
        if p is None:
            return False
        p.events.append(event)
        return True

    def due(self, older_than: float | None) -> Iterator[tuple[bytes, Pending[E]]]:
        """Take the states first dirtied at or before `older_than` (None: all), oldest
        first, each removed as it is taken. Re-checked at every step, so a caller that
        awaits in between sees a `clear` (rebalance) at once."""
        while self.unwritten:
            key, p = next(iter(self.unwritten.items()))
            if older_than is not None and p.since > older_than:
                return
            del self.unwritten[key]
            yield key, p

    def held(self) -> set[int]:
        """ids of the events held for a write (not to be acked or dead-lettered now)."""
        return {id(ev) for p in self.unwritten.values() for ev in p.events}

    def clear(self) -> None:
        self.unwritten.clear()

    def __bool__(self) -> bool:
        return bool(self.unwritten)
