"""Async Triton gRPC client for the inference agent: batching, bounded concurrency and a
circuit breaker.

Why a wrapper: the agent must tell two kinds of failure apart, because they call for
opposite reactions (docs/architecture.md, "Inference: two kinds of failure"):
- `TritonUnavailable` - the server or the network is down (gRPC UNAVAILABLE, deadline,
  connection refused, model not loaded). Nothing is wrong with the frame: the agent must
  stop, back off and retry the *same* frame, never skip it.
- `InferenceRejected` - Triton answered and refused this input (the model raised on it).
  After bounded retries the frame goes to the DLQ and the stream continues.

The circuit breaker counts consecutive transport failures; once open, calls fail fast
with `TritonUnavailable` until a probe (`wait_until_ready`) sees the server ready again,
so a dead server costs one cheap readiness check per back-off step instead of a pile of
timed-out inference requests.

Concurrency: one semaphore bounds the requests in flight across both models, so a burst
of frames cannot queue unbounded work in Triton (whose dynamic batcher then merges the
concurrent requests into model batches).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import tritonclient.grpc.aio as grpcclient
from prometheus_client import Counter, Gauge, Histogram
from tritonclient.utils import InferenceServerException

from agents.inference_settings import InferenceSettings

log = logging.getLogger(__name__)

LATENCY = Histogram(
    "vigil_inference_triton_latency_seconds",
    "Latency of one Triton request, by model",
    ["model"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
)
BATCH = Histogram(
    "vigil_inference_request_batch_size",
    "Items per Triton request, by model",
    ["model"],
    buckets=(1, 2, 4, 8, 16, 32, 64),
)
IN_FLIGHT = Gauge("vigil_inference_in_flight", "Triton requests in flight")
FAILURES = Counter(
    "vigil_inference_triton_failures_total", "Failed Triton requests, by kind", ["kind"]
)

#: gRPC status codes that mean "the server is not there / not serving", not "bad input".
_TRANSPORT_CODES = (
    "UNAVAILABLE",
    "DEADLINE_EXCEEDED",
    "CANCELLED",
    "UNKNOWN",
    "RESOURCE_EXHAUSTED",
    "ABORTED",
    "NOT_FOUND",  # model unloaded or not yet loaded
)


class TritonUnavailable(Exception):
    """Triton cannot be reached or is not serving the model; retry the same input later."""


class InferenceRejected(Exception):
    """Triton answered with an error for this input; the input is probably poison."""


def _classify(exc: BaseException) -> Exception:
    if isinstance(exc, InferenceServerException):
        status = str(exc.status() or "")
        msg = str(exc.message() or exc)
        if any(code in status for code in _TRANSPORT_CODES) or "not ready" in msg.lower() or (
            "unknown model" in msg.lower()
        ):
            return TritonUnavailable(f"{status}: {msg}")
        return InferenceRejected(f"{status}: {msg}")
    if isinstance(exc, (OSError, asyncio.TimeoutError, ConnectionError)):
        return TritonUnavailable(f"{type(exc).__name__}: {exc}")
    return InferenceRejected(f"{type(exc).__name__}: {exc}")


class CircuitBreaker:
    """Closed -> open after `threshold` consecutive transport failures -> closed on success.

    Open means: fail fast, and let the caller probe readiness with back-off. There is no
    separate half-open state: the probe is the half-open trial.
    """

    def __init__(self, threshold: int) -> None:
        self.threshold = threshold
        self.failures = 0
        self.opened_at: float | None = None

    @property
    def is_open(self) -> bool:
        return self.opened_at is not None

    def record_success(self) -> None:
        self.failures = 0
        self.opened_at = None

    def record_failure(self) -> bool:
        """Count a transport failure; True if this one opened the breaker."""
        self.failures += 1
        if self.opened_at is None and self.failures >= self.threshold:
            self.opened_at = time.monotonic()
            return True
        return False


@dataclass(frozen=True, slots=True)
class FrameDetections:
    """Detector output for one image: normalised boxes [n,4], scores [n], class ids [n]."""

    boxes: np.ndarray
    scores: np.ndarray
    classes: np.ndarray


def split_even(items: Sequence[bytes], max_size: int, parallel: int) -> list[list[bytes]]:
    """Consecutive chunks of at most `max_size`, at least `parallel` of them (when there are
    enough items), sizes differing by at most one.

    Why: each detector instance works through its request's images one by one, so
    [4, 1] keeps one instance busy four times as long as the other, and one request of 2
    leaves the second instance idle; even chunks across the instances cut a batch's latency.
    """
    n = len(items)
    if n == 0:
        return []
    k = min(n, max(-(-n // max_size), parallel))
    base, extra = divmod(n, k)
    out, start = [], 0
    for i in range(k):
        size = base + (1 if i < extra else 0)
        out.append(list(items[start : start + size]))
        start += size
    return out


class TritonInference:
    """The two model calls the agent needs, batched and bounded."""

    def __init__(self, url: str, settings: InferenceSettings) -> None:
        self.url = url
        self.s = settings
        self.breaker = CircuitBreaker(settings.breaker_failures)
        self._sem = asyncio.Semaphore(settings.max_in_flight)
        self._client: grpcclient.InferenceServerClient | None = None
        self.detector_version = settings.detector_version or "?"
        self.embedder_version = settings.embedder_version or "?"

    def _get_client(self) -> grpcclient.InferenceServerClient:
        if self._client is None:
            self._client = grpcclient.InferenceServerClient(self.url)
        return self._client

    async def close(self) -> None:
        if self._client is not None:
            client, self._client = self._client, None
            try:
                await client.close()
            except Exception:  # closing a broken channel must not mask the real error
                log.debug("closing triton client failed", exc_info=True)

    async def _infer(
        self,
        model: str,
        version: str,
        inputs: list[grpcclient.InferInput],
        outputs: Sequence[str],
        items: int,
    ) -> grpcclient.InferResult:
        if self.breaker.is_open:
            raise TritonUnavailable("circuit breaker open")
        async with self._sem:
            IN_FLIGHT.inc()
            started = time.perf_counter()
            try:
                result = await self._get_client().infer(
                    model,
                    inputs,
                    model_version=version,
                    outputs=[grpcclient.InferRequestedOutput(o) for o in outputs],
                    client_timeout=self.s.request_timeout_s,
                )
            except Exception as exc:
                err = _classify(exc)
                FAILURES.labels(type(err).__name__).inc()
                if isinstance(err, TritonUnavailable):
                    if self.breaker.record_failure():
                        log.warning("triton circuit breaker opened: %s", err)
                    await self.close()  # a fresh channel after the server comes back
                raise err from exc
            finally:
                IN_FLIGHT.dec()
            LATENCY.labels(model).observe(time.perf_counter() - started)
            BATCH.labels(model).observe(items)
            self.breaker.record_success()
            return result

    async def detect(self, jpegs: Sequence[bytes]) -> list[FrameDetections]:
        """Run the detector on JPEG frames; chunks go out concurrently, results in order."""
        chunks = split_even(jpegs, self.s.detector_batch, self.s.detector_parallel)
        parts = await asyncio.gather(*(self._detect_chunk(c) for c in chunks))
        return [d for part in parts for d in part]

    async def _detect_chunk(self, jpegs: list[bytes]) -> list[FrameDetections]:
        data = np.array([[j] for j in jpegs], dtype=np.object_)
        inp = grpcclient.InferInput("images", [len(jpegs), 1], "BYTES")
        inp.set_data_from_numpy(data)
        res = await self._infer(
            self.s.detector_model,
            self.s.detector_version,
            [inp],
            ("boxes", "scores", "classes", "count"),
            len(jpegs),
        )
        self.detector_version = res.get_response().model_version or self.detector_version
        boxes, scores = res.as_numpy("boxes"), res.as_numpy("scores")
        classes, count = res.as_numpy("classes"), res.as_numpy("count").reshape(-1)
        out = []
        for i in range(len(jpegs)):
            n = int(count[i])
            out.append(FrameDetections(boxes[i, :n], scores[i, :n], classes[i, :n]))
        return out

    async def embed(self, crops: np.ndarray) -> np.ndarray:
        """Embeddings [N, D] for uint8 crops [N, H, W, 3] (one request, N <= 32)."""
        inp = grpcclient.InferInput("crops", list(crops.shape), "UINT8")
        inp.set_data_from_numpy(np.ascontiguousarray(crops, dtype=np.uint8))
        res = await self._infer(
            self.s.embedder_model, self.s.embedder_version, [inp], ("embeddings",), len(crops)
        )
        self.embedder_version = res.get_response().model_version or self.embedder_version
        return res.as_numpy("embeddings")

    async def ready(self) -> bool:
        """True when the server and both models are ready (the breaker's half-open probe)."""
        try:
            client = self._get_client()
            ok = await client.is_server_ready(client_timeout=2.0)
            ok = ok and await client.is_model_ready(self.s.detector_model, client_timeout=2.0)
            ok = ok and await client.is_model_ready(self.s.embedder_model, client_timeout=2.0)
        except Exception:
            await self.close()
            return False
        if ok:
            self.breaker.record_success()
        return bool(ok)
