"""Smoke test of `vigil bench e2e --quick`: the benchmark runs against the real stack,
its result is well-formed and the alerts it measures really reached the read model.

Timing is not asserted: on a shared two-core box it says nothing about a regression, and
a flaky latency threshold would train people to ignore this test.
"""

from __future__ import annotations

import json
import math
import time

import pytest

pytestmark = pytest.mark.integration


def test_e2e_bench_quick_measures_alerts_in_the_read_model(stack: dict[str, str]) -> None:
    from tools.bench.e2e import run
    from tools.bench.runner import BenchResult

    t0 = time.monotonic()
    result = run(quick=True)
    elapsed = time.monotonic() - t0

    assert isinstance(result, BenchResult)
    assert result.name == "e2e"
    assert result.unit == "ms p50"
    json.loads(result.to_json())  # serialisable as `vigil bench e2e --json` writes it
    assert math.isfinite(result.value) and result.value > 0
    assert math.isfinite(result.baseline) and result.baseline > 0
    assert result.ratio == pytest.approx(result.baseline / result.value)

    runs = result.details["above_inference"]
    assert len(runs) == 1
    r = runs[0]
    assert r["cameras"] == 8
    # every planted loiterer became an alert row in PostgreSQL, and was timed
    assert r["alerts_seen"] == r["alerts_expected"] > 0
    assert r["p50_ms"] <= r["p99_ms"]
    assert r["worker_rss_mb"] and r["worker_rss_mb"] > 0
    assert isinstance(r["lag_bounded"], bool)
    assert elapsed < 120  # the quick mode's promise is < 90 s; leave slack for a busy box
