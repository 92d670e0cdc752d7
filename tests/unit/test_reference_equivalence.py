"""Reference equivalence: the optimised scene steps (agents/tracker.py, agents/crowd.py,
agents/lines.py) and the event codec (schemas/codec.py, schemas/avro_compiled.py) give
exactly what plain reference implementations kept in the tests give, on random input
sequences (tests/reference_scene.py, tests/reference_avro.py).

Outputs are compared through ``repr``, so a float that differs in its last bit, a -0.0
for a 0.0 or a NaN where the reference has a number is a failure, not a near miss.
Sequences are simulated from a seed that hypothesis draws (walkers moving in the image,
occasional misses, clutter, NaN boxes, repeated and out-of-order timestamps, skipped
frames), so every example is a realistic stream rather than unrelated boxes.
"""

from __future__ import annotations

import json
import math
import random
import uuid
from typing import Any

import pytest
import reference_avro
import reference_scene as ref
from event_strategies import any_event, event_strategy
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agents import crowd, lines, tracker
from agents.evidence_lookup import peek_event_id
from schemas.codec import SINGLE_OBJECT_MAGIC, Codec, default_store
from schemas.events import DERIVED_ID_NAMESPACE, EVENT_TYPES, Event, derived_event_id

SEQUENCES = settings(max_examples=300, deadline=None,
                     suppress_health_check=[HealthCheck.too_slow])


# --------------------------------------------------------------------------- assignment


@SEQUENCES
@given(st.dictionaries(st.tuples(st.integers(0, 4), st.integers(0, 4)),
                       st.one_of(st.floats(0, 2, allow_nan=False),
                                 st.sampled_from([0.0, 0.25, 0.5, 1.0])),
                       max_size=12))
def test_assignment_is_a_maximum_matching_of_least_cost(costs: dict[tuple[int, int], float]
                                                        ) -> None:
    got = tracker.assign(costs)
    assert all(p in costs for p in got)
    assert len({r for r, _ in got}) == len(got) == len({c for _, c in got})
    n, least = ref.brute_force_assignment(costs)
    assert len(got) == n
    assert math.isclose(sum(costs[p] for p in got), least, rel_tol=1e-9, abs_tol=1e-12)


# --------------------------------------------------------------------------- tracker


def _frames(seed: int, n: int) -> list[tuple[float, bool, list[tuple[str, str, Any]]]]:
    """(t, skipped, detections) per frame: walkers, clutter and the odd broken box."""
    rnd = random.Random(seed)
    walkers = [[rnd.random(), rnd.uniform(0.3, 0.9), rnd.uniform(-0.05, 0.05),
                rnd.uniform(-0.02, 0.02), rnd.uniform(0.1, 0.3),
                rnd.choice(["person", "person", "car"])]
               for _ in range(rnd.randint(0, 7))]
    grid = rnd.random() < 0.3  # coarse coordinates: equal boxes, equal costs, ties
    t = rnd.uniform(0, 1e6)
    out = []
    for i in range(n):
        r = rnd.random()
        t += 0.0 if r < 0.05 else (-rnd.uniform(0, 2) if r < 0.1 else rnd.uniform(0.2, 3.5))
        dets = []
        for k, w in enumerate(walkers):
            w[0] += w[2] + rnd.gauss(0, 0.01)
            w[1] += w[3] + rnd.gauss(0, 0.01)
            if rnd.random() < 0.15:
                continue  # missed by the detector
            h = w[4] * rnd.uniform(0.9, 1.1)
            x1, y2 = w[0], w[1]
            b = (x1 - h / 6, y2 - h, x1 + h / 6, y2)
            if grid:
                b = tuple(round(v * 8) / 8 for v in b)
            dets.append((f"d{i}-{k}", w[5], b))
        for k in range(rnd.choice([0, 0, 0, 1, 3])):
            x, y = rnd.random(), rnd.random()
            dets.append((f"c{i}-{k}", rnd.choice(["person", "bicycle"]),
                         (x, y, x + rnd.uniform(-0.1, 0.2), y + rnd.uniform(-0.1, 0.3))))
        if rnd.random() < 0.03:
            dets.append((f"n{i}", "person", (math.nan, 0.1, 0.2, math.nan)))
        rnd.shuffle(dets)
        out.append((t, rnd.random() < 0.1, dets))
    return out


def _params(rnd: random.Random) -> tracker.TrackerParams:
    return tracker.TrackerParams(
        iou_min=rnd.choice([1e-9, 0.1, 0.2, 0.5, 1.0]), max_speed_heights_s=rnd.uniform(0.2, 3),
        min_hits=rnd.randint(1, 3), confirm_window_s=rnd.uniform(0.5, 6),
        max_age_s=rnd.uniform(1, 12), velocity_gain=rnd.choice([0.0, 0.5, 0.8, 1.0]),
        max_predict_s=rnd.uniform(0, 4),
        labels=rnd.choice([("person",), ("person", "car")]))


