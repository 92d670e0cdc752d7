"""The synthetic probe's identity: a camera id no site may configure.

The projector's probe (projections/probe.py) sends a test frame through the real pipeline
under this camera id; every stage handles it like any frame (so it measures the real path),
and what operators see leaves it out: it is never configured (the site file refuses the
reserved prefix), so it has no rules, no alerts and no camera row, and the projector does
not list it among the cameras (docs/operations.md, "Synthetic probe").
"""

from __future__ import annotations

#: Camera and edge ids starting with this are synthetic; site files may not use it.
RESERVED_PREFIX = "_vigil"
PROBE_CAMERA_ID = "_vigil-probe"
PROBE_EDGE_ID = "_vigil-probe"


def is_synthetic(camera_id: str | None) -> bool:
    return bool(camera_id) and str(camera_id).startswith(RESERVED_PREFIX)
