"""`vigil bench api`: listing latency and throughput at 50 concurrent clients.

The reference is the static `/health` route of the same server in the same run: it
costs the HTTP stack, middleware and the client, and nothing else, so
``ratio = listing req/s / health req/s`` says how much the read-model work (auth, query,
serialisation) costs on this machine, whatever else the machine is doing. The data go
through the real projector into a scratch schema, which is dropped afterwards.
"""

from __future__ import annotations

import asyncio
import logging
import os
import statistics
import time
import uuid
from typing import Any

import httpx

from vigil.bench import BenchResult

CLIENTS = 50


def _pct(values: list[float], p: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    idx = min(len(ordered) - 1, max(0, round(p / 100 * (len(ordered) - 1))))
    return ordered[idx]


async def _load(base: str, path: str, headers: dict[str, str], total: int) -> dict[str, Any]:
    latencies: list[float] = []
    errors = 0
    queue: asyncio.Queue[int] = asyncio.Queue()
    for i in range(total):
        queue.put_nowait(i)
    limits = httpx.Limits(max_connections=CLIENTS, max_keepalive_connections=CLIENTS)
    async with httpx.AsyncClient(base_url=base, timeout=30, limits=limits) as client:

        async def worker() -> None:
            nonlocal errors
            while True:
                try:
                    queue.get_nowait()
                except asyncio.QueueEmpty:
                    return
                t = time.perf_counter()
                resp = await client.get(path, headers=headers)
                latencies.append(time.perf_counter() - t)
                if resp.status_code != 200:
                    errors += 1

        start = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(CLIENTS)))
        elapsed = time.perf_counter() - start
    return {
        "requests": total, "errors": errors, "req_per_s": total / elapsed,
        "p50_ms": _pct(latencies, 50) * 1e3, "p95_ms": _pct(latencies, 95) * 1e3,
        "p99_ms": _pct(latencies, 99) * 1e3,
        "mean_ms": statistics.fmean(latencies) * 1e3 if latencies else 0.0,
    }


def run(quick: bool = False) -> BenchResult:
    from api.app import create_app
    from api.settings import load_api_settings
    from api.testing import make_world, seed_world, serve
    from schemas.codec import default_codec
    from vigil.settings import get_settings

    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per request otherwise
    prefix = f"bench{uuid.uuid4().hex[:8]}"
    saved = os.environ.get("VIGIL_TOPIC_PREFIX")
    os.environ["VIGIL_TOPIC_PREFIX"] = prefix
    get_settings.cache_clear()
    default_codec.cache_clear()
    settings = get_settings()
    requests = 300 if quick else 3000
    try:
        with make_world(settings.kafka_bootstrap, settings.database_url, prefix) as w:
            seed_world(w, events_per_camera=30 if quick else 400,
                       alerts_per_camera=20 if quick else 200, embeddings_per_camera=2)
            w.add_key("bench", "viewer")
            app = create_app(settings, w.engine, w.producer, read_schema=w.schema,
                             api_settings=load_api_settings(
                                 env={}, keys_schema=w.keys_schema,
                                 rate_limit_per_s=1e6, rate_limit_burst=1_000_000))
            headers = w.auth("bench")
            with serve(app) as base:

                async def all_runs() -> dict[str, dict[str, Any]]:
                    await _load(base, "/health", {}, 100)  # warm-up: connections, caches
                    await _load(base, "/api/v1/alerts?limit=50", headers, 100)
                    return {
                        "health": await _load(base, "/health", {}, requests),
                        "alerts": await _load(base, "/api/v1/alerts?limit=50", headers,
                                              requests),
                        "events": await _load(base, "/api/v1/events?limit=50", headers,
                                              requests),
                    }

                results = asyncio.run(all_runs())
    finally:
        if saved is None:
            os.environ.pop("VIGIL_TOPIC_PREFIX", None)
        else:
            os.environ["VIGIL_TOPIC_PREFIX"] = saved
        get_settings.cache_clear()
        default_codec.cache_clear()
    listing = statistics.fmean([results["alerts"]["req_per_s"], results["events"]["req_per_s"]])
    baseline = results["health"]["req_per_s"]
    return BenchResult(
        name="api", value=listing, unit="req/s", baseline=baseline,
        ratio=listing / baseline if baseline else 0.0,
        details={"clients": CLIENTS, "quick": quick, "page_size": 50, **results},
    )
