"""The renderer: deterministic, ground truth consistent, and HOG finds the people."""

from __future__ import annotations

import hashlib

import cv2
import pytest

from edge_producer.sim import iter_frames, load_scenario
from edge_producer.sim.render import hog_to_person_box


def _digest(name: str, **kw: int) -> list[str]:
    return [hashlib.sha256(f.image.tobytes()).hexdigest()
            for f in iter_frames(load_scenario(name), **kw)]


def test_deterministic_and_random_access() -> None:
    a = _digest("crowd6", start=10, stop=16)
    assert a == _digest("crowd6", start=10, stop=16)
    assert _digest("crowd6", start=12, stop=13) == a[2:3]  # frame i does not depend on range
    assert len(set(a)) == len(a)  # people move: frames differ


def test_frames_carry_event_time_and_normalised_boxes() -> None:
    s = load_scenario("loiterer")
    frames = list(iter_frames(s, step=10))
    assert [f.t for f in frames] == [i / s.fps for i in range(0, s.frame_count, 10)]
    assert frames[1].occurred_at.isoformat() == "2026-03-02T14:00:05+00:00"
    for f in frames:
        assert f.image.shape == (s.height, s.width, 3)
        for b in f.boxes:
            assert 0 <= b.x1 < b.x2 <= 1 and 0 <= b.y1 < b.y2 <= 1
            assert 120 <= (b.y2 - b.y1) * s.height <= 300


def _iou(a: tuple[float, ...], b: tuple[float, ...]) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union else 0.0


def hog_recall(name: str, step: int) -> float:
    hog = cv2.HOGDescriptor()
    hog.setSVMDetector(cv2.HOGDescriptor_getDefaultPeopleDetector())
    tp = total = 0
    for f in iter_frames(load_scenario(name), step=step):
        rects, _ = hog.detectMultiScale(f.image, winStride=(8, 8), padding=(8, 8), scale=1.05)
        dets = [hog_to_person_box(*r) for r in rects]
        h, w = f.image.shape[:2]
        used: set[int] = set()
        for b in f.boxes:
            g = (b.x1 * w, b.y1 * h, b.x2 * w, b.y2 * h)
            best = max(((_iou(g, d), j) for j, d in enumerate(dets) if j not in used),
                       default=(0.0, -1))
            total += 1
            if best[0] >= 0.5:
                tp += 1
                used.add(best[1])
    return tp / total


@pytest.mark.parametrize(("name", "step"), [("loiterer", 7), ("crowd6", 13)])
def test_hog_finds_the_people(name: str, step: int) -> None:
    assert hog_recall(name, step) >= 0.9
