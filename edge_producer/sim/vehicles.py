"""Vehicles in the synthetic scene: a body, a cabin and two wheels in one saturated colour.

Why saturated colours: the scene is otherwise grey (ground and people), so a vehicle is
exactly the set of pixels near one palette colour, which a tiny ONNX graph
(`edge_producer.sim.detector_graph.scene_graph`) can find with a colour mask and two
projections, and turn into a real YOLOv8 output tensor. That graph is the detector of the
vehicle scenarios: no trained weights exist on this machine. The palette is the
contract between the two: each colour is one slot with a fixed COCO class, so a scenario
may show at most as many vehicles of a class at a time as the class has colours (checked
when the scenario loads).

The ground-truth box of a vehicle is the bounding box of its coloured pixels (cabin on
top, body below, wheels inside the body), normalised like the people's.
"""

from __future__ import annotations

import cv2
import numpy as np

#: (class name, COCO class id, colour as RGB) per palette slot, in slot order.
PALETTE: tuple[tuple[str, int, tuple[int, int, int]], ...] = (
    ("car", 2, (255, 0, 0)),
    ("car", 2, (0, 255, 0)),
    ("bus", 5, (255, 255, 0)),
    ("truck", 7, (0, 0, 255)),
    ("motorcycle", 3, (255, 0, 255)),
    ("bicycle", 1, (0, 255, 255)),
)
VEHICLE_CLASSES = ("car", "bus", "truck", "motorcycle", "bicycle")
#: width / height of each class's box (side view), and its default height in pixels
ASPECTS = {"car": 2.2, "bus": 3.2, "truck": 2.8, "motorcycle": 1.5, "bicycle": 1.5}
HEIGHTS = {"car": 70, "bus": 110, "truck": 100, "motorcycle": 60, "bicycle": 55}


def slots_of(cls: str) -> list[int]:
    """Palette slots (indices) of a class."""
    return [i for i, (name, _, _) in enumerate(PALETTE) if name == cls]


def draw_vehicle(img: np.ndarray, cls: str, slot: int, fx: float, fy: float,
                 height: float) -> tuple[int, int, int, int]:
    """Draw a vehicle whose bottom centre is at pixel (fx, fy); returns its pixel box
    (x1, y1, x2, y2), end-exclusive, clipped to the image."""
    r, g, b = PALETTE[slot][2]
    colour = (b, g, r)  # the image is BGR
    w = ASPECTS[cls] * height
    x1, x2 = round(fx - w / 2), round(fx + w / 2)
    y1, y2 = round(fy - height), round(fy)
    roof = y1 + round(0.4 * height)
    cv2.rectangle(img, (x1, roof), (x2 - 1, y2 - 1), colour, -1)
    cv2.rectangle(img, (x1 + round(0.2 * w), y1), (x2 - 1 - round(0.25 * w), roof), colour, -1)
    wr = max(round(0.18 * height), 2)
    for wx in (x1 + round(0.22 * w), x2 - round(0.22 * w)):
        cv2.circle(img, (wx, y2 - wr - 1), wr, (30, 30, 30), -1)
    ih, iw = img.shape[:2]
    return max(x1, 0), max(y1, 0), min(x2, iw), min(y2, ih)
