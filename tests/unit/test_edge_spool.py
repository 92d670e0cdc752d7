"""The spool: FIFO order, acknowledgement, restart durability, bounded eviction."""

from __future__ import annotations

import tempfile
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from edge_producer.spool import Spool


def _values(spool: Spool) -> list[int]:
    return [int(r.value[:8]) for r in spool.peek(10_000)]


def test_order_ack_and_restart(tmp_path: Path) -> None:
    s = Spool(tmp_path, 1_000_000, 300)
    for i in range(50):
        s.append(b"cam", b"%08d" % i + b"x" * 20)
    assert _values(s) == list(range(50))
    s.ack(s.peek(10)[-1].pos)
    assert s.backlog == 40
    s.close()
    s2 = Spool(tmp_path, 1_000_000, 300)
    assert _values(s2) == list(range(10, 50))
    s2.append(b"cam", b"%08d" % 50)
    assert _values(s2)[-1] == 50


def test_torn_tail_is_ignored(tmp_path: Path) -> None:
    s = Spool(tmp_path, 1_000_000, 10_000)
    for i in range(3):
        s.append(b"k", b"%08d" % i)
    s.close()
    seg = sorted(tmp_path.glob("seg-*.log"))[-1]
    seg.write_bytes(seg.read_bytes()[:-3])
    assert _values(Spool(tmp_path, 1_000_000, 10_000)) == [0, 1]


@settings(max_examples=40, deadline=None)
@given(st.lists(st.one_of(st.integers(1, 200), st.just(-1)), max_size=120),
       st.integers(400, 3000))
def test_bounded_fifo_never_reorders_or_duplicates(ops: list[int], bound: int) -> None:
    """Appends (size n) and acks (-1) in any mix: what is pending is always a suffix of what
    was appended and not acknowledged, in order, and appended = acked + pending + evicted."""
    with tempfile.TemporaryDirectory() as d:
        s = Spool(Path(d), bound, 256)
        seq = acked = 0
        for op in ops:
            if op == -1:
                head = s.peek(1)
                if head:
                    s.ack(head[0].pos)
                    acked += 1
            else:
                s.append(b"k", b"%08d" % seq + b"x" * op)
                seq += 1
            pending = _values(s)
            assert pending == list(range(seq - len(pending), seq))
            assert acked + len(pending) + s.evicted == seq
            assert s.size_bytes <= bound + 256 + 300
        s.close()
