"""Directed line crossing: which side of a->b each track was last on.

Per (line, track) the state keeps the last point where the track was strictly on one side
(``{"side": ±1, "p": [x, y]}``). A crossing is a change of side whose movement
actually passes through the segment a-b (walking round the end of a short line is not a
crossing). Keeping the last *strictly-sided* point means a person who stops exactly on
the line crosses once, when they leave it on the other side, never twice.
"""

from __future__ import annotations

from typing import Any

from schemas.events import Direction
from schemas.geometry import Pt, cross, line_crossing


def side_of(p: Pt, a: Pt, b: Pt) -> int:
    c = cross(a, b, p)
    return 1 if c > 0 else (-1 if c < 0 else 0)


def step(
    state: dict[str, Any],
    t: float,
    positions: dict[str, tuple[Pt, bool]],
    a: Pt,
    b: Pt,
    forget: frozenset[str] = frozenset(),
) -> tuple[dict[str, Any], list[tuple[str, Direction]]]:
    """Advance one line with this frame's track positions (bottom-centre, confirmed).

    Returns the new state and [(track_id, "forward"|"backward")] for confirmed tracks;
    tracks in `forget` (ended) are dropped from the state.
    """
    new = {k: v for k, v in state.items() if k not in forget} if forget else dict(state)
    crossings: list[tuple[str, Direction]] = []
    ax, ay = a
    bx, by = b
    dx, dy = bx - ax, by - ay
    for tid in sorted(positions):
        p, confirmed = positions[tid]
        # side_of(p, a, b), inlined (same arithmetic as geometry.cross(a, b, p))
        c = dx * (p[1] - ay) - dy * (p[0] - ax)
        if c == 0:
            continue
        s = 1 if c > 0 else -1
        prev = new.get(tid)
        if prev is not None and prev["side"] != s:
            pp = prev["p"]  # a list in the (JSON) state
            direction = line_crossing((pp[0], pp[1]), p, a, b)
            if direction is not None and confirmed:
                crossings.append((tid, direction))
        new[tid] = {"side": s, "p": [p[0], p[1]]}
    return new, crossings
