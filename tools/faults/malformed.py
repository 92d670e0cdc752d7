"""Scenario: Hypothesis-generated malformed values produced into the LIVE frames topic.

Why Hypothesis inside a fault scenario: hand-written poison (tools.faults.poison) only
covers the shapes somebody thought of; generated values reach decoder paths nobody
wrote down. Three families, a bounded number of examples each, seeded from the run:
- malformed Avro: the single-object header with FrameCaptured's real fingerprint and a
  body that is truncated or random (kept only if our own codec rejects it);
- unknown schema fingerprints: the header with 8 bytes no schema has, any body;
- oversized frames: valid FrameCaptured events whose inline JPEG is above the edge's
  `inline_jpeg_max_bytes` (512 KB) and not a JPEG, on a camera of their own; and values
  above the frames topic's max.message.bytes (2 MiB), which the broker must refuse.

What must hold: every accepted value is in vigil.dlq with a `vigil.error` reason; every
value above the topic limit is refused at produce time; no process exits; the real
traffic around them is judged by the set oracle as usual (0 lost, 0 duplicated, alerts
exactly as the ground truth says).
"""

from __future__ import annotations

import contextlib
import time
from typing import Any

from tools.faults.crashes import Ctx
from tools.faults.harness import Pipeline, ScenarioResult

#: the frames topic's max.message.bytes (schemas/topics.py)
TOPIC_MAX_BYTES = 2_097_152
POISON_CAMERA = "cam-malformed"


