"""vigil.retry: the doubling, capped, optionally jittered retry delay every retry loop uses."""

from __future__ import annotations

import math
import random

import pytest

from vigil.retry import Backoff, delay_after


def test_delay_doubles_from_the_initial_delay_up_to_the_cap() -> None:
    assert [delay_after(n, 0.5, 10.0) for n in range(0, 8)] == \
        [0.5, 0.5, 1.0, 2.0, 4.0, 8.0, 10.0, 10.0]


def test_a_long_outage_does_not_overflow() -> None:
    # a camera down for weeks counts a failure a minute: 2 ** 40_000 is no float
    assert delay_after(40_000, 1.0, 60.0) == 60.0
    assert delay_after(40_000, 0.2, math.inf) > 1e300


def test_backoff_waits_the_doubling_delay_and_starts_again_after_reset() -> None:
    b = Backoff(1.0, 5.0)
    assert b.delay_s == 1.0
    assert [b.failed() for _ in range(5)] == [1.0, 2.0, 4.0, 5.0, 5.0]
    assert b.failures == 5
    b.reset()
    assert b.failed() == 1.0


def test_jitter_stays_within_its_factors_of_the_delay() -> None:
    random.seed(7)
    b = Backoff(2.0, 2.0, jitter=(0.5, 1.0))
    waits = [b.failed() for _ in range(200)]
    assert all(1.0 <= w <= 2.0 for w in waits)
    assert len(set(waits)) > 100  # spread, not a constant


def test_a_zero_initial_delay_is_refused() -> None:
    with pytest.raises(ValueError, match="initial delay > 0"):
        Backoff(0.0, 1.0)
