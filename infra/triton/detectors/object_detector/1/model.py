"""object_detector: a user's Ultralytics YOLOv8 / YOLO11 ONNX export behind Triton's python
backend, with the same tensor contract as ``person_detector`` (docs/models.md).

Why the python backend and onnxruntime instead of Triton's own onnxruntime backend: the
only Triton here is the ``nvidia-pytriton`` wheel, which ships the python backend alone,
and the pre/post-processing (JPEG decode, letterbox, box decode, NMS, mapping back to the
frame) is needed anyway. onnxruntime takes the TensorRT or CUDA execution provider when
the build has them and the instance is ``KIND_GPU``, so the same file serves a GPU site.

What the export must look like (checked at load, so a wrong file fails the model load
with a message instead of failing every frame): one float input ``[1, 3, S, S]`` (S =
``input_size``, 640 by default; dynamic dims are accepted), one output
``[1, 4 + classes, anchors]``: per anchor ``cx, cy, w, h`` in input pixels and one score
per class (already sigmoid-ed), the layout ``yolo export format=onnx`` writes for the
detection task. A transposed ``[1, anchors, 4 + classes]`` output, a segmentation or
pose export (more outputs) or a class list naming ids the model does not have is refused.

Post-processing follows Ultralytics' ``non_max_suppression`` (single label per anchor):
each anchor keeps its best class; anchors at or below ``score_threshold``, or whose best
class is not in ``classes``, are dropped; NMS is class-aware (boxes of different classes
never suppress each other); the ``MAX_DETECTIONS`` best survive. Letterboxing matches
Ultralytics' ``LetterBox`` (scale to fit, centred, grey 114 padding) so a model sees the
pictures it was trained and validated on, and boxes are mapped back with the same scale
and padding, then normalised to the frame.

No multiprocessing (the stub's interpreter and the venv's stdlib may differ); the
algorithm lives in plain functions and `YoloOnnx` so unit tests run it without Triton.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass

import cv2
import numpy as np

try:  # only available inside the Triton python backend stub
    import triton_python_backend_utils as pb_utils
except ImportError:  # pragma: no cover - unit tests import this file directly
    pb_utils = None

MAX_DETECTIONS = 64
#: candidates entering NMS at most (Ultralytics' max_nms)
MAX_NMS = 30000
#: class offset for class-aware NMS in one pass (boxes of different classes never overlap)
CLASS_OFFSET = 7680.0
PAD_VALUE = 114
GPU_PROVIDERS = ("TensorrtExecutionProvider", "CUDAExecutionProvider")

DEFAULTS: dict[str, str] = {
    "onnx_path": "model.onnx",
    "input_size": "640",
    "score_threshold": "0.25",
    "nms_iou": "0.45",
    "classes": "0,1,2,3,5,7",
    "providers": "auto",
    "trt_fp16": "1",
    "threads": "1",
}


class ModelError(ValueError):
    """The ONNX file or the model's parameters cannot serve the contract (raised at load)."""


@dataclass(frozen=True, slots=True)
class Letterbox:
    """How a frame was placed on the square network input: scale, then left/top padding."""

    scale: float
    left: int
    top: int
    width: int
    height: int


def letterbox_geometry(width: int, height: int, size: int) -> Letterbox:
    """Ultralytics' LetterBox arithmetic (centred, ``round(d -/+ 0.1)`` split of the pad)."""
    r = min(size / height, size / width)
    nw, nh = round(width * r), round(height * r)
    dw, dh = (size - nw) / 2, (size - nh) / 2
    return Letterbox(r, round(dw - 0.1), round(dh - 0.1), width, height)


def letterbox(image: np.ndarray, size: int) -> tuple[np.ndarray, Letterbox]:
    """The network input ``[1, 3, size, size]`` float32 RGB in [0, 1] and its geometry."""
    h, w = image.shape[:2]
    g = letterbox_geometry(w, h, size)
    nw, nh = round(w * g.scale), round(h * g.scale)
    img = image
    if (nw, nh) != (w, h):
        img = cv2.resize(image, (nw, nh), interpolation=cv2.INTER_LINEAR)
    canvas = cv2.copyMakeBorder(
        img, g.top, size - nh - g.top, g.left, size - nw - g.left,
        cv2.BORDER_CONSTANT, value=(PAD_VALUE, PAD_VALUE, PAD_VALUE),
    )
    blob = np.ascontiguousarray(canvas[:, :, ::-1].transpose(2, 0, 1))[None]
    return blob.astype(np.float32) * np.float32(1 / 255), g


