"""Plane geometry for scene rules, in normalised image coordinates (y grows downwards).

Pure functions on plain tuples so that the tracker, the rule engine and the site-config
validator share one definition of "inside", "crosses" and "overlaps"; a disagreement
between validation and evaluation would make a valid-looking zone behave differently.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from schemas.events import Direction

Pt = tuple[float, float]
Box = tuple[float, float, float, float]  # x1, y1, x2, y2

_EPS = 1e-12


def bottom_centre(box: Box) -> Pt:
    """Where a person stands: the middle of the box's lower edge (image y grows down)."""
    x1, _, x2, y2 = box
    return ((x1 + x2) / 2.0, y2)


def iou(a: Box, b: Box) -> float:
    """Intersection over union of two axis-aligned boxes; 0 for degenerate boxes."""
    ix = min(a[2], b[2]) - max(a[0], b[0])
    iy = min(a[3], b[3]) - max(a[1], b[1])
    if ix <= 0 or iy <= 0:
        return 0.0
    inter = ix * iy
    area_a = max(0.0, a[2] - a[0]) * max(0.0, a[3] - a[1])
    area_b = max(0.0, b[2] - b[0]) * max(0.0, b[3] - b[1])
    union = area_a + area_b - inter
    return inter / union if union > _EPS else 0.0


def cross(o: Pt, a: Pt, b: Pt) -> float:
    """z of (a - o) x (b - o). With y pointing down, > 0 means b is to the RIGHT of o->a
    as seen on screen by someone walking from o towards a."""
    return (a[0] - o[0]) * (b[1] - o[1]) - (a[1] - o[1]) * (b[0] - o[0])


def point_in_polygon(p: Pt, polygon: Sequence[Pt]) -> bool:
    """Even-odd ray casting; points exactly on an edge count as inside so that a person
    standing on a zone boundary is not flickering in and out from rounding."""
    n = len(polygon)
    if n < 3:
        return False
    x, y = p
    inside = False
    j = n - 1
    for i in range(n):
        xi, yi = polygon[i]
        xj, yj = polygon[j]
        if _on_segment(p, (xi, yi), (xj, yj)):
            return True
        if (yi > y) != (yj > y):
            x_at = xi + (y - yi) * (xj - xi) / (yj - yi)
            if x < x_at:
                inside = not inside
        j = i
    return inside


def polygon_test(polygon: Sequence[Pt]) -> Callable[[Pt], bool]:
    """`point_in_polygon` for one fixed polygon, precomputed: the scene engine asks it for
    every track in every zone on every frame. Points outside the bounding box are
    rejected at once and, for an axis-aligned rectangle (the usual zone), points clearly
    inside accepted at once; everything near an edge takes the exact test, so the answer
    is always the same as `point_in_polygon`'s."""
    pts = tuple((float(x), float(y)) for x, y in polygon)
    if len(pts) < 3:
        return lambda p: False
    xs, ys = [x for x, _ in pts], [y for _, y in pts]
    m = 1e-9
    lo_x, hi_x, lo_y, hi_y = min(xs) - m, max(xs) + m, min(ys) - m, max(ys) + m
    rect = len(pts) == 4 and all(
        (a[0] == b[0]) != (a[1] == b[1]) for a, b in zip(pts, pts[1:] + pts[:1], strict=True))
    in_x0, in_x1, in_y0, in_y1 = min(xs) + m, max(xs) - m, min(ys) + m, max(ys) - m

    def test(p: Pt) -> bool:
        x, y = p
        if x < lo_x or x > hi_x or y < lo_y or y > hi_y:
            return False
        if rect and in_x0 < x < in_x1 and in_y0 < y < in_y1:
            return True
        return point_in_polygon(p, pts)

    return test


def _on_segment(p: Pt, a: Pt, b: Pt) -> bool:
    if abs(cross(a, b, p)) > 1e-12:
        return False
    return (
        min(a[0], b[0]) - _EPS <= p[0] <= max(a[0], b[0]) + _EPS
        and min(a[1], b[1]) - _EPS <= p[1] <= max(a[1], b[1]) + _EPS
    )


def segments_intersect(p1: Pt, p2: Pt, q1: Pt, q2: Pt) -> bool:
    """True if closed segments p1p2 and q1q2 share at least one point."""
    d1 = cross(q1, q2, p1)
    d2 = cross(q1, q2, p2)
    d3 = cross(p1, p2, q1)
    d4 = cross(p1, p2, q2)
    if ((d1 > 0 > d2) or (d1 < 0 < d2)) and ((d3 > 0 > d4) or (d3 < 0 < d4)):
        return True
    return (
        (d1 == 0 and _on_segment(p1, q1, q2))
        or (d2 == 0 and _on_segment(p2, q1, q2))
        or (d3 == 0 and _on_segment(q1, p1, p2))
        or (d4 == 0 and _on_segment(q2, p1, p2))
    )


def polygon_self_intersects(polygon: Sequence[Pt]) -> bool:
    """True if two non-adjacent edges of the closed polygon touch (a "bow-tie" zone has
    no well-defined inside, so the config validator rejects it)."""
    n = len(polygon)
    if n < 4:
        return False
    edges = [(polygon[i], polygon[(i + 1) % n]) for i in range(n)]
    for i in range(n):
        for j in range(i + 1, n):
            if j == i + 1 or (i == 0 and j == n - 1):
                continue  # adjacent edges share a vertex by construction
            if segments_intersect(*edges[i], *edges[j]):
                return True
    return False


def polygon_area(polygon: Sequence[Pt]) -> float:
    """Unsigned shoelace area; 0 means a degenerate (collinear) polygon."""
    n = len(polygon)
    s = 0.0
    for i in range(n):
        x1, y1 = polygon[i]
        x2, y2 = polygon[(i + 1) % n]
        s += x1 * y2 - x2 * y1
    return abs(s) / 2.0


def line_crossing(prev: Pt, cur: Pt, a: Pt, b: Pt) -> Direction | None:
    """Direction in which the movement prev->cur crosses the directed segment a->b.

    "forward" is from the left side of a->b to its right side (as seen on screen, y
    down), "backward" the opposite; None if the movement does not cross. A movement
    that only touches the line (ends on it) is not a crossing: the next step that leaves
    the line decides, so a person standing on the line does not cross twice.
    """
    s_prev = cross(a, b, prev)
    s_cur = cross(a, b, cur)
    if s_prev == 0 or s_cur == 0 or (s_prev > 0) == (s_cur > 0):
        return None
    if not segments_intersect(prev, cur, a, b):
        return None
    return "forward" if s_prev < 0 < s_cur else "backward"
