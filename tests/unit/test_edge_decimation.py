"""Decimation: the right number of frames at the right (event) times, from real H.264."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from edge_producer.sim.scenario import load_scenario
from edge_producer.sim.video import encode_scenario
from edge_producer.sources import Decimator, SourceError, decode_decimated

START = datetime(2026, 3, 2, 14, 0, tzinfo=UTC)


@pytest.fixture(scope="module")
def video(tmp_path_factory: pytest.TempPathFactory) -> Path:
    s = load_scenario("passers_by").model_copy(update={"fps": 25.0, "duration_s": 6.0,
                                                        "width": 320, "height": 240,
                                                        "actors": []})
    return encode_scenario(s, tmp_path_factory.mktemp("v") / "in.mp4")


def test_decimator_times() -> None:
    d = Decimator(1.0)
    picked = [i / 25 for i in range(250) if d.due(i / 25)]
    assert picked == [float(s) for s in range(10)]


def test_one_fps_from_25(video: Path) -> None:
    frames = list(decode_decimated(str(video), lambda: 1.0, lambda: False, START))
    assert [f.pts_s for f in frames] == [0.0, 1.0, 2.0, 3.0, 4.0, 5.0]
    assert [f.occurred_at for f in frames] == [START + timedelta(seconds=s) for s in range(6)]


def test_keyframes_only(video: Path) -> None:
    frames = list(decode_decimated(str(video), lambda: 0.2, lambda: True, START))
    assert frames and all(f.keyframe for f in frames)
    assert len(frames) <= 2  # 6 s at 0.2 fps


def test_two_fps(video: Path) -> None:
    frames = list(decode_decimated(str(video), lambda: 2.0, lambda: False, START))
    # 0.5 s is not on the 25 fps grid: the first frame at or after each due time is taken
    assert [round(f.pts_s, 2) for f in frames] == [
        round(math.ceil(i / 2 * 25) / 25, 2) for i in range(12)]


def test_corrupt_file_names_itself(tmp_path: Path) -> None:
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"\x00garbage" * 500)
    with pytest.raises(SourceError, match=r"bad\.mp4"):
        list(decode_decimated(str(bad), lambda: 1.0, lambda: False, START))
