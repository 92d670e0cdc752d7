"""Small ONNX graphs with the output layout of an Ultralytics YOLOv8 detection export.

No trained weights can be downloaded here, so the object detector path (Triton's
``object_detector``, infra/triton/detectors) is exercised with graphs built from the
``onnx`` helper API (a dev dependency, imported lazily):

- `constant_graph`: whatever ``[1, 4 + classes, anchors]`` tensor a test wants, whatever
  the image: decode, class filter, NMS and the letterbox mapping are then checked against
  boxes computed by hand.
- `scene_graph`: detects the synthetic scene's vehicles (`edge_producer.sim.vehicles`):
  per palette colour a mask of the pixels near that colour, cleaned by a 3x3 opening,
  projected on both axes; the first and last covered column/row are the box, in input
  (letterboxed) pixels, and the slot's COCO class gets score 0.9 when the colour is on
  screen. The result sits in the first anchors of an otherwise zero 80-class output, as
  a real model's would among its 8400 anchors.
- `malformed_graph`: a constant output of any (wrong) shape, for load-time checks.

Input: ``images`` ``[1, 3, S, S]`` float RGB in [0, 1], what the model letterboxes to.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edge_producer.sim.vehicles import PALETTE

COCO_CLASSES = 80
OPSET = 17


def anchors_for(size: int) -> int:
    """Anchor count of a standard export at `size` (strides 8, 16, 32): 8400 at 640."""
    return sum((size // s) ** 2 for s in (8, 16, 32))


def _model(nodes: list, inits: list, out_shape: list[int], size: int) -> bytes:
    from onnx import TensorProto, checker, helper

    graph = helper.make_graph(
        nodes, "vigil_test_yolo",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, [1, 3, size, size])],
        [helper.make_tensor_value_info("output0", TensorProto.FLOAT, out_shape)],
        initializer=inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                              producer_name="vigil-test")
    model.ir_version = 8
    checker.check_model(model)
    return model.SerializeToString()


def _const(name: str, value: np.ndarray):
    from onnx import numpy_helper

    return numpy_helper.from_array(np.ascontiguousarray(value), name)


def constant_graph(output: np.ndarray, size: int = 640) -> bytes:
    """A model whose output is always `output` (the image only enters multiplied by 0, so
    the graph still consumes its input like a real one)."""
    from onnx import helper

    out = np.asarray(output, np.float32)
    nodes = [
        helper.make_node("ReduceMean", ["images"], ["m"], keepdims=0),
        helper.make_node("Mul", ["m", "zero"], ["z"]),
        helper.make_node("Add", ["table", "z"], ["output0"]),
    ]
    inits = [_const("table", out), _const("zero", np.zeros((1,), np.float32))]
    return _model(nodes, inits, list(out.shape), size)


def malformed_graph(shape: list[int], size: int = 640) -> bytes:
    """A model with an output of `shape` (e.g. transposed ``[1, 8400, 84]``)."""
    return constant_graph(np.zeros(shape, np.float32), size)


def yolo_output(rows: list[tuple[float, float, float, float, int, float]],
                size: int = 640, classes: int = COCO_CLASSES) -> np.ndarray:
    """A ``[1, 4 + classes, anchors]`` tensor with (cx, cy, w, h, class, score) per anchor
    in `rows` order (the remaining anchors all zero)."""
    out = np.zeros((1, 4 + classes, anchors_for(size)), np.float32)
    for a, (cx, cy, w, h, cls, score) in enumerate(rows):
        out[0, :4, a] = (cx, cy, w, h)
        out[0, 4 + cls, a] = score
    return out


def scene_graph(size: int = 640, tolerance: float = 0.35, score: float = 0.9) -> bytes:
    """The vehicle detector of the synthetic scene (see the module docstring)."""
    from onnx import helper

    n_feat = 4 + COCO_CLASSES
    nodes: list = []
    inits = [
        _const("one", np.ones((1,), np.float32)),
        _const("tol", np.full((1,), tolerance, np.float32)),
        _const("size_i", np.full((1,), size, np.int64)),
        _const("two", np.full((1,), 2.0, np.float32)),
        _const("score", np.full((1,), score, np.float32)),
        _const("rev_start", np.array([-1], np.int64)),
        _const("rev_end", np.array([-(2**62)], np.int64)),
        _const("rev_axis", np.array([0], np.int64)),
        _const("rev_step", np.array([-1], np.int64)),
        _const("flat", np.array([size], np.int64)),
        _const("col", np.array([n_feat, 1], np.int64)),
        _const("rest", np.zeros((n_feat, anchors_for(size) - len(PALETTE)), np.float32)),
    ]
    mk = helper.make_node
    slots = []
    for k, (_, coco, rgb) in enumerate(PALETTE):
        p = f"s{k}_"
        inits.append(_const(p + "rgb", np.array(rgb, np.float32).reshape(1, 3, 1, 1) / 255))
        onehot = np.zeros((COCO_CLASSES,), np.float32)
        onehot[coco] = 1.0
        inits.append(_const(p + "onehot", onehot))
        nodes += [
            mk("Sub", ["images", p + "rgb"], [p + "d"]),
            mk("Abs", [p + "d"], [p + "ad"]),
            mk("ReduceMax", [p + "ad"], [p + "dist"], axes=[1], keepdims=1),
            mk("Less", [p + "dist", "tol"], [p + "mb"]),
            mk("Cast", [p + "mb"], [p + "mask"], to=1),
            # opening (erode, then dilate) drops isolated JPEG speckles
            mk("Sub", ["one", p + "mask"], [p + "inv"]),
            mk("MaxPool", [p + "inv"], [p + "dinv"], kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
            mk("Sub", ["one", p + "dinv"], [p + "ero"]),
            mk("MaxPool", [p + "ero"], [p + "open"], kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
        ]
        edges = {}
        for axis, name in ((2, "x"), (3, "y")):  # reduce rows -> columns (x), cols -> rows
            q = p + name
            nodes += [
                mk("ReduceMax", [p + "open"], [q + "p4"], axes=[axis], keepdims=0),
                mk("Reshape", [q + "p4", "flat"], [q + "proj"]),
                mk("ArgMax", [q + "proj"], [q + "lo_i"], axis=0, keepdims=1),
                mk("Slice", [q + "proj", "rev_start", "rev_end", "rev_axis", "rev_step"],
                   [q + "rev"]),
                mk("ArgMax", [q + "rev"], [q + "ri"], axis=0, keepdims=1),
                mk("Sub", ["size_i", q + "ri"], [q + "hi_i"]),
                mk("Cast", [q + "lo_i"], [q + "lo"], to=1),
                mk("Cast", [q + "hi_i"], [q + "hi"], to=1),
                mk("Add", [q + "lo", q + "hi"], [q + "sum"]),
                mk("Div", [q + "sum", "two"], [q + "c"]),
                mk("Sub", [q + "hi", q + "lo"], [q + "len"]),
            ]
            edges[name] = q
        nodes += [
            mk("ReduceMax", [p + "xproj"], [p + "present"], axes=[0], keepdims=1),
            mk("Mul", [p + "present", "score"], [p + "conf"]),
            mk("Mul", [p + "onehot", p + "conf"], [p + "cls"]),
            mk("Concat", [edges["x"] + "c", edges["y"] + "c", edges["x"] + "len",
                          edges["y"] + "len", p + "cls"], [p + "vec"], axis=0),
            mk("Reshape", [p + "vec", "col"], [p + "colv"]),
        ]
        slots.append(p + "colv")
    nodes += [
        mk("Concat", [*slots, "rest"], ["all"], axis=1),
        mk("Unsqueeze", ["all", "rev_axis"], ["output0"]),
    ]
    return _model(nodes, inits, [1, n_feat, anchors_for(size)], size)


def write(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


#: The object_detector model folder shipped in the repository (config + model code).
DETECTOR_TEMPLATE = (Path(__file__).resolve().parents[2] / "infra" / "triton" / "detectors"
                     / "object_detector")


def detector_repository(root: Path, name: str, onnx: bytes | None,
                        params: dict[str, str] | None = None) -> Path:
    """Copy the object_detector model into the Triton repository `root` as model `name`,
    with `onnx` as its ``1/model.onnx`` (None: no file) and `params` overriding the
    config's parameters. Returns the model folder."""
    import re

    folder = root / name
    (folder / "1").mkdir(parents=True, exist_ok=True)
    (folder / "1" / "model.py").write_text((DETECTOR_TEMPLATE / "1" / "model.py").read_text())
    config = (DETECTOR_TEMPLATE / "config.pbtxt").read_text()
    config = config.replace('name: "object_detector"', f'name: "{name}"')
    for key, value in (params or {}).items():
        line = f'parameters {{ key: "{key}" value: {{ string_value: "{value}" }} }}'
        pattern = rf'parameters \{{ key: "{re.escape(key)}" [^\n]*'
        config, n = re.subn(pattern, line.replace("\\", "\\\\"), config)
        if n == 0:
            config += line + "\n"
    (folder / "config.pbtxt").write_text(config)
    if onnx is not None:
        write(folder / "1" / "model.onnx", onnx)
    return folder
