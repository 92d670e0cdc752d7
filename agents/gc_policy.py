"""Keeping Python's cyclic garbage collector off the scene agent's camera states.

The scene worker keeps every camera's decoded state in memory (about 90 small dicts and
lists per camera) and replaces part of it on every frame. Those objects never form
reference cycles, and they are freed by reference counting when replaced, but each
collection still walks every live one: at 1000 cameras a young collection took
80-150 ms, several times every 10 s, and the worker handled 1,290 frames/s in the
benchmark's backlog phase against 1,730 with this policy.

`FreezingCollector` moves every live object into the interpreter's permanent generation
(``gc.freeze``) every `freeze_s`, which the collector never scans, and once every
`full_s` unfreezes and runs a full collection, so that cyclic garbage frozen in the
meantime is returned (measured at 1000 cameras: 78 objects in the first 20 s, none in
each 20 s after). A frozen object is still freed as soon as nothing refers to it; what
freezing delays is only the collection of cycles, by at most `full_s`. The full
collection pauses the worker (300-420 ms at 1000 cameras), once per `full_s`.

This is the policy CPython documents for ``gc.freeze`` (objects that live long and are
not garbage), applied periodically rather than once, because the states are created
while the worker runs.
"""

from __future__ import annotations

import gc
import logging
import time
from collections.abc import Callable

log = logging.getLogger(__name__)


class FreezingCollector:
    """Call `tick` often (the scene agent does, once per batch); it costs a clock read
    unless a freeze or a full collection is due."""

    def __init__(self, freeze_s: float, full_s: float,
                 clock: Callable[[], float] = time.monotonic):
        self.freeze_s = freeze_s
        self.full_s = full_s
        self._clock = clock
        now = clock()
        self._next_freeze = now + freeze_s
        self._next_full = now + full_s

    def tick(self) -> None:
        if not self.freeze_s:
            return
        now = self._clock()
        if now < self._next_freeze:
            return
        if now >= self._next_full:
            self._next_full = now + self.full_s
            t0 = time.perf_counter()
            gc.unfreeze()
            found = gc.collect()
            log.info("gc: full collection found %d unreachable objects in %.0f ms",
                     found, (time.perf_counter() - t0) * 1000)
        gc.freeze()
        self._next_freeze = now + self.freeze_s
