"""A bounded, append-only on-disk FIFO of encoded events: the edge's outbox.

Every frame event is appended here first and sent to Kafka from the head, in order; the
head only advances past a record once Kafka acknowledged it. So a broker outage, or a
crash, loses nothing within the bound, and replay after recovery keeps the original
order (per-camera sequence numbers prove it). When the bound is hit the oldest segment is
evicted, and the evicted record count is reported (metrics and heartbeats) rather than
hidden.

Layout: ``seg-<n>.log`` files of records ``[u32 length][u32 crc32][u16 key length][key]
[value]`` and a ``head`` file holding ``<segment> <offset>`` of the first unacknowledged
record, replaced atomically. A torn record at the tail (crash mid-write) is ignored.
"""

from __future__ import annotations

import os
import struct
import threading
import zlib
from dataclasses import dataclass
from pathlib import Path

_HDR = struct.Struct(">II")
_KEY = struct.Struct(">H")


@dataclass(frozen=True, slots=True)
class Position:
    segment: int
    offset: int


@dataclass(frozen=True, slots=True)
class Record:
    pos: Position
    key: bytes
    value: bytes
    size: int


class Spool:
    def __init__(self, directory: Path, max_bytes: int, segment_bytes: int):
        self.dir = directory
        self.dir.mkdir(parents=True, exist_ok=True)
        self.max_bytes = max_bytes
        self.segment_bytes = min(segment_bytes, max(max_bytes // 2, 1024))
        self.evicted = 0
        self._lock = threading.Lock()
        # in-memory index of pending records: (segment, offset, size); bytes read on demand
        self._index: list[tuple[int, int, int]] = []
        self._first = 0  # index of the first pending record in self._index
        self._seg_counts: dict[int, int] = {}
        self._load()

    # ------------------------------------------------------------------ state

    def _segments(self) -> list[int]:
        return sorted(int(p.stem.split("-")[1]) for p in self.dir.glob("seg-*.log"))

    def _path(self, seg: int) -> Path:
        return self.dir / f"seg-{seg:08d}.log"

    def _load(self) -> None:
        head = Position(0, 0)
        hf = self.dir / "head"
        if hf.exists():
            a, b = hf.read_text().split()
            head = Position(int(a), int(b))
        segs = self._segments()
        for seg in segs:
            if seg < head.segment:
                self._path(seg).unlink(missing_ok=True)
                continue
            data = self._path(seg).read_bytes()
            off = head.offset if seg == head.segment else 0
            good_end = off
            while off + _HDR.size <= len(data):
                length, crc = _HDR.unpack_from(data, off)
                body = data[off + _HDR.size: off + _HDR.size + length]
                if len(body) < length or zlib.crc32(body) != crc:
                    break  # torn tail
                self._index.append((seg, off, _HDR.size + length))
                self._seg_counts[seg] = self._seg_counts.get(seg, 0) + 1
                off += _HDR.size + length
                good_end = off
            if good_end < len(data):
                with open(self._path(seg), "r+b") as f:
                    f.truncate(good_end)
        self._tail_seg = segs[-1] if segs else head.segment
        if not self._path(self._tail_seg).exists():
            self._path(self._tail_seg).touch()
        self._tail = open(self._path(self._tail_seg), "ab")  # noqa: SIM115 - kept open
        self._bytes = sum(s for _, _, s in self._index)

    # ------------------------------------------------------------------ API

    @property
    def backlog(self) -> int:
        with self._lock:
            return len(self._index) - self._first

    @property
    def size_bytes(self) -> int:
        return self._bytes

    def append(self, key: bytes, value: bytes, *, sync: bool = False) -> None:
        body = _KEY.pack(len(key)) + key + value
        rec = _HDR.pack(len(body), zlib.crc32(body)) + body
        with self._lock:
            if self._tail.tell() + len(rec) > self.segment_bytes and self._tail.tell() > 0:
                self._tail.close()
                self._tail_seg += 1
                self._tail = open(self._path(self._tail_seg), "ab")  # noqa: SIM115
            off = self._tail.tell()
            self._tail.write(rec)
            self._tail.flush()
            if sync:
                os.fsync(self._tail.fileno())
            self._index.append((self._tail_seg, off, len(rec)))
            self._seg_counts[self._tail_seg] = self._seg_counts.get(self._tail_seg, 0) + 1
            self._bytes += len(rec)
            self._evict()

    def _evict(self) -> None:
        """Drop whole oldest segments (never the one being written) until within bound."""
        while self._bytes > self.max_bytes:
            oldest = self._index[self._first][0] if self._first < len(self._index) else None
            if oldest is None or oldest == self._tail_seg:
                break
            n = 0
            while self._first < len(self._index) and self._index[self._first][0] == oldest:
                self._bytes -= self._index[self._first][2]
                self._first += 1
                n += 1
            self.evicted += n
            self._seg_counts.pop(oldest, None)
            self._path(oldest).unlink(missing_ok=True)
            self._write_head()

    def peek(self, n: int, skip: int = 0) -> list[Record]:
        """Up to `n` pending records after the first `skip` ones, oldest first."""
        with self._lock:
            entries = self._index[self._first + skip: self._first + skip + n]
        out = []
        handles: dict[int, object] = {}
        try:
            for seg, off, size in entries:
                f = handles.get(seg)
                if f is None:
                    f = handles[seg] = open(self._path(seg), "rb")  # noqa: SIM115
                f.seek(off)  # type: ignore[attr-defined]
                raw = f.read(size)  # type: ignore[attr-defined]
                body = raw[_HDR.size:]
                klen = _KEY.unpack_from(body)[0]
                key = body[_KEY.size: _KEY.size + klen]
                out.append(Record(Position(seg, off), key, body[_KEY.size + klen:], size))
        except FileNotFoundError:  # evicted under us: the caller re-peeks
            return []
        finally:
            for f in handles.values():
                f.close()  # type: ignore[attr-defined]
        return out

    def ack(self, pos: Position) -> None:
        """Acknowledge every pending record up to and including `pos`."""
        with self._lock:
            while self._first < len(self._index):
                seg, off, size = self._index[self._first]
                if (seg, off) > (pos.segment, pos.offset):
                    break
                self._first += 1
                self._bytes -= size
                self._seg_counts[seg] -= 1
                if self._seg_counts[seg] == 0 and seg != self._tail_seg:
                    del self._seg_counts[seg]
                    self._path(seg).unlink(missing_ok=True)
            if self._first > 4096:
                del self._index[: self._first]
                self._first = 0
            self._write_head()

    def _write_head(self) -> None:
        if self._first < len(self._index):
            seg, off, _ = self._index[self._first]
        else:
            seg, off = self._tail_seg, self._tail.tell()
        tmp = self.dir / "head.tmp"
        tmp.write_text(f"{seg} {off}")
        tmp.replace(self.dir / "head")

    def close(self) -> None:
        with self._lock:
            self._write_head()
            self._tail.close()
