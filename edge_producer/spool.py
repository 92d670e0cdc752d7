"""A bounded, append-only on-disk FIFO of encoded events: the edge's outbox.

Every frame event is appended here first and sent to Kafka from the head, in order; the
head only advances past a record once Kafka acknowledged it. So a broker outage, or a
crash, loses nothing within the bound, and replay after recovery keeps the original
order (per-camera sequence numbers prove it). When the bound is hit the oldest segment is
evicted, and the evicted record count is reported (metrics and heartbeats) rather than
hidden.

The disk can fill up before the bound does (a small card, other files on it). A write that
fails with ENOSPC is cut back to the last whole record, then space is made the same way
as for the bound (the oldest pending segment is evicted; a fully acknowledged tail is
recycled) and the write retried. Only when nothing can be freed is the new record
refused (`SpoolFull`). Either way the loss is counted per key (the camera), so the edge
can declare it: a full disk costs frames, never the process and never silently.

Layout: ``seg-<n>.log`` files of records ``[u32 length][u32 crc32][u16 key length][key]
[value]`` and a ``head`` file holding ``<segment> <offset>`` of the first unacknowledged
record, replaced atomically. A torn record at the tail (crash mid-write) is ignored.
"""

from __future__ import annotations

import errno
import io
import os
import struct
import threading
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

_HDR = struct.Struct(">II")
_KEY = struct.Struct(">H")
#: The head file is written padded to this width, so that on a full disk it can be
#: overwritten in place (no new block needed) when the atomic replace cannot be done.
_HEAD_WIDTH = 48
_DISK_FULL = (errno.ENOSPC, errno.EDQUOT)
#: evicted positions remembered for `delivered_after_eviction` (far more than the outbox
#: ever has in flight)
_EVICTED_MEMORY = 10_000


