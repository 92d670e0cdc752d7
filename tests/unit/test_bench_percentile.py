"""The one percentile of the benchmarks (tools.bench.runner.percentile)."""

from __future__ import annotations

import math

from hypothesis import given
from hypothesis import strategies as st

from tools.bench.runner import percentile


def test_no_samples_is_nan() -> None:
    assert math.isnan(percentile([], 0.99))


def test_ranks_of_a_known_sample() -> None:
    xs = [float(v) for v in range(101)]  # 0..100, shuffled order must not matter
    xs.reverse()
    assert (percentile(xs, 0.0), percentile(xs, 0.5), percentile(xs, 0.99),
            percentile(xs, 1.0)) == (0.0, 50.0, 99.0, 100.0)


@given(st.lists(st.floats(-1e6, 1e6), min_size=1, max_size=200),
       st.floats(0.0, 1.0))
def test_a_percentile_is_a_measured_value_and_monotone_in_q(xs: list[float], q: float) -> None:
    p = percentile(xs, q)
    assert p in xs
    assert percentile(xs, 0.0) == min(xs) <= p <= max(xs) == percentile(xs, 1.0)
