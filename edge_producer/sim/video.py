"""Encode a scenario to H.264 (PyAV), so the synthetic scene exercises the same decode path
as a real camera file or stream."""

from __future__ import annotations

import hashlib
import os
from fractions import Fraction
from pathlib import Path

import av

from edge_producer.sim.render import iter_frames
from edge_producer.sim.scenario import Scenario


def encode_scenario(scenario: Scenario, out: Path, *, gop_s: float = 2.0, crf: int = 23) -> Path:
    """Write the scenario as an H.264 MP4 whose frame i has pts i (time base 1/fps), so
    pts * time_base is exactly the scenario time of the frame."""
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp.mp4")
    rate = Fraction(scenario.fps).limit_denominator(1000)
    with av.open(str(tmp), "w") as container:
        stream = container.add_stream("libx264", rate=rate)
        stream.width, stream.height = scenario.width, scenario.height
        stream.pix_fmt = "yuv420p"
        stream.codec_context.time_base = 1 / rate
        stream.codec_context.gop_size = max(round(gop_s * scenario.fps), 1)
        stream.options = {"crf": str(crf), "preset": "veryfast", "bframes": "2",
                          "sc_threshold": "0"}
        for f in iter_frames(scenario):
            vf = av.VideoFrame.from_ndarray(f.image, format="bgr24")
            vf.pts = f.index
            vf.time_base = 1 / rate
            for packet in stream.encode(vf):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    tmp.replace(out)
    return out


def cached_scenario_video(scenario: Scenario, cache_dir: Path) -> Path:
    """The scenario's MP4 in `cache_dir`, rendered once per distinct scenario content."""
    digest = hashlib.sha256(scenario.model_dump_json().encode()).hexdigest()[:16]
    path = cache_dir / f"{scenario.name}-{digest}.mp4"
    if not path.exists():
        # render beside it and rename: a render cut short never passes for the cache
        tmp = path.with_suffix(f".{os.getpid()}.tmp.mp4")
        encode_scenario(scenario, tmp)
        tmp.replace(path)
    return path
