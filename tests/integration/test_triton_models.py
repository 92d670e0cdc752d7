"""The two Triton models, called directly with tritonclient against a real tritonserver.

Detection quality is measured on the synthetic scene against its ground truth at IoU 0.5;
embeddings must put crops of the same person closer than crops of different people.
Numbers are printed (run with ``-s``) so a regression shows by how much, not just that.
"""

from __future__ import annotations

from collections.abc import Iterator

import cv2
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from tests.integration.triton_server import TritonServer

pytestmark = pytest.mark.integration

#: (recall, precision) floors per scenario at IoU 0.5. passers_by is the demo scenario
#: with the issue's recall target; the others guard the detector's tuning (input_width,
#: padding, scale in config.pbtxt) against regressions, a little below what it measured
#: (recall / precision: passers_by 0.957/1.0, group4 0.937/1.0, crowd6 0.941/1.0,
#: loiterer 1.0/0.97, night 1.0/1.0, occluded_loiterer 1.0/0.958).
FLOORS = {
    "passers_by.yaml": (0.9, 0.8),
    "group4.yaml": (0.85, 0.9),
    "crowd6.yaml": (0.85, 0.9),
    "loiterer.yaml": (0.9, 0.9),
    "night.yaml": (0.85, 0.9),
    "occluded_loiterer.yaml": (0.85, 0.9),
}
SCENARIOS = tuple(FLOORS)


@pytest.fixture(scope="module")
def triton() -> Iterator[TritonServer]:
    server = TritonServer(28001)
    if server.ready():  # a dev server already there: use it, don't own it
        yield server
        return
    server.start()
    try:
        yield server
    finally:
        server.stop()


def sim_frames(name: str, step: int) -> list:
    from edge_producer.sim.render import iter_frames
    from edge_producer.sim.scenario import load_scenario, resolve_scenario_path

    return list(iter_frames(load_scenario(resolve_scenario_path(name)), step=step))


def iou(a: np.ndarray, b: np.ndarray) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def detect(client: grpcclient.InferenceServerClient, jpegs: list[bytes]) -> list[np.ndarray]:
    inp = grpcclient.InferInput("images", [len(jpegs), 1], "BYTES")
    inp.set_data_from_numpy(np.array([[j] for j in jpegs], dtype=np.object_))
    res = client.infer("person_detector", [inp])
    boxes, count = res.as_numpy("boxes"), res.as_numpy("count").reshape(-1)
    assert res.as_numpy("scores").shape == (len(jpegs), 64)
    assert res.as_numpy("classes").dtype == np.int32
    return [boxes[i, : int(count[i])] for i in range(len(jpegs))]


def match(truth: list[np.ndarray], found: np.ndarray, thr: float = 0.5) -> tuple[int, int, int]:
    """Greedy one-to-one matching: (true positives, false positives, false negatives)."""
    used: set[int] = set()
    tp = 0
    for g in truth:
        cands = [(iou(g, b), i) for i, b in enumerate(found) if i not in used]
        best = max(cands, default=(0.0, -1))
        if best[0] >= thr:
            tp += 1
            used.add(best[1])
    return tp, len(found) - len(used), len(truth) - tp


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_detector_recall_and_precision(triton: TritonServer, scenario: str) -> None:
    frames = sim_frames(scenario, step=4)
    client = grpcclient.InferenceServerClient(triton.url)
    tp = fp = fn = 0
    for chunk in (frames[i : i + 8] for i in range(0, len(frames), 8)):
        jpegs = [cv2.imencode(".jpg", f.image)[1].tobytes() for f in chunk]
        for f, found in zip(chunk, detect(client, jpegs), strict=True):
            truth = [np.array([b.x1, b.y1, b.x2, b.y2]) for b in f.boxes]
            a, b, c = match(truth, found)
            tp, fp, fn = tp + a, fp + b, fn + c
    recall, precision = tp / max(1, tp + fn), tp / max(1, tp + fp)
    print(f"\n{scenario}: frames={len(frames)} recall={recall:.3f} precision={precision:.3f} "
          f"(tp={tp} fp={fp} fn={fn})")
    min_recall, min_precision = FLOORS[scenario]
    assert recall >= min_recall
    assert precision >= min_precision


def test_embedder_separates_people(triton: TritonServer) -> None:
    from agents.inference import crop_people

    client = grpcclient.InferenceServerClient(triton.url)
    crops: list[np.ndarray] = []
    ids: list[str] = []
    for f in sim_frames("passers_by.yaml", step=3):
        if not f.boxes:
            continue
        boxes = np.array([[b.x1, b.y1, b.x2, b.y2] for b in f.boxes], np.float32)
        crops.extend(crop_people(f.image, boxes, 64, 128))
        ids.extend(b.actor_id for b in f.boxes)
    inp = grpcclient.InferInput("crops", [len(crops), 128, 64, 3], "UINT8")
    inp.set_data_from_numpy(np.stack(crops))
    emb = client.infer("appearance_embedder", [inp]).as_numpy("embeddings")
    assert emb.shape == (len(crops), 192)
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-4)
    sim = emb @ emb.T
    same = np.equal.outer(ids, ids)
    off_diag = ~np.eye(len(ids), dtype=bool)
    intra, inter = sim[same & off_diag].mean(), sim[~same].mean()
    np.fill_diagonal(sim, -1)
    rank1 = np.mean([ids[int(np.argmax(row))] == ids[i] for i, row in enumerate(sim)])
    print(f"\nembeddings: crops={len(ids)} people={len(set(ids))} intra={intra:.3f} "
          f"inter={inter:.3f} margin={intra - inter:.3f} rank1={rank1:.3f}")
    assert intra > inter
    assert rank1 >= 0.8


def test_bad_jpeg_fails_only_its_request(triton: TritonServer) -> None:
    client = grpcclient.InferenceServerClient(triton.url)
    with pytest.raises(InferenceServerException, match="person_detector"):
        detect(client, [b"not a jpeg"])
    good = cv2.imencode(".jpg", np.full((480, 640, 3), 128, np.uint8))[1].tobytes()
    assert len(detect(client, [good])[0]) == 0
