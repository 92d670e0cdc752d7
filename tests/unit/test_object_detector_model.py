"""The object detector's pre/post-processing without Triton (infra/triton/detectors)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest

from edge_producer.sim import detector_graph as dg

MODEL = (Path(__file__).resolve().parents[2] / "infra" / "triton" / "detectors"
         / "object_detector" / "1" / "model.py")


@pytest.fixture(scope="module")
def od() -> ModuleType:
    spec = importlib.util.spec_from_file_location("_object_detector", MODEL)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize(("w", "h", "scale", "left", "top"), [
    (640, 480, 1.0, 0, 80), (1280, 720, 0.5, 0, 140), (480, 640, 1.0, 80, 0),
    (1920, 1080, 1 / 3, 0, 140), (641, 481, 640 / 641, 0, 80), (100, 50, 6.4, 0, 160),
])
def test_letterbox_geometry_is_ultralytics(od: ModuleType, w: int, h: int, scale: float,
                                           left: int, top: int) -> None:
    g = od.letterbox_geometry(w, h, 640)
    assert (g.left, g.top) == (left, top)
    assert g.scale == pytest.approx(scale)
    blob, g2 = od.letterbox(np.zeros((h, w, 3), np.uint8), 640)
    assert blob.shape == (1, 3, 640, 640) and blob.dtype == np.float32 and g2 == g
    # padding is grey 114 and the (black) picture is where the geometry says
    if top or left:
        assert blob[0, 0, 0, 0] == pytest.approx(114 / 255)
    assert blob[0, :, top + 1, left + 1].max() == 0.0


def test_nms_is_class_aware_and_ordered(od: ModuleType) -> None:
    out = dg.yolo_output([(50, 50, 20, 20, 0, 0.5), (51, 50, 20, 20, 0, 0.9),
                          (50, 50, 20, 20, 2, 0.3), (300, 300, 10, 10, 0, 0.4)])
    g = od.letterbox_geometry(640, 640, 640)
    boxes, scores, classes = od.decode(out[0], g, 0.25, 0.45, None)
    assert classes.tolist() == [0, 0, 2]
    np.testing.assert_allclose(scores, [0.9, 0.4, 0.3])
    np.testing.assert_allclose(boxes[0] * 640, [41, 40, 61, 60], atol=1e-4)


def test_at_most_64_detections(od: ModuleType) -> None:
    rows = [(10 + 8 * i, 10 + 8 * j, 4, 4, 0, 0.5 + i * 0.001 + j * 0.0001)
            for i in range(10) for j in range(10)]
    boxes, scores, _ = od.decode(dg.yolo_output(rows)[0], od.letterbox_geometry(640, 640, 640),
                                 0.25, 0.45, None)
    assert len(boxes) == 64 and (np.diff(scores) <= 0).all()


def test_output_shape_checks(od: ModuleType) -> None:
    assert od.output_classes((1, 84, 8400), 640) == 80
    assert od.output_classes(("batch", 84, "anchors"), 640) == 80
    assert od.output_classes(("batch", "features", "anchors"), 640) == -1
    for shape, msg in [((1, 8400, 84), "transposed"), ((2, 84, 8400), "batch"),
                       ((1, 4, 8400), "fewer than 4"), ((84, 8400), "[1, 4 + classes")]:
        with pytest.raises(od.ModelError, match=msg.replace("[", r"\[").replace("+", r"\+")):
            od.output_classes(shape, 640)


def test_providers(od: ModuleType) -> None:
    avail = ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]
    gpu = od.select_providers("auto", avail, True, 1, True, "/c")
    assert [p[0] if isinstance(p, tuple) else p for p in gpu] == avail
    assert gpu[0][1]["trt_fp16_enable"] is True and gpu[0][1]["device_id"] == 1
    assert od.select_providers("auto", avail, False, 0, True, "/c") == ["CPUExecutionProvider"]
    assert od.select_providers("auto", ["CPUExecutionProvider"], True, 0, True, "/c") == [
        "CPUExecutionProvider"]
    with pytest.raises(od.ModelError, match="CUDAExecutionProvider not in"):
        od.select_providers("CUDAExecutionProvider", ["CPUExecutionProvider"], True, 0, True, "")


def test_classes_parameter(od: ModuleType) -> None:
    assert od.parse_classes("all") is None
    assert od.parse_classes("7, 0,2").tolist() == [0, 2, 7]
    with pytest.raises(od.ModelError, match="comma-separated"):
        od.parse_classes("car")


def test_dev_stack_serves_the_detector_repository_only_with_an_export(tmp_path: Path) -> None:
    from tools.devstack.stack import repositories

    main, det = tmp_path / "models", tmp_path / "detectors"
    (det / "object_detector" / "1").mkdir(parents=True)
    assert repositories(main, det) == [main]
    (det / "object_detector" / "1" / "model.onnx").write_bytes(b"x")
    assert repositories(main, det) == [main, det]
