"""Pure parts of the evidence stage: the annotated rendering (pixels at the box edges),
the thumbnail, the object keys, the caption and the event-id peek of the frame lookup."""

from __future__ import annotations

from datetime import UTC, datetime

import cv2
import numpy as np

from agents.evidence import caption, evidence_prefix, measurement, overlay_for, scene_config
from agents.evidence_lookup import peek_event_id
from agents.evidence_render import (
    BOX_COLOUR,
    HIGHLIGHT_COLOUR,
    ZONE_COLOUR,
    Overlay,
    annotate,
    decode_jpeg,
    pixel_box,
    thumbnail,
)
from schemas.codec import default_codec
from schemas.events import (
    CameraConfigured,
    Detection,
    FrameAnalyzed,
    Point,
    RuleTriggered,
    ZoneConfigured,
)

AT = datetime(2026, 3, 1, 22, 30, 5, tzinfo=UTC)
W, H = 640, 480


def grey_jpeg(w: int = W, h: int = H) -> bytes:
    ok, buf = cv2.imencode(".jpg", np.full((h, w, 3), 128, np.uint8))
    assert ok
    return bytes(buf)


def det(i: str, x1: float, y1: float, x2: float, y2: float) -> Detection:
    return Detection(detection_id=i, label="person", score=0.9, x1=x1, y1=y1, x2=x2, y2=y2)


def close(pixel: np.ndarray, bgr: tuple[int, int, int], tol: int = 60) -> bool:
    return bool(np.abs(pixel.astype(int) - np.array(bgr)).max() <= tol)


def edge_pixels(img: np.ndarray, d: Detection) -> list[np.ndarray]:
    """The middle of each of the four sides of the box as drawn."""
    x1, y1, x2, y2 = pixel_box(d, W, H)
    mx, my = (x1 + x2) // 2, (y1 + y2) // 2
    return [img[y1, mx], img[y2, mx], img[my, x1], img[my, x2]]


def test_boxes_tracks_and_zone_are_drawn_where_the_detections_are() -> None:
    plain, hit = det("d-1", 0.10, 0.20, 0.30, 0.70), det("d-2", 0.55, 0.25, 0.85, 0.80)
    zone = [Point(x=0.05, y=0.05), Point(x=0.95, y=0.05), Point(x=0.95, y=0.95),
            Point(x=0.05, y=0.95)]
    out = annotate(grey_jpeg(), Overlay(detections=[plain, hit], highlighted={"d-2": "trk-7"},
                                        zone=zone, caption=["a caption", "second line"]))
    img = decode_jpeg(out)
    assert img.shape[1] == W and img.shape[0] > H  # the caption band is added below
    for px in edge_pixels(img, plain):
        assert close(px, BOX_COLOUR), px
    for px in edge_pixels(img, hit):
        assert close(px, HIGHLIGHT_COLOUR), px
    # the zone's left edge, half-way down, and a point inside no box stays grey
    assert close(img[H // 2, round(0.05 * W)], ZONE_COLOUR)
    assert close(img[round(0.9 * H), round(0.45 * W)], (128, 128, 128), tol=20)
    # caption band: dark with some bright (text) pixels
    band = img[H:]
    assert band.mean() < 60 and band.max() > 200


def test_a_line_rule_draws_its_line_and_a_thumbnail_is_small() -> None:
    out = annotate(grey_jpeg(), Overlay(detections=[], highlighted={},
                                        line=(Point(x=0.0, y=0.5), Point(x=1.0, y=0.5))))
    img = decode_jpeg(out)
    assert close(img[H // 2, W // 4], ZONE_COLOUR)
    thumb = decode_jpeg(thumbnail(out, 160))
    assert thumb.shape[1] == 160 and thumb.shape[0] == 120


def _trigger(**kw: object) -> RuleTriggered:
    fields: dict[str, object] = dict(
        producer="t", occurred_at=AT, camera_id="cam/1", zone_id="z1", rule_id="r1",
        rule_type="loitering", severity="warning", value=312.4, threshold=300.0,
        track_ids=["trk-7"], first_evidence_at=AT, last_evidence_at=AT,
        evidence_event_ids=["f"], causation_id="an-1", detection_ids=["d-2"])
    fields.update(kw)
    return RuleTriggered.create(**fields)  # type: ignore[arg-type]


def test_keys_are_a_function_of_the_hit_and_the_caption_says_what_fired() -> None:
    t = _trigger()
    assert evidence_prefix(t.camera_id, t.occurred_at, t.event_id, "vigil") == \
        f"vigil/evidence/cam%2F1/2026-03-01/{t.event_id}"
    cam = CameraConfigured.create(producer="t", camera_id="cam/1", site_id="s", edge_id="e",
                                  name="Door", timezone="Europe/Paris")
    lines = caption(t, AT, cam)
    assert "loitering r1" in lines[0] and "Door (cam/1)" in lines[0]
    assert "2026-03-01 23:30:05 Europe/Paris" in lines[1]  # local time at the camera
    assert "dwell 312 s" in lines[1] and "trk-7" in lines[1]
    assert measurement(_trigger(rule_type="crowd", value=6, threshold=5)) == \
        "6 people (at least 5)"


def test_overlay_highlights_the_rules_tracks_and_takes_the_zone_from_config() -> None:
    t = _trigger()
    zone = ZoneConfigured.create(producer="t", zone_id="z1", camera_id="cam/1", name="z",
                                 kind="zone", polygon=[Point(x=0, y=0), Point(x=1, y=0),
                                                       Point(x=1, y=1)])
    analysis = FrameAnalyzed.create(
        producer="t", occurred_at=AT, edge_id="e", camera_id="cam/1", frame_sequence=1,
        width=W, height=H, skipped=False,
        detections=[det("d-1", 0.1, 0.1, 0.2, 0.2), det("d-2", 0.5, 0.5, 0.6, 0.6)],
        detector_model="m", detector_version="1")
    ov = overlay_for(t, analysis, scene_config({"zone/z1": zone}, t))
    assert ov.highlighted == {"d-2": "trk-7"}
    assert ov.zone == zone.polygon and ov.line is None


def test_peek_event_id_reads_only_the_first_field() -> None:
    t = _trigger()
    raw = default_codec().encode(t)
    assert peek_event_id(raw) == t.event_id
    assert peek_event_id(b"") is None and peek_event_id(b"junk") is None
    assert peek_event_id(raw[:12]) is None  # truncated