def _generate(ctx: Ctx) -> tuple[list[tuple[str, bytes]], list[bytes], Any]:
    """(kind, value) to inject, values too large for the topic, and the poison frame
    events (so the oracle can leave them out of the real traffic)."""
    from hypothesis import HealthCheck, given, seed, settings
    from hypothesis import strategies as st

    from schemas.codec import SINGLE_OBJECT_MAGIC, default_codec
    from schemas.events import FrameCaptured, derived_event_id

    codec = default_codec()
    known = set(codec.store.writers) | set(codec.store.reader_fingerprints.values())
    frame_fp = codec.store.reader_fingerprints["FrameCaptured"]
    n = 6 if ctx.quick else 25
    sample = FrameCaptured.create(
        producer="faults/malformed", event_id=derived_event_id("x", POISON_CAMERA, 1),
        edge_id="faults-edge", camera_id=POISON_CAMERA, sequence=1, width=64, height=48,
        motion_score=0.5, jpeg=b"\xff\xd8" + b"j" * 200, object_ref=None,
        keyframe_only=False)
    good = codec.encode(sample)

    def rejected(v: bytes) -> bool:
        try:
            codec.decode(v)
        except Exception:
            return True
        return False

    out: list[tuple[str, bytes]] = []
    too_big: list[bytes] = []
    frames: list[Any] = []
    opts = settings(max_examples=n, database=None, deadline=None,
                    suppress_health_check=list(HealthCheck))
    rseed = ctx.rng.randrange(1 << 30)

    @seed(rseed)
    @opts
    @given(st.one_of(
        st.integers(3, len(good) - 1).map(lambda k: good[:k]),  # truncated
        st.binary(min_size=0, max_size=300).map(
            lambda b: SINGLE_OBJECT_MAGIC + frame_fp + b)))  # random body
    def malformed_avro(v: bytes) -> None:
        if rejected(v) and v not in dict(out).values():
            out.append(("malformed_avro", v))

    @seed(rseed + 1)
    @opts
    @given(st.binary(min_size=8, max_size=8).filter(lambda f: f not in known),
           st.binary(max_size=300))
    def unknown_fingerprint(fp: bytes, body: bytes) -> None:
        v = SINGLE_OBJECT_MAGIC + fp + body
        if v not in dict(out).values():
            out.append(("unknown_fingerprint", v))

    @seed(rseed + 2)
    @settings(max_examples=2 if ctx.quick else 4, database=None, deadline=None,
              suppress_health_check=list(HealthCheck))
    @given(st.integers(520_000, TOPIC_MAX_BYTES - 100_000), st.binary(min_size=1,
                                                                       max_size=64))
    def oversized(size: int, filler: bytes) -> None:
        seq = 1000 + len(frames)
        ev = FrameCaptured.create(
            producer="faults/malformed", event_id=derived_event_id("x", POISON_CAMERA, seq),
            edge_id="faults-edge", camera_id=POISON_CAMERA, sequence=seq, width=640,
            height=480, motion_score=0.5, jpeg=(filler * (size // len(filler) + 1))[:size],
            object_ref=None, keyframe_only=False)
        frames.append(ev)
        out.append(("oversized_frame", codec.encode(ev)))

    @seed(rseed + 3)
    @settings(max_examples=2, database=None, deadline=None,
              suppress_health_check=list(HealthCheck))
    @given(st.integers(TOPIC_MAX_BYTES + 1, TOPIC_MAX_BYTES + 500_000))
    def above_topic_limit(size: int) -> None:
        too_big.append(SINGLE_OBJECT_MAGIC + frame_fp + b"\x00" * size)

    for f in (malformed_avro, unknown_fingerprint, oversized, above_topic_limit):
        f()
    return out, too_big, frames


def malformed(ctx: Ctx) -> ScenarioResult:
    res = ScenarioResult("malformed")
    scen = ["loiterer"] if ctx.quick else ["loiterer", "crowd6", "passers_by"]
    p = Pipeline(ctx.env, ctx.run_dir / "malformed", scen, "malformd")
    try:
        from confluent_kafka import KafkaError, Producer

        from schemas.topics import topic_name

        values, too_big, frames = _generate(ctx)
        p.setup()
        p.start("worker", "projector", "edge")
        prod = Producer({"bootstrap.servers": p.env["KAFKA_BOOTSTRAP"], "acks": "all",
                         "enable.idempotence": True, "message.max.bytes": 8 * 2**20})
        p.wait_for(lambda: p.analysed() >= 3, 240,
                   "the first analysed frames")
        topic = topic_name("frames", p.prefix)
        errors: dict[int, Any] = {}

        def cb(i: int) -> Any:
            return lambda err, _msg: errors.__setitem__(i, err)

        for i, (_, v) in enumerate(values):
            cam = p.cameras[i % len(p.cameras)]
            prod.produce(topic, key=cam.encode(), value=v, on_delivery=cb(i))
            prod.poll(0)
            if i % 4 == 3:
                prod.flush(30)
                time.sleep(ctx.rng.uniform(0.1, 0.6))  # spread among the good frames
        prod.flush(60)
        refused: list[str] = []
        for j, v in enumerate(too_big):
            errors.pop(-1, None)
            prod.produce(topic, key=POISON_CAMERA.encode(), value=v, on_delivery=cb(-1))
            prod.flush(60)
            err = errors.get(-1)
            refused.append(err.name() if err is not None else "ACCEPTED")
            if err is None or err.code() != KafkaError.MSG_SIZE_TOO_LARGE:
                res.problems.append(f"value #{j} of {len(v)} bytes was not refused by the "
                                    f"broker: {refused[-1]}")
        not_delivered = [values[i][0] for i, e in errors.items() if i >= 0 and e is not None]
        if not_delivered:
            res.problems.append(f"could not produce {len(not_delivered)} value(s): "
                                f"{not_delivered}")
        kinds: dict[str, int] = {}
        for k, _ in values:
            kinds[k] = kinds.get(k, 0) + 1
        res.faults.append(f"{len(values)} Hypothesis-generated malformed values into the "
                          f"live frames topic {kinds}; {len(too_big)} above the topic limit")
        p.drain(res, ctx.quick)
        p.check_alive("worker", "projector")
        injected = {v: k for k, v in values}

        def in_dlq() -> dict[bytes, str]:
            found: dict[bytes, str] = {}
            for msg in p.read_topic("dlq", decode=False):
                reason = dict(msg.headers() or []).get("vigil.error")
                if msg.value() in injected and reason:
                    found[msg.value()] = reason.decode(errors="replace")
            return found

        with contextlib.suppress(Exception):
            p.wait_for(lambda: set(in_dlq()) >= set(injected), 90, "the values in the DLQ")
        found = in_dlq()
        missing = sorted(f"{injected[v]}:{len(v)}B" for v in injected if v not in found)
        res.details.update({
            "injected": len(values), "kinds": kinds, "in_dlq_with_reason": len(found),
            "missing_from_dlq": missing, "above_topic_limit": refused,
            "sample_reasons": sorted({r[:120] for r in found.values()})[:6],
        })
        if missing:
            res.problems.append(f"{len(missing)} malformed value(s) not in the DLQ with a "
                                f"reason: {missing[:10]}")
        p.judge_frames(res, exclude_ids={f.event_id for f in frames})
    finally:
        p.stop_all()
    return res
