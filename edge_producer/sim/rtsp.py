"""A minimal RTSP server for the synthetic scene, so the edge's RTSP path (live stream,
wall-clock event time, reconnects) can be exercised without a camera or GStreamer.

Deliberately small: RTSP 1.0 with OPTIONS/DESCRIBE/SETUP/PLAY/TEARDOWN, RTP over the RTSP
TCP connection (interleaved, RFC 2326 10.12; UDP is refused with 461 so clients fall back
to TCP), H.264 packetised per RFC 6184 (single NAL units and FU-A). The scene is encoded
once with PyAV/libx264 (no B-frames, like most IP cameras, SPS/PPS repeated before every
IDR) and streamed in real time, looping. Loopback only by default.
"""

from __future__ import annotations

import base64
import logging
import random
import socketserver
import struct
import threading
import time
from fractions import Fraction

import av

from edge_producer.sim.render import iter_frames
from edge_producer.sim.scenario import Scenario

log = logging.getLogger(__name__)

MTU_PAYLOAD = 1400


def split_annexb(data: bytes) -> list[bytes]:
    """NAL units of an Annex B byte stream (start codes 00 00 01 / 00 00 00 01)."""
    nals: list[bytes] = []
    i, n = 0, len(data)
    starts = []
    while i < n - 2:
        if data[i] == 0 and data[i + 1] == 0 and data[i + 2] == 1:
            starts.append(i + 3)
            i += 3
        else:
            i += 1
    for k, s in enumerate(starts):
        end = starts[k + 1] - 3 if k + 1 < len(starts) else n
        nal = data[s:end].rstrip(b"\x00") if k + 1 < len(starts) else data[s:end]
        if nal:
            nals.append(nal)
    return nals


def encode_access_units(scenario: Scenario, gop_s: float = 2.0) -> list[list[bytes]]:
    """The scene as H.264 access units (lists of NAL units), one per frame."""
    rate = Fraction(scenario.fps).limit_denominator(1000)
    ctx = av.CodecContext.create("libx264", "w")
    ctx.width, ctx.height, ctx.pix_fmt = scenario.width, scenario.height, "yuv420p"
    ctx.time_base = 1 / rate
    ctx.framerate = rate
    ctx.gop_size = max(round(gop_s * scenario.fps), 1)
    ctx.options = {"preset": "veryfast", "tune": "zerolatency", "bframes": "0",
                   "x264-params": "repeat-headers=1:sc_threshold=0"}
    units: list[list[bytes]] = []
    for f in iter_frames(scenario):
        vf = av.VideoFrame.from_ndarray(f.image, format="bgr24")
        vf.pts = f.index
        units.extend(split_annexb(bytes(p)) for p in ctx.encode(vf))
    units.extend(split_annexb(bytes(p)) for p in ctx.encode(None))
    return units


def rtp_packets(nals: list[bytes], seq: int, ts: int, ssrc: int) -> tuple[list[bytes], int]:
    """RTP packets (RFC 6184) for one access unit; returns them and the next sequence."""
    payloads: list[bytes] = []
    for nal in nals:
        if len(nal) <= MTU_PAYLOAD:
            payloads.append(nal)
            continue
        indicator = (nal[0] & 0xE0) | 28
        kind = nal[0] & 0x1F
        body = nal[1:]
        for off in range(0, len(body), MTU_PAYLOAD):
            chunk = body[off:off + MTU_PAYLOAD]
            header = kind | (0x80 if off == 0 else 0) | (
                0x40 if off + MTU_PAYLOAD >= len(body) else 0)
            payloads.append(bytes([indicator, header]) + chunk)
    out = []
    for k, payload in enumerate(payloads):
        marker = 0x80 if k == len(payloads) - 1 else 0
        out.append(struct.pack(">BBHII", 0x80, marker | 96, seq & 0xFFFF, ts & 0xFFFFFFFF,
                               ssrc) + payload)
        seq += 1
    return out, seq


