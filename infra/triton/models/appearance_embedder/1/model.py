"""appearance_embedder: a classical re-identification descriptor of person crops.

Descriptor (D = 192): the 64x128 crop is cut into 6 horizontal stripes (head, shoulders,
torso, hips, thighs, shins); each stripe gets a joint HSV histogram of 4 hue x 2
saturation x 4 value bins (32 bins; value on a square-root scale), each pixel weighted
by a horizontal Gaussian and by how unlike the crop's side borders (the background) it
is, so that the ground around the person counts little. Each stripe is normalised to sum 1, square-
rooted (Hellinger kernel: cosine of the result is the Bhattacharyya coefficient), and the
whole vector is L2-normalised, so a dot product is a cosine similarity in [0, 1].

Why stripes: clothing colour is the most stable appearance cue across frames, and its
vertical layout (shirt vs trousers) separates people that wear the same colours in
different places. Why 4 value bins: dark clothing (and the synthetic scene's grey
silhouettes) differ mostly in brightness, which hue alone cannot see.

No multiprocessing (see person_detector). Plain functions so tests run without Triton.
"""

from __future__ import annotations

import json

import cv2
import numpy as np

try:  # only available inside the Triton python backend stub
    import triton_python_backend_utils as pb_utils
except ImportError:  # pragma: no cover
    pb_utils = None

CROP_H, CROP_W = 128, 64
H_BINS, S_BINS, V_BINS = 4, 2, 4
BINS = H_BINS * S_BINS * V_BINS


def _column_weights(width: int) -> np.ndarray:
    x = (np.arange(width) + 0.5) / width - 0.5
    return np.exp(-0.5 * (x / 0.3) ** 2).astype(np.float32)


#: Value is binned on a square-root scale: clothing differs most in the dark range.
V_LUT = np.sqrt(np.arange(256, dtype=np.float32) / 255.0)


def _foreground(crop: np.ndarray) -> np.ndarray:
    """Per-pixel weight in [0, 1]: colour distance from the crop's side borders.

    A person box always includes some ground at its sides; the median colour of the
    outer columns estimates it, and pixels unlike it are likely the person.
    """
    border = np.concatenate([crop[:, :4], crop[:, -4:]], axis=1).reshape(-1, 3)
    bg = np.median(border, axis=0).astype(np.float32)
    dist = np.linalg.norm(crop.astype(np.float32) - bg, axis=2)
    return np.clip(dist / 40.0, 0.0, 1.0)


def embed(crops: np.ndarray, stripes: int = 6) -> np.ndarray:
    """L2-normalised descriptors [N, stripes*32] for BGR uint8 crops [N, 128, 64, 3]."""
    n = crops.shape[0]
    out = np.zeros((n, stripes * BINS), np.float32)
    colw = _column_weights(CROP_W)
    bounds = np.linspace(0, CROP_H, stripes + 1).astype(int)
    for i in range(n):
        crop = crops[i]
        if crop.shape[:2] != (CROP_H, CROP_W):
            crop = cv2.resize(crop, (CROP_W, CROP_H), interpolation=cv2.INTER_AREA)
        crop = np.ascontiguousarray(crop)
        hsv = cv2.cvtColor(crop, cv2.COLOR_BGR2HSV)
        hq = (hsv[..., 0].astype(np.int32) * H_BINS) // 180
        sq = (hsv[..., 1].astype(np.int32) * S_BINS) // 256
        vq = np.minimum((V_LUT[hsv[..., 2]] * V_BINS).astype(np.int32), V_BINS - 1)
        code = (hq * S_BINS + sq) * V_BINS + vq
        weights = colw[None, :] * (0.1 + _foreground(crop))
        for s in range(stripes):
            a, b = bounds[s], bounds[s + 1]
            hist = np.bincount(
                code[a:b].ravel(), weights=weights[a:b].ravel(), minlength=BINS
            ).astype(np.float32)
            total = hist.sum()
            if total > 0:
                hist /= total
            out[i, s * BINS : (s + 1) * BINS] = np.sqrt(hist)
        norm = np.linalg.norm(out[i])
        if norm > 0:
            out[i] /= norm
    return out


class TritonPythonModel:
    """Triton entry point: crops [N,128,64,3] uint8 -> embeddings [N,192] float32."""

    def initialize(self, args: dict) -> None:
        cv2.setNumThreads(1)
        cfg = json.loads(args["model_config"])
        params = cfg.get("parameters") or {}
        self.stripes = int(params.get("stripes", {}).get("string_value", "6"))

    def execute(self, requests: list) -> list:
        responses = []
        for request in requests:
            try:
                crops = pb_utils.get_input_tensor_by_name(request, "crops").as_numpy()
                emb = embed(crops.reshape(-1, CROP_H, CROP_W, 3), self.stripes)
                responses.append(
                    pb_utils.InferenceResponse(output_tensors=[pb_utils.Tensor("embeddings", emb)])
                )
            except Exception as exc:
                responses.append(
                    pb_utils.InferenceResponse(
                        output_tensors=[],
                        error=pb_utils.TritonError(f"appearance_embedder: {exc}"),
                    )
                )
        return responses