@SEQUENCES
@given(seed=st.integers(0, 2**32), n=st.integers(1, 30))
def test_tracker_equals_the_reference_tracker(seed: int, n: int) -> None:
    params = _params(random.Random(seed ^ 0x5EED))
    fast = slow = tracker.new_state()
    for t, skipped, dets in _frames(seed, n):
        if skipped:
            fast, fast_step = tracker.hold(fast, t)
            slow, slow_step = ref.tracker_hold(slow, t)
        else:
            fast, fast_step = tracker.update(fast, "cam", t, dets, params)
            slow, slow_step = ref.tracker_update(slow, "cam", t, dets, params, tracker.assign)
        assert repr(fast_step) == repr(slow_step)
        assert repr(fast) == repr(slow)
        # the state lives in a table: what comes back is what JSON keeps
        fast = json.loads(json.dumps(fast))
        slow = json.loads(json.dumps(slow))


# --------------------------------------------------------------------------- crowd


@SEQUENCES
@given(seed=st.integers(0, 2**32), n=st.integers(1, 60))
def test_crowd_equals_the_reference_crowd(seed: int, n: int) -> None:
    rnd = random.Random(seed)
    params = crowd.CrowdParams(
        min_people=rnd.randint(1, 5), clear_below=rnd.randint(0, 5),
        window_s=rnd.choice([0.5, 1.0, 2.5, 10.0]), grace_s=rnd.choice([0.0, 1.0, 2.0]),
        evidence_cap=rnd.randint(1, 5), track_cap=rnd.randint(1, 6))
    fast = slow = crowd.new_state()
    t_us = rnd.randint(0, 10**12)
    for i in range(n):
        r = rnd.random()
        t_us += 0 if r < 0.05 else (-rnd.randint(0, 3 * crowd.US) if r < 0.15
                                    else rnd.randint(1, 3 * crowd.US))
        count = None if rnd.random() < 0.1 else rnd.randint(0, 8)
        track_ids = [f"t{rnd.randint(0, 9)}" for _ in range(rnd.randint(0, 6))]
        evidence: str | int = rnd.choice([i, f"e{i}"])
        armed = rnd.random() < 0.8
        fast, fast_step = crowd.step(fast, t_us, count, track_ids, evidence, armed, params)
        slow, slow_step = ref.crowd_step(slow, t_us, count, track_ids, evidence, armed, params)
        assert repr(fast_step) == repr(slow_step)
        assert repr(fast) == repr(slow)
        fast = json.loads(json.dumps(fast))
        slow = json.loads(json.dumps(slow))


# --------------------------------------------------------------------------- lines


@SEQUENCES
@given(seed=st.integers(0, 2**32), n=st.integers(1, 40))
def test_line_step_equals_the_reference_line_step(seed: int, n: int) -> None:
    rnd = random.Random(seed)
    grid = rnd.random() < 0.5  # points exactly on the line, touching its ends
    pt = (lambda: (rnd.randint(0, 4) / 4, rnd.randint(0, 4) / 4)) if grid else \
        (lambda: (rnd.random(), rnd.random()))
    a, b = pt(), pt()
    fast: dict[str, Any] = {}
    slow: dict[str, Any] = {}
    for i in range(n):
        positions = {f"t{k}": (pt(), rnd.random() < 0.8) for k in range(rnd.randint(0, 5))}
        forget = frozenset(f"t{k}" for k in range(5) if rnd.random() < 0.05)
        fast, fast_out = lines.step(fast, float(i), positions, a, b, forget)
        slow, slow_out = ref.lines_step(slow, float(i), positions, a, b, forget)
        assert repr(fast_out) == repr(slow_out)
        assert repr(fast) == repr(slow)


# --------------------------------------------------------------------------- codec


CODEC_EXAMPLES = settings(max_examples=25, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow])


@pytest.mark.parametrize("name", sorted(EVENT_TYPES))
def test_codec_equals_the_reference_avro_encoding(name: str) -> None:
    """The single-object frame (C3 01, the CRC-64-AVRO of the schema, the body) of every
    event type, against a plain encoder and decoder of the Avro specification driven by
    the committed .avsc files, in both directions."""
    codec = Codec()
    schema = reference_avro.load_avsc(name)
    header = SINGLE_OBJECT_MAGIC + reference_avro.fingerprint(schema)

    @CODEC_EXAMPLES
    @given(event=event_strategy(EVENT_TYPES[name]))
    def check(event: Event) -> None:
        expected = header + reference_avro.encode(schema, event)
        assert codec.encode(event) == expected
        assert codec.decode(expected) == event
        assert reference_avro.decode(schema, expected[len(header):]) == \
            reference_avro.as_datum(schema, event)

    check()


def test_reference_fingerprints_are_the_stores() -> None:
    store = default_store()
    for name in EVENT_TYPES:
        assert reference_avro.fingerprint(reference_avro.load_avsc(name)) == \
            store.reader_fingerprints[name]


@settings(max_examples=200, deadline=None)
@given(event=any_event)
def test_peek_event_id_equals_decoding(event: Event) -> None:
    codec = Codec()
    assert peek_event_id(codec.encode(event)) == codec.decode(codec.encode(event)).event_id


@settings(max_examples=300, deadline=None)
@given(st.lists(st.one_of(st.text(max_size=12), st.integers(), st.floats(allow_nan=False)),
                max_size=5))
def test_derived_event_id_is_uuid5(parts: list[Any]) -> None:
    assert derived_event_id(*parts) == str(
        uuid.uuid5(DERIVED_ID_NAMESPACE, "|".join(map(str, parts))))