class SpoolFull(Exception):
    """The disk is full and nothing older could be freed: the record was NOT kept."""


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
        self.evicted = 0  # records dropped to stay within the bound or to free disk space
        self.refused = 0  # records not kept at all: disk full, nothing left to free
        #: evicted + refused per key, for the per-camera drop counts the edge declares
        self.lost_by_key: dict[bytes, int] = {}
        self.disk_full_events = 0
        #: recently evicted positions -> key: a copy may still be in flight to Kafka and
        #: be delivered after all (`delivered_after_eviction`); bounded, oldest dropped
        self._evicted_pos: dict[Position, bytes] = {}
        self._lock = threading.Lock()
        # in-memory index of pending records: (segment, offset, size, key); bytes read on
        # demand
        self._index: list[tuple[int, int, int, bytes]] = []
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
                klen = _KEY.unpack_from(body)[0]
                self._index.append((seg, off, _HDR.size + length,
                                    bytes(body[_KEY.size: _KEY.size + klen])))
                self._seg_counts[seg] = self._seg_counts.get(seg, 0) + 1
                off += _HDR.size + length
                good_end = off
            if good_end < len(data):
                with open(self._path(seg), "r+b") as f:
                    f.truncate(good_end)
        self._tail_seg = segs[-1] if segs else head.segment
        if not self._path(self._tail_seg).exists():
            self._path(self._tail_seg).touch()
        self._tail = self._open_tail()
        self._bytes = sum(s for _, _, s, _ in self._index)

    def _open_tail(self) -> io.FileIO:
        """Unbuffered, so a failed write leaves nothing half-written in a Python buffer
        to be flushed later in the middle of the next record."""
        return open(self._path(self._tail_seg), "ab", buffering=0)

    # ------------------------------------------------------------------ API

    @property
    def backlog(self) -> int:
        with self._lock:
            return len(self._index) - self._first

    @property
    def size_bytes(self) -> int:
        return self._bytes

    @property
    def lost(self) -> int:
        """Records the spool could not keep (evicted or refused): declared, never sent."""
        return self.evicted + self.refused

    def append(self, key: bytes, value: bytes, *, sync: bool = False,
               on_kept: Callable[[], None] | None = None) -> None:
        """Append one record; raises `SpoolFull` (counted) if the disk is full and nothing
        older can be freed. Other OS errors propagate. `on_kept` runs once the record is
        written, while the lock still hides it from `peek` and `ack`: what it records
        (the edge's sequence number) is on disk before the record can be sent."""
        body = _KEY.pack(len(key)) + key + value
        rec = _HDR.pack(len(body), zlib.crc32(body)) + body
        with self._lock:
            while True:
                try:
                    self._write(key, rec, sync)
                    break
                except OSError as exc:
                    if exc.errno not in _DISK_FULL:
                        raise
                    self.disk_full_events += 1
                    if not self._free_space():
                        self.refused += 1
                        self.lost_by_key[key] = self.lost_by_key.get(key, 0) + 1
                        raise SpoolFull(f"spool disk full ({self.dir}); record not kept") \
                            from exc
            if on_kept is not None:
                on_kept()
            self._evict()

    def _write(self, key: bytes, rec: bytes, sync: bool) -> None:
        if self._tail.tell() + len(rec) > self.segment_bytes and self._tail.tell() > 0:
            self._roll()
        off = self._tail.tell()
        try:
            view = memoryview(rec)
            while view:
                n = self._tail.write(view)
                view = view[n or 0:]
            if sync:
                os.fsync(self._tail.fileno())
        except OSError:
            # cut the torn record off, so the next record starts where the index says
            os.ftruncate(self._tail.fileno(), off)
            self._tail.seek(off)
            raise
        self._index.append((self._tail_seg, off, len(rec), key))
        self._seg_counts[self._tail_seg] = self._seg_counts.get(self._tail_seg, 0) + 1
        self._bytes += len(rec)

    def _roll(self) -> None:
        """Start a new tail segment; a tail left with nothing pending is deleted."""
        self._tail.close()
        old = self._tail_seg
        self._tail_seg += 1
        self._tail = self._open_tail()
        if not self._seg_counts.get(old):
            self._seg_counts.pop(old, None)
            self._path(old).unlink(missing_ok=True)

    def _free_space(self) -> bool:
        """Make room after ENOSPC: recycle an acknowledged tail, else evict the oldest
        pending segment (rolling the tail first if it is the only one). False when there
        is nothing left to free."""
        if self._tail.tell() > 0 and not self._seg_counts.get(self._tail_seg):
            self._roll()
            return True
        oldest = self._index[self._first][0] if self._first < len(self._index) else None
        if oldest is None:
            return False  # nothing of ours is pending: the disk is full of other files
        if oldest == self._tail_seg:
            self._roll()  # the old tail becomes evictable on the next attempt
            return True
        self._evict_segment(oldest)
        return True

    def _evict(self) -> None:
        """Drop whole oldest segments (never the one being written) until within bound."""
        while self._bytes > self.max_bytes:
            oldest = self._index[self._first][0] if self._first < len(self._index) else None
            if oldest is None or oldest == self._tail_seg:
                break
            self._evict_segment(oldest)

    def _evict_segment(self, seg: int) -> None:
        while self._first < len(self._index) and self._index[self._first][0] == seg:
            _, off, size, key = self._index[self._first]
            self._bytes -= size
            self._first += 1
            self.evicted += 1
            self.lost_by_key[key] = self.lost_by_key.get(key, 0) + 1
            self._evicted_pos[Position(seg, off)] = key
        while len(self._evicted_pos) > _EVICTED_MEMORY:
            del self._evicted_pos[next(iter(self._evicted_pos))]
        self._seg_counts.pop(seg, None)
        self._path(seg).unlink(missing_ok=True)
        self._write_head()

    def last_per_key(self) -> dict[bytes, Record]:
        """The newest pending record of every key (read from disk)."""
        with self._lock:
            newest: dict[bytes, int] = {}
            for i in range(len(self._index) - 1, self._first - 1, -1):
                newest.setdefault(self._index[i][3], i)
            entries = [(k, self._index[i]) for k, i in newest.items()]
        out = {}
        for key, (seg, off, size, _) in entries:
            try:
                with open(self._path(seg), "rb") as f:
                    f.seek(off)
                    raw = f.read(size)
            except FileNotFoundError:  # evicted meanwhile
                continue
            body = raw[_HDR.size:]
            klen = _KEY.unpack_from(body)[0]
            out[key] = Record(Position(seg, off), key, body[_KEY.size + klen:], size)
        return out

    def positions(self, n: int) -> list[Position]:
        """The positions of the first `n` pending records, oldest first (no disk read)."""
        with self._lock:
            return [Position(seg, off) for seg, off, _, _ in
                    self._index[self._first: self._first + n]]

    def delivered_after_eviction(self, pos: Position) -> bool:
        """Kafka acknowledged a record that was evicted while a copy was in flight: it
        is not lost after all, so it is taken off the loss counts (which must equal the
        frames missing downstream, not exceed them). False if `pos` was not evicted."""
        with self._lock:
            key = self._evicted_pos.pop(pos, None)
            if key is None:
                return False
            self.evicted -= 1
            self.lost_by_key[key] -= 1
            return True

    def peek(self, n: int, skip: int = 0) -> list[Record]:
        """Up to `n` pending records after the first `skip` ones, oldest first."""
        with self._lock:
            entries = self._index[self._first + skip: self._first + skip + n]
        out = []
        handles: dict[int, BinaryIO] = {}
        try:
            for seg, off, size, _ in entries:
                f = handles.get(seg)
                if f is None:
                    f = handles[seg] = open(self._path(seg), "rb")  # noqa: SIM115
                f.seek(off)
                raw = f.read(size)
                body = raw[_HDR.size:]
                klen = _KEY.unpack_from(body)[0]
                key = body[_KEY.size: _KEY.size + klen]
                out.append(Record(Position(seg, off), key, body[_KEY.size + klen:], size))
        except FileNotFoundError:  # evicted under us: the caller re-peeks
            return []
        finally:
            for f in handles.values():
                f.close()
        return out

    def ack(self, pos: Position) -> None:
        """Acknowledge every pending record up to and including `pos`."""
        with self._lock:
            while self._first < len(self._index):
                seg, off, size, _ = self._index[self._first]
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
            seg, off, _, _ = self._index[self._first]
        else:
            seg, off = self._tail_seg, self._tail.tell()
        text = f"{seg} {off}".ljust(_HEAD_WIDTH).encode()
        tmp = self.dir / "head.tmp"
        try:
            tmp.write_bytes(text)
            tmp.replace(self.dir / "head")
        except OSError as exc:
            if exc.errno not in _DISK_FULL:
                raise
            tmp.unlink(missing_ok=True)
            # in place: same width, so no new block; a stale head only re-sends records
            # after a crash, which consumers drop by event id
            try:
                with open(self.dir / "head", "r+b") as f:
                    f.write(text)
            except OSError as exc2:
                if exc2.errno not in (*_DISK_FULL, errno.ENOENT):
                    raise

    def close(self) -> None:
        with self._lock:
            self._write_head()
            self._tail.close()
