"""The ONNX object detector (infra/triton/detectors/object_detector) in a real tritonserver.

No weights can be downloaded, so the models are small ONNX graphs with the real YOLOv8
output layout (edge_producer.sim.detector_graph): a constant output whose boxes are
worked out by hand through the letterbox arithmetic (decode, class filter, class-aware
NMS, mapping back, per frame size), the synthetic scene's vehicle graph on rendered
vehicles, and malformed exports that must fail at model load, naming the problem.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from edge_producer.sim import detector_graph as dg
from edge_producer.sim.vehicles import draw_vehicle
from tests.integration.triton_server import TritonServer, site_packages

pytestmark = pytest.mark.integration

# (cx, cy, w, h, class, score) in letterboxed 640x640 input pixels, one row per anchor.
ROWS = [
    (100.0, 180.0, 40.0, 60.0, 2, 0.90),   # A car: kept
    (102.0, 181.0, 40.0, 60.0, 2, 0.80),   # B car, IoU(A) ~0.9: suppressed by A
    (100.0, 180.0, 40.0, 60.0, 7, 0.70),   # C truck on A's box: kept (NMS is per class)
    (400.0, 300.0, 50.0, 50.0, 16, 0.95),  # D dog: not in `classes`, dropped
    (500.0, 500.0, 30.0, 80.0, 0, 0.20),   # E person below score_threshold 0.25
    (320.0, 60.0, 100.0, 60.0, 0, 0.60),   # F person reaching into the top padding
    (200.0, 400.0, 20.0, 40.0, 3, 0.25),   # G motorcycle exactly at the threshold: dropped
]
#: what survives, in score order: (row, class)
KEPT = [(0, 2), (2, 7), (5, 0)]
#: frame size -> (scale, left, top) of Ultralytics' letterbox into 640x640
GEOMETRY = {(640, 480): (1.0, 0, 80), (1280, 720): (0.5, 0, 140), (480, 640): (1.0, 80, 0)}
PORT = 28201 + int(os.environ.get("VIGIL_TEST_PORT_OFFSET", "0"))


@pytest.fixture(scope="module")
def repository(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("detectors")
    dg.detector_repository(root, "yolo_const", dg.constant_graph(dg.yolo_output(ROWS)))
    dg.detector_repository(root, "yolo_scene", dg.scene_graph())
    dg.detector_repository(root, "yolo_all", dg.constant_graph(dg.yolo_output(ROWS)),
                           {"classes": "all"})
    dg.detector_repository(root, "yolo_transposed", dg.malformed_graph([1, 8400, 84]))
    dg.detector_repository(root, "yolo_segment", dg.malformed_graph([1, 116, 8400, 1]))
    dg.detector_repository(root, "yolo_six", dg.constant_graph(
        dg.yolo_output([], classes=6)))  # a 6-class custom model with COCO ids 0..7 asked
    dg.detector_repository(root, "yolo_missing", None)
    dg.detector_repository(root, "yolo_small_input", dg.constant_graph(
        dg.yolo_output([], size=320), size=320))
    return root


@pytest.fixture(scope="module")
def triton(repository: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TritonServer]:
    if not (site_packages() / "onnxruntime").is_dir():
        pytest.fail("onnxruntime is missing from the Triton venv: run scripts/bootstrap.sh "
                    "(it installs infra/triton/requirements.txt there)")
    log = tmp_path_factory.mktemp("triton-log") / "triton.log"
    server = TritonServer(PORT, log_file=log, repositories=(repository,),
                          models=("yolo_const", "yolo_scene", "yolo_all"))
    server.start()
    try:
        yield server
    finally:
        server.stop()


def jpeg(image: np.ndarray) -> bytes:
    return cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 95])[1].tobytes()


def infer(client: grpcclient.InferenceServerClient, model: str,
          jpegs: list[bytes]) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    inp = grpcclient.InferInput("images", [len(jpegs), 1], "BYTES")
    inp.set_data_from_numpy(np.array([[j] for j in jpegs], dtype=np.object_))
    res = client.infer(model, [inp])
    boxes, scores = res.as_numpy("boxes"), res.as_numpy("scores")
    classes, count = res.as_numpy("classes"), res.as_numpy("count").reshape(-1)
    assert boxes.shape == (len(jpegs), 64, 4) and classes.dtype == np.int32
    out = []
    for i in range(len(jpegs)):
        n = int(count[i])
        assert (classes[i, n:] == -1).all() and (scores[i, n:] == 0).all()
        out.append((boxes[i, :n], scores[i, :n], classes[i, :n]))
    return out


def expected_box(row: int, size: tuple[int, int]) -> list[float]:
    """A row's box mapped back by hand: (v - pad) / scale, clipped, normalised."""
    cx, cy, w, h = ROWS[row][:4]
    scale, left, top = GEOMETRY[size]
    fw, fh = size
    x1, x2 = ((cx - w / 2 - left) / scale, (cx + w / 2 - left) / scale)
    y1, y2 = ((cy - h / 2 - top) / scale, (cy + h / 2 - top) / scale)
    return [min(max(x1, 0), fw) / fw, min(max(y1, 0), fh) / fh,
            min(max(x2, 0), fw) / fw, min(max(y2, 0), fh) / fh]


