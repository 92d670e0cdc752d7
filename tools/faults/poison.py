"""Scenario 4: poison messages mixed into vigil.frames and vigil.detections.

An exception inside a Faust agent skips the event (docs/architecture.md, Faust), so
every handler must catch and dead-letter with a reason. The faults here are the two a
real producer bug makes:
random bytes (unknown wire format) and a well-framed value whose schema fingerprint no
reader knows. Each poison value is unique, so the oracle is set membership in vigil.dlq,
not a count (the projector reads the same topics and may dead-letter a value too).
"""

from __future__ import annotations

import contextlib
import os
import time

from tools.faults.crashes import Ctx
from tools.faults.harness import Pipeline, ScenarioResult

KINDS = ("random", "fingerprint", "confluent")


def _poison(rng_bytes: bytes, kind: str) -> bytes:
    if kind == "random":  # no known wire format at all
        return b"\xffPOISON" + rng_bytes
    if kind == "confluent":  # Confluent framing, but no schema registry is configured
        return b"\x00\x00\x00\x00\x07" + rng_bytes
    # single-object magic C3 01 + a fingerprint no schema has + a body
    return b"\xc3\x01" + rng_bytes[:8] + b"\x02poison-body" + rng_bytes[8:]


def poison(ctx: Ctx) -> ScenarioResult:
    res = ScenarioResult("poison")
    scen = ["passers_by"] if ctx.quick else ["loiterer", "crowd6", "passers_by"]
    p = Pipeline(ctx.env, ctx.run_dir / "poison", scen, "poison")
    try:
        from confluent_kafka import Producer

        from schemas.topics import topic_name

        p.setup()
        p.start("worker", "projector", "edge")
        total_frames = p.expected_frames
        # 1% of the good traffic per topic, at least 3 so both kinds are exercised
        per_topic = max(3, total_frames // 100)
        prod = Producer({"bootstrap.servers": p.env["KAFKA_BOOTSTRAP"], "acks": "all",
                         "enable.idempotence": True})
        injected: dict[bytes, str] = {}
        p.wait_for(lambda: p.analysed() >= 5, 240,
                   "the first analysed frames")
        for i in range(per_topic):
            for suffix in ("frames", "detections"):
                kind = KINDS[i % len(KINDS)]
                value = _poison(os.urandom(24), kind)
                cam = p.cameras[i % len(p.cameras)]
                prod.produce(topic_name(suffix, p.prefix), key=cam.encode(), value=value)
                injected[value] = f"{suffix}:{kind}"
            prod.flush(30)
            time.sleep(ctx.rng.uniform(0.2, 1.5))  # spread them between good events
        res.faults.append(f"{len(injected)} poison messages into frames and detections")
        p.drain(res, ctx.quick)
        p.check_alive("worker", "projector")

        def dlq_values() -> dict[bytes, str]:
            found: dict[bytes, str] = {}
            for msg in p.read_topic("dlq", decode=False):
                headers = dict(msg.headers() or [])
                if msg.value() in injected and headers.get("vigil.error"):
                    found[msg.value()] = headers["vigil.error"].decode(errors="replace")
            return found

        # the projector dead-letters on its own schedule; give it a short while
        with contextlib.suppress(Exception):
            p.wait_for(lambda: set(dlq_values()) >= set(injected), 60, "poison in the DLQ")
        found = dlq_values()
        missing = [injected[v] for v in injected if v not in found]
        res.details.update({
            "poison_injected": len(injected), "poison_in_dlq_with_reason": len(found),
            "poison_missing_from_dlq": missing,
            "sample_reasons": sorted(set(found.values()))[:4],
        })
        if missing:
            res.problems.append(f"{len(missing)} poison message(s) not in the DLQ with a "
                                f"vigil.error header: {missing}")
        p.judge_frames(res)
    finally:
        p.stop_all()
    return res
