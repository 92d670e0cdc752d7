"""The one retry delay of the project: doubling from an initial delay up to a cap, with
optional jitter, back to the start after a success.

Why one: every loop that waits for a dependency to come back (the edge's Kafka outbox,
camera reconnects and segment uploads, the inference agent's object store and Triton, the
projector's PostgreSQL, the evidence capture, the notifier's delivery attempts) used to
carry its own ``delay = min(delay * 2, cap)``. The loops differ in what they do between
attempts; the delay is the same thing everywhere, so it lives here.

Jitter spreads reconnects of many clients (edges to one broker, uploads to one store) so
they do not arrive in step; a loop that is alone on its dependency (the projector on its
database) does without.
"""

from __future__ import annotations

import random

#: doubling stops mattering long before this: 2**1000 times any sane initial delay is far
#: above any cap, and a float power beyond ~2**1023 overflows
_MAX_DOUBLINGS = 1000


def delay_after(failures: int, initial_s: float, max_s: float) -> float:
    """The delay before the next attempt after `failures` failures in a row:
    ``initial_s * 2 ** (failures - 1)`` (`initial_s` for 0 or 1), never more than `max_s`."""
    return min(max_s, initial_s * 2.0 ** min(max(0, failures - 1), _MAX_DOUBLINGS))


class Backoff:
    """The delay state of one retry loop: `failed` after each failure returns how long
    to wait now, `reset` after a success starts again from `initial_s`.

    `jitter` (low, high) multiplies each wait by a uniform random factor in that range;
    None waits exactly the delay."""

    __slots__ = ("failures", "initial_s", "jitter", "max_s")

    def __init__(self, initial_s: float, max_s: float,
                 jitter: tuple[float, float] | None = None) -> None:
        if initial_s <= 0:  # a zero delay would spin on a dependency that is down
            raise ValueError(f"backoff needs an initial delay > 0, not {initial_s}")
        self.initial_s, self.max_s, self.jitter = initial_s, max_s, jitter
        self.failures = 0

    @property
    def delay_s(self) -> float:
        """The (un-jittered) delay the next failure will wait, for log lines."""
        return delay_after(self.failures + 1, self.initial_s, self.max_s)

    def failed(self) -> float:
        """Count a failure; the seconds to wait before the next attempt."""
        delay = self.delay_s
        self.failures += 1
        return delay * random.uniform(*self.jitter) if self.jitter else delay

    def reset(self) -> None:
        self.failures = 0
