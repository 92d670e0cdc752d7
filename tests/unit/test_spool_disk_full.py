"""The spool on a full disk: ENOSPC never tears a record, never crashes the caller, and
every record it could not keep is counted (per key) so the edge can declare it.

The disk is simulated at the one boundary the spool writes through (its tail file), with
the kernel's behaviour on a full disk: a write that does not fit is cut short, the next
one fails with ENOSPC. The real filesystem version is the `spool_full` fault scenario.
"""

from __future__ import annotations

import errno
import io
from pathlib import Path

import pytest

from edge_producer.spool import Spool, SpoolFull


class _Disk:
    """A byte budget for the spool's segment files."""

    def __init__(self, directory: Path, capacity: int) -> None:
        self.dir, self.capacity = directory, capacity

    def used(self) -> int:
        return sum(p.stat().st_size for p in self.dir.glob("seg-*.log"))

    def open(self, path: Path) -> io.FileIO:
        disk = self

        class _File(io.FileIO):
            def write(self, b: object) -> int:
                data = bytes(b)  # type: ignore[call-overload]
                room = disk.capacity - disk.used()
                if room <= 0:
                    raise OSError(errno.ENOSPC, "No space left on device")
                return super().write(data[:room])

        return _File(str(path), "ab")


def _spool(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capacity: int,
           segment: int) -> Spool:
    disk = _Disk(tmp_path, capacity)
    monkeypatch.setattr(Spool, "_open_tail", lambda self: disk.open(self._path(self._tail_seg)))
    return Spool(tmp_path, 10**9, segment)


def _values(s: Spool) -> list[int]:
    return [int(r.value[:8]) for r in s.peek(10_000)]


def _rec(i: int) -> bytes:
    return b"%08d" % i + b"x" * 90  # 110 bytes on disk with header and key


def test_full_disk_evicts_oldest_and_counts_per_key(tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    s = _spool(tmp_path, monkeypatch, capacity=600, segment=230)
    for i in range(40):
        s.append(b"cam-a" if i % 2 else b"cam-b", _rec(i))
    pending = _values(s)
    assert pending == list(range(40 - len(pending), 40)) and pending
    assert s.evicted == 40 - len(pending) and s.refused == 0 and s.disk_full_events > 0
    assert sum(s.lost_by_key.values()) == s.lost == s.evicted
    assert set(s.lost_by_key) == {b"cam-a", b"cam-b"}
    s.close()
    assert _values(Spool(tmp_path, 10**9, 230)) == pending  # nothing torn on disk


def test_record_larger_than_the_free_disk_is_refused(tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    s = _spool(tmp_path, monkeypatch, capacity=150, segment=10_000)
    s.append(b"cam", _rec(0))
    with pytest.raises(SpoolFull):
        s.append(b"cam", _rec(1) * 2)
    # the big record evicted the older one trying to make room, then was refused
    assert (s.evicted, s.refused, s.lost_by_key) == (1, 1, {b"cam": 2})
    s.append(b"cam", _rec(2))  # the disk is usable again
    assert _values(s) == [2]
    s.close()
    assert _values(Spool(tmp_path, 10**9, 10_000)) == [2]


def test_acknowledged_tail_is_recycled_without_loss(tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    s = _spool(tmp_path, monkeypatch, capacity=600, segment=10_000)
    for i in range(5):
        s.append(b"cam", _rec(i))
    s.ack(s.peek(10)[-1].pos)
    for i in range(5, 15):  # the tail is full of acknowledged records: reuse the space
        s.append(b"cam", _rec(i))
        s.ack(s.peek(1)[0].pos)
    assert s.lost == 0 and s.backlog == 0


def test_evicted_record_delivered_from_flight_is_not_counted_lost(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The outbox may have sent a record before the full disk evicted it; if Kafka then
    acknowledges that copy, the declared drops must shrink to match what is missing."""
    s = _spool(tmp_path, monkeypatch, capacity=600, segment=230)
    s.append(b"cam", _rec(0))
    in_flight = s.peek(1)[0].pos
    for i in range(1, 20):
        s.append(b"cam", _rec(i))
    lost = s.lost_by_key[b"cam"]
    assert lost > 0 and in_flight not in {r.pos for r in s.peek(100)}
    assert s.delivered_after_eviction(in_flight)
    assert (s.lost_by_key[b"cam"], s.evicted) == (lost - 1, lost - 1)
    assert not s.delivered_after_eviction(in_flight)  # counted back once only
    assert not s.delivered_after_eviction(s.peek(1)[0].pos)  # never evicted
