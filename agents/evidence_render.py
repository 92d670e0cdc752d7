"""Drawing an alert's still evidence: the annotated snapshot and the thumbnail.

Pure functions of their inputs (bytes in, bytes out, no I/O), so the evidence agent can
call them in a thread and the unit tests can check the pixels. What is drawn and why
(docs/evidence.md): an operator decides an alert from this one picture, so it shows
every detection of the frame (thin boxes), the rule's own tracks highlighted with their
ids (thick boxes), the rule's zone polygon or line, and a caption band that says which
rule fired where and when, and what was measured.

Colours are BGR (OpenCV's order) and fixed, so a test can find them again.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import cv2
import numpy as np

from schemas.events import Detection, Point

#: every detection of the frame
BOX_COLOUR = (255, 160, 0)
BOX_THICKNESS = 2
#: the rule's tracks
HIGHLIGHT_COLOUR = (0, 0, 255)
HIGHLIGHT_THICKNESS = 4
#: the rule's zone polygon or line
ZONE_COLOUR = (0, 220, 0)
ZONE_THICKNESS = 2
CAPTION_BACKGROUND = (0, 0, 0)
CAPTION_TEXT = (255, 255, 255)

JPEG_QUALITY = 90
THUMBNAIL_QUALITY = 80


class RenderError(ValueError):
    """The frame cannot be drawn on (not a decodable image)."""


@dataclass(frozen=True, slots=True)
class Overlay:
    """What to draw on a frame. Coordinates are normalised (0..1), as events carry them."""

    detections: Sequence[Detection]
    #: detection id -> track id, for the detections to highlight
    highlighted: Mapping[str, str]
    zone: Sequence[Point] | None = None
    line: tuple[Point, Point] | None = None
    caption: Sequence[str] = ()


def decode_jpeg(jpeg: bytes) -> np.ndarray:
    img = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)
    if img is None:
        raise RenderError(f"the frame is not a decodable image ({len(jpeg)} bytes)")
    return img


def encode_jpeg(img: np.ndarray, quality: int = JPEG_QUALITY) -> bytes:
    ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise RenderError("the JPEG encoder refused the image")
    return bytes(buf)


def pixel_box(d: Detection, width: int, height: int) -> tuple[int, int, int, int]:
    """A detection's box in pixels, clamped into the image (what is drawn; tests use it)."""
    def px(v: float, size: int) -> int:
        return min(max(round(v * size), 0), size - 1)

    return px(d.x1, width), px(d.y1, height), px(d.x2, width), px(d.y2, height)


def _ascii(text: str) -> str:
    """OpenCV's Hershey fonts have ASCII glyphs only: anything else becomes '?'."""
    return text.encode("ascii", "replace").decode("ascii")


def _text(img: np.ndarray, text: str, org: tuple[int, int], scale: float,
          colour: tuple[int, int, int]) -> None:
    cv2.putText(img, _ascii(text), org, cv2.FONT_HERSHEY_SIMPLEX, scale, colour,
                max(1, round(scale * 2)), cv2.LINE_AA)


def annotate(jpeg: bytes, overlay: Overlay) -> bytes:
    """The frame with its overlay drawn, as a JPEG."""
    img = decode_jpeg(jpeg)
    h, w = img.shape[:2]
    scale = max(0.4, min(1.0, w / 1280))
    if overlay.zone:
        pts = np.array([[round(p.x * w), round(p.y * h)] for p in overlay.zone], np.int32)
        cv2.polylines(img, [pts], True, ZONE_COLOUR, ZONE_THICKNESS, cv2.LINE_AA)
    if overlay.line:
        a, b = overlay.line
        pa, pb = (round(a.x * w), round(a.y * h)), (round(b.x * w), round(b.y * h))
        cv2.arrowedLine(img, pa, pb, ZONE_COLOUR, ZONE_THICKNESS + 1, cv2.LINE_AA,
                        tipLength=0.03)
    # plain boxes first, so a highlighted box is never drawn over
    for d in overlay.detections:
        if d.detection_id not in overlay.highlighted:
            x1, y1, x2, y2 = pixel_box(d, w, h)
            cv2.rectangle(img, (x1, y1), (x2, y2), BOX_COLOUR, BOX_THICKNESS)
    for d in overlay.detections:
        track = overlay.highlighted.get(d.detection_id)
        if track is None:
            continue
        x1, y1, x2, y2 = pixel_box(d, w, h)
        cv2.rectangle(img, (x1, y1), (x2, y2), HIGHLIGHT_COLOUR, HIGHLIGHT_THICKNESS)
        label = f"{track} {d.score:.2f}"
        (tw, th), _ = cv2.getTextSize(_ascii(label), cv2.FONT_HERSHEY_SIMPLEX, scale * 0.7,
                                      max(1, round(scale * 1.4)))
        ty = y1 - 6 if y1 - th - 8 > 0 else min(y2 + th + 6, h - 2)
        cv2.rectangle(img, (x1, ty - th - 4), (x1 + tw + 4, ty + 4), HIGHLIGHT_COLOUR, -1)
        _text(img, label, (x1 + 2, ty), scale * 0.7, CAPTION_TEXT)
    if overlay.caption:
        line_h = round(30 * scale) + 6
        band = line_h * len(overlay.caption) + 6
        # the caption goes in a band added below the picture: nothing of the scene is hidden
        img = cv2.copyMakeBorder(img, 0, band, 0, 0, cv2.BORDER_CONSTANT,
                                 value=CAPTION_BACKGROUND)
        for i, text in enumerate(overlay.caption):
            _text(img, text, (8, h + line_h * (i + 1)), scale * 0.8, CAPTION_TEXT)
    return encode_jpeg(img)


def thumbnail(jpeg: bytes, width: int = 320) -> bytes:
    """A small JPEG of `jpeg` (aspect kept) for alert and event lists."""
    img = decode_jpeg(jpeg)
    h, w = img.shape[:2]
    if w > width:
        img = cv2.resize(img, (width, max(1, round(h * width / w))),
                         interpolation=cv2.INTER_AREA)
    return encode_jpeg(img, THUMBNAIL_QUALITY)
