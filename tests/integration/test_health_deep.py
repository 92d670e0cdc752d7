"""`/health/deep` tells the truth: 503 naming the part when Triton is down, when the read
model is stale, or when a dependency does not answer — each with the real thing down (a
Triton or Kafka address nobody listens on, a projector that stopped while events keep
arriving), never a stubbed probe."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from starlette.testclient import TestClient

from api.app import create_app
from api.cli import triton_probe
from api.settings import load_api_settings
from schemas.events import EdgeHeartbeat
from tools.devstack.process import free_port
from tools.testkit.api import T0, World, make_world, seed_world
from vigil.settings import get_settings

pytestmark = pytest.mark.integration


def _clear() -> None:
    from schemas.codec import default_codec

    get_settings.cache_clear()
    default_codec.cache_clear()


@pytest.fixture(scope="module")
def world(stack: dict[str, str]) -> Iterator[World]:
    mp = pytest.MonkeyPatch()
    prefix = f"t{uuid.uuid4().hex[:10]}"
    mp.setenv("VIGIL_TOPIC_PREFIX", prefix)
    _clear()
    try:
        with make_world(stack["KAFKA_BOOTSTRAP"], stack["DATABASE_URL"], prefix) as w:
            seed_world(w, events_per_camera=2, embeddings_per_camera=1)
            yield w
    finally:
        mp.undo()
        _clear()


def _store() -> Any:
    from minio import Minio

    s = get_settings()
    return Minio(s.s3_endpoint.split("://", 1)[-1], access_key=s.s3_access_key,
                 secret_key=s.s3_secret_key.get_secret_value(),
                 secure=s.s3_endpoint.startswith("https"), region=s.s3_region)


def _deep(w: World, triton_url: str, settings: Any = None) -> tuple[int, dict[str, Any]]:
    api = load_api_settings(env={}, keys_schema=w.keys_schema)
    app = create_app(settings or get_settings(), w.engine, w.producer, read_schema=w.schema,
                     api_settings=api, object_store=_store(),
                     triton_probe=triton_probe(triton_url, api.triton_model),
                     create_key_table=False)
    with TestClient(app, raise_server_exceptions=False) as client:
        resp = client.get("/health/deep")
    return resp.status_code, resp.json()


def test_everything_up_is_ok(world: World, stack: dict[str, str]) -> None:
    code, body = _deep(world, stack["TRITON_URL"])
    assert (code, body["status"], body["failed"]) == (200, "ok", []), body
    assert set(body["checks"]) == {"postgres", "kafka", "object_store", "read_model", "triton"}


def test_triton_down_fails_naming_triton(world: World) -> None:
    code, body = _deep(world, f"127.0.0.1:{free_port()}")
    assert code == 503
    assert body["failed"] == ["triton"]
    assert body["checks"]["triton"]["status"] == "fail"


def test_kafka_down_fails_naming_kafka(world: World, stack: dict[str, str]) -> None:
    from schemas.producer import EventProducer

    dead = f"127.0.0.1:{free_port()}"
    settings = get_settings().model_copy(update={"kafka_bootstrap": dead})
    producer = EventProducer(**{"bootstrap.servers": dead})
    w = World(**{**world.__dict__, "producer": producer})
    code, body = _deep(w, stack["TRITON_URL"], settings=settings)
    assert code == 503
    assert set(body["failed"]) == {"kafka", "read_model"}, body


def test_stale_read_model_fails_naming_it(world: World, stack: dict[str, str]) -> None:
    """Events arrive while the projector is not running, and its last commit is older
    than the limit: stale. An idle read model (nothing new in Kafka) is not."""
    with world.engine.begin() as conn:
        conn.execute(sa.text(f'UPDATE "{world.schema}".projector_offsets '
                             "SET updated_at = now() - interval '1 hour'"))
    code, body = _deep(world, stack["TRITON_URL"])
    assert code == 200, body  # caught up, however old the last commit
    world.send("heartbeats", "edge-x", EdgeHeartbeat.create(
        producer="test", occurred_at=T0 + timedelta(minutes=5), edge_id="edge-x",
        site_id="site-a", version="1", interval_s=30.0, streams=[],
        disk_free_bytes=10**10, memory_rss_bytes=10**8, spool_backlog=0, spool_evicted=0))
    assert world.producer.flush(30) == 0
    code, body = _deep(world, stack["TRITON_URL"])
    assert code == 503
    assert body["failed"] == ["read_model"]
    assert "stale" in body["checks"]["read_model"]["detail"]