class _Handler(socketserver.StreamRequestHandler):
    server: RtspServer

    def _reply(self, cseq: str, status: str = "200 OK", headers: dict[str, str] | None = None,
               body: bytes = b"") -> None:
        lines = [f"RTSP/1.0 {status}", f"CSeq: {cseq}"]
        lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
        if body:
            lines.append(f"Content-Length: {len(body)}")
        self.wfile.write(("\r\n".join(lines) + "\r\n\r\n").encode() + body)

    def handle(self) -> None:
        playing: threading.Event | None = None
        session = f"{random.getrandbits(48):012x}"
        try:
            while True:
                line = self.rfile.readline()
                if not line:
                    break
                if line.startswith(b"$"):  # interleaved RTCP from the client: skip it
                    continue
                if not line.strip():
                    continue
                method, url, _ = line.decode().split(" ", 2)
                headers: dict[str, str] = {}
                while (h := self.rfile.readline().decode().strip()):
                    k, _, v = h.partition(":")
                    headers[k.strip().lower()] = v.strip()
                if int(headers.get("content-length", "0")):
                    self.rfile.read(int(headers["content-length"]))
                cseq = headers.get("cseq", "0")
                if method == "OPTIONS":
                    self._reply(cseq, headers={
                        "Public": "OPTIONS, DESCRIBE, SETUP, PLAY, TEARDOWN"})
                elif method == "DESCRIBE":
                    self._reply(cseq, headers={"Content-Type": "application/sdp",
                                               "Content-Base": url.rstrip("/") + "/"},
                                body=self.server.sdp().encode())
                elif method == "SETUP":
                    transport = headers.get("transport", "")
                    if "TCP" not in transport.upper():
                        self._reply(cseq, "461 Unsupported Transport")
                        continue
                    self._reply(cseq, headers={
                        "Transport": "RTP/AVP/TCP;unicast;interleaved=0-1",
                        "Session": f"{session};timeout=60"})
                elif method == "PLAY":
                    self._reply(cseq, headers={"Session": session, "Range": "npt=0.000-"})
                    playing = threading.Event()
                    threading.Thread(target=self._stream, args=(playing,), daemon=True).start()
                elif method == "TEARDOWN":
                    self._reply(cseq, headers={"Session": session})
                    break
                else:
                    self._reply(cseq, "405 Method Not Allowed")
        except (OSError, ValueError):
            pass
        finally:
            if playing is not None:
                playing.set()

    def _stream(self, stop: threading.Event) -> None:
        units = self.server.units
        fps = self.server.scenario.fps
        seq, ssrc = random.getrandbits(16), random.getrandbits(32)
        t0 = time.monotonic()
        i = 0
        try:
            while not stop.is_set() and not self.server.stopping.is_set():
                delay = t0 + i / fps - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
                nals = units[i % len(units)]
                packets, seq = rtp_packets(nals, seq, round(i * 90000 / fps), ssrc)
                data = b"".join(b"$\x00" + struct.pack(">H", len(p)) + p for p in packets)
                self.wfile.write(data)
                i += 1
        except OSError:
            pass


class RtspServer(socketserver.ThreadingTCPServer):
    """Serve `scenario` at ``rtsp://host:port/sim`` (any path works)."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, scenario: Scenario, host: str = "127.0.0.1", port: int = 18554):
        self.scenario = scenario
        self.units = [u for u in encode_access_units(scenario) if u]
        self.stopping = threading.Event()
        super().__init__((host, port), _Handler)
        self.host, self.port = host, int(self.server_address[1])  # port 0: the one bound

    @property
    def url(self) -> str:
        return f"rtsp://{self.host}:{self.port}/sim"

    def sdp(self) -> str:
        sps = next(n for u in self.units for n in u if n[0] & 0x1F == 7)
        pps = next(n for u in self.units for n in u if n[0] & 0x1F == 8)
        sprop = f"{base64.b64encode(sps).decode()},{base64.b64encode(pps).decode()}"
        return ("v=0\r\no=- 0 0 IN IP4 127.0.0.1\r\ns=Vigil synthetic scene\r\n"
                "c=IN IP4 0.0.0.0\r\nt=0 0\r\nm=video 0 RTP/AVP 96\r\n"
                "a=rtpmap:96 H264/90000\r\n"
                f"a=fmtp:96 packetization-mode=1;profile-level-id={sps[1:4].hex()};"
                f"sprop-parameter-sets={sprop}\r\n"
                "a=control:trackID=0\r\n")

    def shutdown(self) -> None:
        self.stopping.set()
        super().shutdown()
