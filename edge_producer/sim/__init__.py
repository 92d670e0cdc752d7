"""The synthetic scene: scenario files, a deterministic renderer and its ground truth.

Other components import `load_scenario` and `iter_frames` from here to test detection
recall and rules end to end without cameras.
"""

from edge_producer.sim.render import SimFrame, TruthBox, build_tracks, iter_frames
from edge_producer.sim.scenario import Scenario, load_scenario, parse_scenario, shipped_scenarios

__all__ = [
    "Scenario",
    "SimFrame",
    "TruthBox",
    "build_tracks",
    "iter_frames",
    "load_scenario",
    "parse_scenario",
    "shipped_scenarios",
]
