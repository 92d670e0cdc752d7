"""`vigil bench edge --quick` runs and reports a sane result."""

from __future__ import annotations

from edge_producer.bench import run


def test_quick_bench() -> None:
    r = run(quick=True)
    assert r.name == "edge" and r.unit == "cpu_s/cam_min"
    assert r.details["frames_out"] == 6 and r.details["frames_in"] == 150
    assert r.value > 0 and r.baseline > 0 and r.ratio > 1.0
