"""The scene worker's GC policy, on the real interpreter's collector."""

import gc
import weakref

import pytest

from agents.gc_policy import FreezingCollector


class _Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class _Node:
    """A weak-referenceable object that can sit in a reference cycle."""

    def __init__(self) -> None:
        self.other: object = None


@pytest.fixture(autouse=True)
def _unfrozen():
    gc.unfreeze()
    yield
    gc.unfreeze()


def _cycle() -> weakref.ref:
    a, b = _Node(), _Node()
    a.other, b.other = b, a
    return weakref.ref(a)


def test_freezes_live_objects_once_due() -> None:
    clock = _Clock()
    collector = FreezingCollector(1.0, 600.0, clock)
    collector.tick()
    assert gc.get_freeze_count() == 0  # not due yet
    clock.now = 1.0
    collector.tick()
    assert gc.get_freeze_count() > 0


def test_cycles_frozen_meanwhile_are_returned_by_the_full_collection() -> None:
    clock = _Clock()
    collector = FreezingCollector(1.0, 10.0, clock)
    ref = _cycle()
    clock.now = 1.0
    collector.tick()  # the garbage cycle is frozen with everything else
    gc.collect()
    assert ref() is not None  # a frozen cycle survives ordinary collections
    clock.now = 10.0
    collector.tick()
    assert ref() is None
    assert gc.get_freeze_count() > 0  # and what lives is frozen again


def test_zero_interval_leaves_the_collector_alone() -> None:
    clock = _Clock()
    collector = FreezingCollector(0.0, 10.0, clock)
    clock.now = 100.0
    collector.tick()
    assert gc.get_freeze_count() == 0