def test_decode_nms_and_letterbox_mapping_are_exact(triton: TritonServer) -> None:
    client = grpcclient.InferenceServerClient(triton.url)
    sizes = list(GEOMETRY)
    frames = [jpeg(np.full((h, w, 3), 90, np.uint8)) for w, h in sizes]
    for size, (boxes, scores, classes) in zip(sizes, infer(client, "yolo_const", frames),
                                              strict=True):
        assert classes.tolist() == [c for _, c in KEPT], size
        np.testing.assert_allclose(scores, [ROWS[r][5] for r, _ in KEPT], rtol=1e-6)
        np.testing.assert_allclose(boxes, [expected_box(r, size) for r, _ in KEPT],
                                   atol=1e-6, err_msg=str(size))
    # F reaches into the 640x480 frame's top padding: clipped to the frame's top edge
    assert expected_box(5, (640, 480))[1] == 0.0


def test_classes_all_keeps_every_class(triton: TritonServer) -> None:
    client = grpcclient.InferenceServerClient(triton.url)
    [(boxes, _, classes)] = infer(client, "yolo_all",
                                       [jpeg(np.full((480, 640, 3), 90, np.uint8))])
    assert classes.tolist() == [16, 2, 7, 0]
    np.testing.assert_allclose(boxes[0], expected_box(3, (640, 480)), atol=1e-6)


def test_scene_graph_finds_rendered_vehicles(triton: TritonServer) -> None:
    """The vehicle graph through the whole path: JPEG, letterbox (0.5 scale for 1280x720),
    graph, decode, mapping back; boxes within a pixel of the drawn ones."""
    client = grpcclient.InferenceServerClient(triton.url)
    img = np.full((720, 1280, 3), 140, np.uint8)
    truth = {2: draw_vehicle(img, "car", 0, 300, 500, 80),
             7: draw_vehicle(img, "truck", 3, 900, 650, 120),
             1: draw_vehicle(img, "bicycle", 5, 640, 300, 60)}
    [(boxes, scores, classes)] = infer(client, "yolo_scene", [jpeg(img)])
    assert sorted(classes.tolist()) == sorted(truth)
    np.testing.assert_allclose(scores, 0.9, rtol=1e-6)
    for box, cls in zip(boxes, classes, strict=True):
        x1, y1, x2, y2 = truth[int(cls)]
        np.testing.assert_allclose(box * [1280, 720, 1280, 720], [x1, y1, x2, y2], atol=2.0)
    [(boxes, _, _)] = infer(client, "yolo_scene", [jpeg(np.full((480, 640, 3), 140, np.uint8))])
    assert len(boxes) == 0


@pytest.mark.parametrize(("model", "message"), [
    ("yolo_transposed", "looks transposed"),
    ("yolo_segment", "a YOLOv8/YOLO11 detection export has [1, 4 + classes, anchors]"),
    ("yolo_six", "the model has 6 classes"),
    ("yolo_missing", "not found (parameter onnx_path"),
    ("yolo_small_input", "set input_size to the export's imgsz"),
])
def test_malformed_model_fails_at_load(triton: TritonServer, model: str, message: str) -> None:
    client = grpcclient.InferenceServerClient(triton.url)
    with pytest.raises(InferenceServerException) as err:
        client.load_model(model)
    assert message in str(err.value)
    assert not client.is_model_ready(model)


def test_bad_jpeg_fails_only_its_request(triton: TritonServer) -> None:
    client = grpcclient.InferenceServerClient(triton.url)
    with pytest.raises(InferenceServerException, match="yolo_const: not a decodable image"):
        infer(client, "yolo_const", [b"not a jpeg"])
    assert len(infer(client, "yolo_const", [jpeg(np.zeros((480, 640, 3), np.uint8))])[0][0]) == 3
