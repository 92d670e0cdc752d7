"""Inference agent settings (``VIGIL_INFERENCE_*``), validated at start-up.

The Triton address itself is the shared ``TRITON_URL`` (vigil.settings); everything that
tunes how the agent talks to Triton lives here, so a misspelt knob fails fast instead of
silently doing nothing (``extra="forbid"``).
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import cache

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from vigil.settings import load_component_settings


class InferenceSettings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="VIGIL_INFERENCE_", extra="forbid", frozen=True
    )

    detector_model: str = "person_detector"
    #: "" = let Triton choose the latest version; the version used is reported per frame.
    detector_version: str = ""
    embedder_model: str = "appearance_embedder"
    embedder_version: str = ""
    #: Embedder input crop size (must match the model's `crops` tensor).
    crop_width: int = Field(64, ge=8)
    crop_height: int = Field(128, ge=16)
    #: Detections below this score are dropped before embedding and publishing.
    min_score: float = Field(0.3, ge=0.0, le=1.0)
    #: Frames taken from the stream per batch (the unit of in-order publishing).
    batch_size: int = Field(8, ge=1, le=256)
    #: How long to wait to fill a batch, seconds.
    batch_timeout_s: float = Field(0.05, gt=0.0, le=5.0)
    #: Requests to Triton in flight at once (bounded semaphore, shared by both models).
    max_in_flight: int = Field(4, ge=1, le=64)
    #: Max images per detector request (Triton's person_detector max_batch_size).
    detector_batch: int = Field(4, ge=1, le=8)
    #: Split a take-batch into at least this many detector requests (sizes balanced), so
    #: every detector instance (``instance_group`` count in config.pbtxt, 2) gets work.
    detector_parallel: int = Field(2, ge=1, le=16)
    #: Per-request deadline, seconds.
    request_timeout_s: float = Field(10.0, gt=0.0)
    #: Consecutive transport failures that open the circuit breaker (Triton), or that make
    #: an object-store outage publish InferenceDegraded.
    breaker_failures: int = Field(3, ge=1)
    #: Back-off while Triton is unreachable: first and max delay between probes, seconds.
    backoff_initial_s: float = Field(0.5, gt=0.0)
    backoff_max_s: float = Field(5.0, gt=0.0)
    #: Attempts for a frame that Triton rejects (not a transport error) before the DLQ.
    poison_retries: int = Field(2, ge=1, le=10)
    #: Attempts to fetch a frame's `object_ref` that the store says does not exist (the
    #: upload may still be landing) before the frame goes to the DLQ; short back-off.
    object_missing_attempts: int = Field(3, ge=1, le=10)
    #: Per-request timeout talking to the object store, seconds (connect and read). A
    #: store that is down or timing out is retried with `backoff_*` without limit: the
    #: frame is fine, so it must wait, not be dead-lettered.
    object_timeout_s: float = Field(5.0, gt=0.0, le=120.0)
    #: Frames declaring more pixels than this are poison: a camera never sends them, and a
    #: forged header must not make the worker allocate gigabytes (default 4096 x 4096).
    max_frame_pixels: int = Field(16_777_216, ge=4096)
    #: Skip the detector for frames whose motion_score is below `still_threshold`.
    skip_still: bool = False
    still_threshold: float = Field(0.01, ge=0.0)
    #: Publish AppearanceEmbedded events (personal data, short-retention topic).
    embeddings: bool = True


PREFIX = "VIGIL_INFERENCE_"


def load_inference_settings(env: Mapping[str, str] | None = None) -> InferenceSettings:
    """Validate ``VIGIL_INFERENCE_*`` or raise ConfigError naming the variable.

    pydantic-settings ignores unknown *environment* keys even with ``extra="forbid"``, so
    they are checked here: a misspelt knob must not silently do nothing.
    """
    return load_component_settings(InferenceSettings, PREFIX, env)


@cache
def get_inference_settings() -> InferenceSettings:
    return load_inference_settings()
