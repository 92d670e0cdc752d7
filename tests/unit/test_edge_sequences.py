"""Edge sequence numbers across a SIGKILL at exact points (issue 24, `edge_kill`).

The fault suite once found camera frame 24 missing after an edge SIGKILL: the number had
been written to the sequence file, then the camera thread waited for the spool to drain
(a recorded source played flat out waits rather than drop frames) and the process died
before the frame reached the spool; the restarted edge carried on at 25. Here a child
process runs the real `Edge._emit` path on a real spool and sequence store and SIGKILLs
itself at one exact point; the parent restarts the edge on the same state folder, emits
more frames and reads the spool: the sequence numbers must run 1..n with no gap and no
number used twice. Kafka is not involved (the outbox is not started): the spool is the
boundary whose content is judged.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest

from edge_producer.config import CameraConfig, EdgeConfig
from edge_producer.runtime import Edge, MotionMeter
from schemas.events import FrameCaptured
from schemas.producer import EventProducer


class NoKafka:
    """The outbox is never started; nothing may be produced through this."""

    def produce(self, *_: object, **__: object) -> None:
        raise AssertionError("nothing is sent in these tests")

    def poll(self, _timeout: float = 0) -> int:
        return 0

    def flush(self, _timeout: float = 0) -> int:
        return 0


def make_edge(state: Path) -> tuple[Edge, CameraConfig]:
    cam = CameraConfig(camera_id="cam-1", url="sim://loiterer")
    cfg = EdgeConfig(edge_id="edge-t", site_id="site-t", state_dir=state, cameras=[cam])
    return Edge(cfg, producer=EventProducer(NoKafka())), cam  # type: ignore[arg-type]


def emit(edge: Edge, cam: CameraConfig, n: int) -> None:
    img = np.full((48, 64, 3), 128, dtype=np.uint8)
    st = edge.cameras[cam.camera_id]
    for _ in range(n):
        edge._emit(cam, st, img, datetime.now(UTC), MotionMeter())


def spooled_sequences(edge: Edge) -> list[int]:
    out = []
    for rec in edge.spool.peek(10_000):
        e = edge._codec.decode(rec.value)
        assert isinstance(e, FrameCaptured)
        out.append(e.sequence)
    return out


#: where the child kills itself, on the 4th frame: each patch replaces one step of
#: `_emit` with a SIGKILL (after the steps before it have run for real)
KILL_POINTS = {
    # the wait for the spool to drain (recorded sources) — where issue 24's kill landed
    "waiting_for_the_spool": "edge.degraded_for = kill_on_call(edge.degraded_for)",
    # about to write the record: everything before it done
    "before_the_spool_write": "edge.spool._write = kill_on_call(edge.spool._write)",
    # the record is written, its number not yet committed
    "after_the_spool_write": "edge.seqs.commit = kill_on_call(edge.seqs.commit)",
}

CHILD = """
import os, signal, sys
from pathlib import Path
sys.path.insert(0, {root!r})
from tests.unit.test_edge_sequences import make_edge, emit
edge, cam = make_edge(Path({state!r}))
emit(edge, cam, 3)
calls = [0]
def kill_on_call(fn):
    def wrapped(*a, **k):
        calls[0] += 1
        if calls[0] == 1:
            os.kill(os.getpid(), signal.SIGKILL)
        return fn(*a, **k)
    return wrapped
{patch}
emit(edge, cam, 1)
print("not killed")
"""


@pytest.mark.parametrize("point", sorted(KILL_POINTS))
def test_sigkill_mid_frame_leaves_no_sequence_gap(tmp_path: Path, point: str) -> None:
    root = str(Path(__file__).resolve().parents[2])
    code = textwrap.dedent(CHILD).format(root=root, state=str(tmp_path),
                                         patch=KILL_POINTS[point])
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120, cwd=root)
    assert res.returncode == -9, (res.returncode, res.stdout, res.stderr[-2000:])
    edge, cam = make_edge(tmp_path)  # the restart
    emit(edge, cam, 2)
    seqs = spooled_sequences(edge)
    assert len(seqs) == len(set(seqs)), f"a sequence number used twice: {seqs}"
    assert seqs == list(range(1, len(seqs) + 1)), f"sequence gap: {seqs}"
    # the frame being made durable at the kill is there iff its record was written
    assert len(seqs) == (6 if point == "after_the_spool_write" else 5), seqs


def test_declared_drop_uses_its_number(tmp_path: Path) -> None:
    """A frame the full spool refused is declared dropped: its number is not reused (a
    gap downstream is then a declared drop, counted per camera)."""
    from edge_producer.spool import SpoolFull

    edge, cam = make_edge(tmp_path)
    emit(edge, cam, 2)
    real = edge.spool.append

    def refuse(key: bytes, value: bytes, **_: object) -> None:
        edge.spool.refused += 1
        edge.spool.lost_by_key[key] = edge.spool.lost_by_key.get(key, 0) + 1
        raise SpoolFull("test: disk full")

    edge.spool.append = refuse  # type: ignore[method-assign]
    emit(edge, cam, 1)
    edge.spool.append = real  # type: ignore[method-assign]
    emit(edge, cam, 1)
    assert spooled_sequences(edge) == [1, 2, 4]
    assert edge.frames_dropped(cam.camera_id) == 1
