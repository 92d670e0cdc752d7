"""The CPU model code itself, without Triton: the files under infra/triton/models keep
their algorithms in plain functions so these run in milliseconds."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import cv2
import numpy as np

MODELS = Path(__file__).resolve().parents[2] / "infra" / "triton" / "models"


def load(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"_{name}", MODELS / name / "1" / "model.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_detector_finds_the_walker_of_a_sim_frame() -> None:
    from edge_producer.sim.render import iter_frames
    from edge_producer.sim.scenario import load_scenario, resolve_scenario_path

    pd = load("person_detector")
    f = next(iter_frames(load_scenario(resolve_scenario_path("passers_by.yaml")), start=8,
                         stop=9))
    assert f.boxes
    boxes, scores = pd.HogDetector().detect_jpeg(cv2.imencode(".jpg", f.image)[1].tobytes())
    t = f.boxes[0]
    assert len(boxes) >= 1 and 0.0 < scores[0] <= 1.0
    b = boxes[0]
    ix = max(0.0, min(b[2], t.x2) - max(b[0], t.x1))
    iy = max(0.0, min(b[3], t.y2) - max(b[1], t.y1))
    inter = ix * iy
    union = (b[2] - b[0]) * (b[3] - b[1]) + (t.x2 - t.x1) * (t.y2 - t.y1) - inter
    assert inter / union >= 0.5


def test_detector_outputs_are_padded_to_fixed_shapes() -> None:
    pd = load("person_detector")
    b, s, c, n = pd.pad_outputs(np.ones((2, 4), np.float32), np.array([0.9, 0.8], np.float32))
    assert b.shape == (64, 4) and s.shape == (64,) and c.shape == (64,) and n.tolist() == [2]
    assert c[:3].tolist() == [0, 0, -1]


def test_embedder_is_normalised_and_prefers_the_same_clothes() -> None:
    ae = load("appearance_embedder")
    rng = np.random.default_rng(0)

    def person(shirt: tuple[int, int, int], trousers: tuple[int, int, int]) -> np.ndarray:
        img = rng.integers(120, 160, (128, 64, 3), dtype=np.uint8)
        img[20:64, 16:48] = shirt
        img[64:124, 20:44] = trousers
        return img

    red_blue, red_blue2 = person((30, 30, 200), (160, 40, 20)), person((40, 35, 190), (150, 50, 25))
    blue_red = person((160, 40, 20), (30, 30, 200))
    e = ae.embed(np.stack([red_blue, red_blue2, blue_red]))
    assert e.shape == (3, 192)
    np.testing.assert_allclose(np.linalg.norm(e, axis=1), 1.0, atol=1e-5)
    assert e[0] @ e[1] > e[0] @ e[2] + 0.1  # stripes see where the colours are