def nms(boxes: np.ndarray, scores: np.ndarray, iou: float) -> np.ndarray:
    """Greedy NMS over boxes sorted by descending score: indices kept (IoU > iou drops)."""
    x1, y1, x2, y2 = boxes[:, 0], boxes[:, 1], boxes[:, 2], boxes[:, 3]
    areas = np.maximum(x2 - x1, 0) * np.maximum(y2 - y1, 0)
    order = np.arange(len(boxes))
    keep: list[int] = []
    while order.size:
        i = int(order[0])
        keep.append(i)
        if len(keep) >= MAX_DETECTIONS:
            break
        rest = order[1:]
        iw = np.maximum(np.minimum(x2[i], x2[rest]) - np.maximum(x1[i], x1[rest]), 0)
        ih = np.maximum(np.minimum(y2[i], y2[rest]) - np.maximum(y1[i], y1[rest]), 0)
        inter = iw * ih
        union = areas[i] + areas[rest] - inter
        ratio = np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)
        order = rest[ratio <= iou]
    return np.asarray(keep, np.int64)


def decode(
    pred: np.ndarray,
    g: Letterbox,
    score_threshold: float,
    iou: float,
    classes: np.ndarray | None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One image's ``[4 + nc, anchors]`` output -> normalised frame boxes, scores, class ids
    (sorted by descending score, at most MAX_DETECTIONS)."""
    cls_scores = pred[4:]
    cls = np.argmax(cls_scores, axis=0)
    conf = cls_scores[cls, np.arange(cls_scores.shape[1])]
    keep = conf > score_threshold
    if classes is not None:
        keep &= np.isin(cls, classes)
    idx = np.flatnonzero(keep)
    if idx.size == 0:
        return np.zeros((0, 4), np.float32), np.zeros((0,), np.float32), np.zeros((0,), np.int32)
    idx = idx[np.argsort(-conf[idx], kind="stable")][:MAX_NMS]
    cx, cy, w, h = (pred[k, idx].astype(np.float64) for k in range(4))
    xyxy = np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], axis=1)
    c = cls[idx]
    kept = nms(xyxy + (c * CLASS_OFFSET)[:, None], conf[idx].astype(np.float64), iou)
    xyxy, c, s = xyxy[kept], c[kept], conf[idx][kept]
    xyxy[:, [0, 2]] = np.clip((xyxy[:, [0, 2]] - g.left) / g.scale, 0, g.width) / g.width
    xyxy[:, [1, 3]] = np.clip((xyxy[:, [1, 3]] - g.top) / g.scale, 0, g.height) / g.height
    return xyxy.astype(np.float32), s.astype(np.float32), c.astype(np.int32)


def output_classes(shape: tuple, size: int) -> int:
    """Number of classes of a ``[1, 4 + nc, anchors]`` output shape, or ModelError.

    Symbolic (dynamic) dims are accepted here and checked again on a real output."""
    if len(shape) != 3:
        raise ModelError(f"output has shape {list(shape)}; a YOLOv8/YOLO11 detection export "
                         f"has [1, 4 + classes, anchors] (e.g. [1, 84, 8400] at {size})")
    b, f, a = shape
    if isinstance(b, int) and b != 1:
        raise ModelError(f"output batch dimension is {b}, expected 1 (export with batch=1)")
    if isinstance(f, int) and isinstance(a, int) and f > a:
        raise ModelError(f"output has shape {list(shape)}: looks transposed ([1, anchors, "
                         f"4 + classes]); expected [1, 4 + classes, anchors]")
    if isinstance(f, int) and f < 5:
        raise ModelError(f"output has shape {list(shape)}: fewer than 4 box values + 1 class "
                         f"per anchor; expected [1, 4 + classes, anchors]")
    return f - 4 if isinstance(f, int) else -1


def select_providers(
    spec: str, available: list[str], gpu: bool, device_id: int, fp16: bool, cache_dir: str
) -> list:
    """onnxruntime providers (with options) for ``providers`` = auto or an explicit list."""
    if spec.strip() == "auto":
        names = [p for p in GPU_PROVIDERS if gpu and p in available] + ["CPUExecutionProvider"]
    else:
        names = [p.strip() for p in spec.split(",") if p.strip()]
        missing = [p for p in names if p not in available]
        if missing or not names:
            raise ModelError(f"providers {spec!r}: {', '.join(missing) or 'empty'} not in "
                             f"this onnxruntime build (available: {', '.join(available)})")
    out: list = []
    for name in names:
        if name == "TensorrtExecutionProvider":
            out.append((name, {"device_id": device_id, "trt_fp16_enable": fp16,
                               "trt_engine_cache_enable": True,
                               "trt_engine_cache_path": cache_dir}))
        elif name == "CUDAExecutionProvider":
            out.append((name, {"device_id": device_id}))
        else:
            out.append(name)
    return out


def engine_cache_dir(onnx_path: str) -> str:
    """Where TensorRT keeps its built engines: next to the export when that folder is
    writable (a rebuilt container reuses them), else the temp folder (read-only mounts)."""
    folder = os.path.dirname(os.path.abspath(onnx_path))
    if os.access(folder, os.W_OK):
        return folder
    import tempfile

    return tempfile.gettempdir()


def parse_classes(raw: str) -> np.ndarray | None:
    """``"0,2,7"`` -> class ids kept; ``""`` or ``"all"`` keeps every class."""
    if raw.strip() in ("", "all"):
        return None
    try:
        ids = sorted({int(x) for x in raw.split(",") if x.strip()})
    except ValueError:
        raise ModelError(f"classes {raw!r}: expected comma-separated class ids") from None
    if not ids or ids[0] < 0:
        raise ModelError(f"classes {raw!r}: expected non-negative class ids")
    return np.asarray(ids, np.int64)


class YoloOnnx:
    """One onnxruntime session on a YOLO export, validated at construction."""

    def __init__(self, path: str, params: dict[str, str] | None = None, *, gpu: bool = False,
                 device_id: int = 0) -> None:
        import onnxruntime as ort

        p = {**DEFAULTS, **(params or {})}
        try:
            self.size = int(p["input_size"])
            self.score_threshold = float(p["score_threshold"])
            self.iou = float(p["nms_iou"])
            threads = int(p["threads"])
        except ValueError as exc:
            raise ModelError(f"bad parameter value: {exc}") from None
        if self.size < 32 or self.size % 32:
            raise ModelError(f"input_size {self.size}: must be a multiple of 32 (YOLO strides)")
        self.classes = parse_classes(p["classes"])
        if not os.path.isfile(path):
            raise ModelError(f"ONNX file {path} not found (parameter onnx_path; put the export "
                             f"there, see docs/models.md)")
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = max(threads, 0)
        opts.inter_op_num_threads = 1
        providers = select_providers(
            p["providers"], ort.get_available_providers(), gpu, device_id,
            p["trt_fp16"].strip() not in ("0", "false", ""), engine_cache_dir(path),
        )
        try:
            self.session = ort.InferenceSession(path, opts, providers=providers)
        except Exception as exc:
            raise ModelError(f"{path} is not a loadable ONNX model: {exc}") from None
        self.providers = self.session.get_providers()
        inputs, outputs = self.session.get_inputs(), self.session.get_outputs()
        if len(inputs) != 1:
            raise ModelError(f"model has {len(inputs)} inputs, expected 1 image input")
        shape = list(inputs[0].shape)
        if len(shape) != 4 or (isinstance(shape[1], int) and shape[1] != 3):
            raise ModelError(f"input {inputs[0].name} has shape {shape}; expected "
                             f"[1, 3, {self.size}, {self.size}]")
        for d in shape[2:]:
            if isinstance(d, int) and d != self.size:
                raise ModelError(f"input {inputs[0].name} has shape {shape} but input_size is "
                                 f"{self.size}; set input_size to the export's imgsz")
        if inputs[0].type not in ("tensor(float)", "tensor(float16)"):
            raise ModelError(f"input {inputs[0].name} is {inputs[0].type}, expected float")
        if len(outputs) != 1:
            names = ", ".join(o.name for o in outputs)
            raise ModelError(f"model has {len(outputs)} outputs ({names}); a detection export "
                             f"has one (segmentation/pose exports are not supported)")
        output_classes(tuple(outputs[0].shape), self.size)
        self.input_name = inputs[0].name
        self.half = inputs[0].type == "tensor(float16)"
        # A real run: dynamic shapes and graphs that only fail when executed show up now.
        blob = np.zeros((1, 3, self.size, self.size), np.float16 if self.half else np.float32)
        try:
            out = self.session.run(None, {self.input_name: blob})[0]
        except Exception as exc:
            raise ModelError(f"test inference failed: {exc}") from None
        self.num_classes = output_classes(tuple(int(d) for d in out.shape), self.size)
        if self.classes is not None and int(self.classes[-1]) >= self.num_classes:
            raise ModelError(f"classes lists id {int(self.classes[-1])} but the model has "
                             f"{self.num_classes} classes (0..{self.num_classes - 1})")

    def detect(self, image: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Normalised boxes [n, 4], scores [n], COCO class ids [n] for one BGR frame."""
        blob, g = letterbox(image, self.size)
        if self.half:
            blob = blob.astype(np.float16)
        out = self.session.run(None, {self.input_name: blob})[0]
        if out.ndim != 3 or out.shape[0] != 1 or out.shape[1] != self.num_classes + 4:
            raise ValueError(f"model output shape changed to {list(out.shape)}")
        return decode(out[0].astype(np.float32, copy=False), g, self.score_threshold,
                      self.iou, self.classes)

    def detect_jpeg(self, data: bytes) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
        if image is None:
            raise ValueError("not a decodable image")
        return self.detect(image)


def pad_outputs(
    boxes: np.ndarray, scores: np.ndarray, classes: np.ndarray
) -> tuple[np.ndarray, ...]:
    """Fixed-shape outputs: boxes [64,4], scores [64], classes [64] (-1 padded), count [1]."""
    n = min(len(scores), MAX_DETECTIONS)
    b = np.zeros((MAX_DETECTIONS, 4), np.float32)
    s = np.zeros((MAX_DETECTIONS,), np.float32)
    c = np.full((MAX_DETECTIONS,), -1, np.int32)
    b[:n], s[:n], c[:n] = boxes[:n], scores[:n], classes[:n]
    return b, s, c, np.array([n], np.int32)


def resolve_path(raw: str, model_dir: str, version: str) -> str:
    """``onnx_path`` as given if absolute, else relative to the model's version folder."""
    return raw if os.path.isabs(raw) else os.path.join(model_dir, version, raw)


class TritonPythonModel:
    """Triton entry point: one JPEG per batch item; a bad image fails only its request."""

    def initialize(self, args: dict) -> None:
        cv2.setNumThreads(1)  # Triton batches; threads would fight the other CPU users
        config = json.loads(args["model_config"])
        params = {k: v["string_value"] for k, v in (config.get("parameters") or {}).items()}
        unknown = sorted(set(params) - set(DEFAULTS))
        try:
            if unknown:
                raise ModelError(f"unknown parameter(s) {', '.join(unknown)} in config.pbtxt "
                                 f"(known: {', '.join(DEFAULTS)})")
            path = resolve_path(params.get("onnx_path", DEFAULTS["onnx_path"]),
                                args["model_repository"], str(args["model_version"]))
            self.detector = YoloOnnx(
                path, params, gpu=args.get("model_instance_kind") == "GPU",
                device_id=int(args.get("model_instance_device_id") or 0),
            )
        except ModelError as exc:
            raise ModelError(f"{config.get('name', 'object_detector')}: {exc}") from None
        self.name = config.get("name", "object_detector")
        logger = getattr(pb_utils, "Logger", None)
        if logger is not None:  # which providers onnxruntime really took (GPU or not)
            logger.log_info(f"{self.name}: {path}: {self.detector.num_classes} classes, "
                            f"providers {', '.join(self.detector.providers)}")

    def execute(self, requests: list) -> list:
        responses = []
        for request in requests:
            try:
                images = pb_utils.get_input_tensor_by_name(request, "images").as_numpy()
                outs: list[list[np.ndarray]] = [[], [], [], []]
                for item in images.reshape(-1):
                    data = item if isinstance(item, bytes) else bytes(item)
                    padded = pad_outputs(*self.detector.detect_jpeg(data))
                    for acc, arr in zip(outs, padded, strict=True):
                        acc.append(arr)
                names = ("boxes", "scores", "classes", "count")
                tensors = [
                    pb_utils.Tensor(n, np.stack(a)) for n, a in zip(names, outs, strict=True)
                ]
                responses.append(pb_utils.InferenceResponse(output_tensors=tensors))
            except Exception as exc:  # one poison image must not fail the whole batch
                responses.append(
                    pb_utils.InferenceResponse(
                        output_tensors=[], error=pb_utils.TritonError(f"{self.name}: {exc}")
                    )
                )
        return responses
