"""Geometry: inside, crossing, overlap; examples plus Hypothesis properties."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from schemas.geometry import (
    bottom_centre,
    iou,
    line_crossing,
    point_in_polygon,
    polygon_area,
    polygon_self_intersects,
    polygon_test,
    segments_intersect,
)

SQUARE = [(0.2, 0.2), (0.8, 0.2), (0.8, 0.8), (0.2, 0.8)]
coord = st.floats(min_value=0.0, max_value=1.0, allow_nan=False)


def test_point_in_square_and_on_edge() -> None:
    assert point_in_polygon((0.5, 0.5), SQUARE)
    assert not point_in_polygon((0.1, 0.5), SQUARE)
    assert point_in_polygon((0.2, 0.5), SQUARE)  # on the edge counts as inside


def test_concave_polygon() -> None:
    u_shape = [(0, 0), (1, 0), (1, 1), (0.6, 1), (0.6, 0.3), (0.4, 0.3), (0.4, 1), (0, 1)]
    assert point_in_polygon((0.2, 0.8), u_shape)
    assert not point_in_polygon((0.5, 0.8), u_shape)  # in the notch


def test_bow_tie_self_intersects() -> None:
    assert polygon_self_intersects([(0, 0), (1, 1), (1, 0), (0, 1)])
    assert not polygon_self_intersects(SQUARE)
    assert abs(polygon_area(SQUARE) - 0.36) < 1e-12


def test_iou() -> None:
    assert iou((0, 0, 1, 1), (0, 0, 1, 1)) == 1.0
    assert iou((0, 0, 1, 1), (2, 2, 3, 3)) == 0.0
    assert abs(iou((0, 0, 2, 1), (1, 0, 3, 1)) - 1 / 3) < 1e-12


def test_bottom_centre() -> None:
    assert bottom_centre((0.2, 0.1, 0.4, 0.9)) == (0.30000000000000004, 0.9)


def test_line_crossing_direction() -> None:
    a, b = (0.0, 0.5), (1.0, 0.5)  # pointing right; y down => right side is below
    assert line_crossing((0.5, 0.4), (0.5, 0.6), a, b) == "forward"
    assert line_crossing((0.5, 0.6), (0.5, 0.4), a, b) == "backward"
    assert line_crossing((0.5, 0.4), (0.5, 0.45), a, b) is None
    # passing beyond the end of the segment is not a crossing
    assert line_crossing((1.5, 0.4), (1.5, 0.6), a, b) is None


@given(coord, coord, coord, coord)
def test_iou_symmetric_and_bounded(x1: float, y1: float, w: float, h: float) -> None:
    a = (x1, y1, x1 + w, y1 + h)
    b = (y1, x1, y1 + h, x1 + w)
    assert 0.0 <= iou(a, b) <= 1.0
    assert iou(a, b) == iou(b, a)


@given(coord, coord, coord, coord)
def test_crossing_reverses_with_movement(px: float, py: float, qx: float, qy: float) -> None:
    a, b = (0.1, 0.3), (0.9, 0.7)
    fwd = line_crossing((px, py), (qx, qy), a, b)
    back = line_crossing((qx, qy), (px, py), a, b)
    assert {fwd, back} in ({None}, {"forward", "backward"})
    if fwd is not None:
        assert segments_intersect((px, py), (qx, qy), a, b)


@given(coord, coord)
def test_inside_convex_matches_bounds(x: float, y: float) -> None:
    assert point_in_polygon((x, y), SQUARE) == (0.2 <= x <= 0.8 and 0.2 <= y <= 0.8)


#: points that hit edges, corners and the fast paths' margins exactly
near = st.one_of(coord, st.sampled_from([0.2, 0.8, 0.2 + 1e-9, 0.8 - 1e-9, 0.2 - 1e-10,
                                         0.8 + 1e-10, 0.5, 0.3, 0.7]))


@given(near, near, st.sampled_from([
    SQUARE,
    [(0.3, 0.2), (0.7, 0.2), (0.7, 0.8), (0.3, 0.8)],
    [(0, 0), (1, 0), (1, 1), (0.6, 1), (0.6, 0.3), (0.4, 0.3), (0.4, 1), (0, 1)],
    [(0.2, 0.2), (0.8, 0.3), (0.7, 0.8), (0.3, 0.7)],
    [(0.2, 0.2), (0.8, 0.2), (0.5, 0.8)],
]))
def test_precomputed_polygon_test_matches_point_in_polygon(x: float, y: float,
                                                           polygon: list) -> None:
    assert polygon_test(polygon)((x, y)) == point_in_polygon((x, y), polygon)
