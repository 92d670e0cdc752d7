"""Property-based fuzzing of the API from its own OpenAPI document (schemathesis).

Every operation of the document gets generated requests, valid and invalid, sent
in-process to the ASGI app built on the real stack; every response must be no 5xx and
conform to the document (status code, content type, body schema). The live stream is
fuzzed too (query and Last-Event-ID header), with its `timeout_s` capped so that each
generated stream ends.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from starlette.testclient import TestClient

from api.app import create_app
from api.settings import load_api_settings
from tools.testkit.api import World, make_world, seed_world, unit_vector
from vigil.objects import client as object_store
from vigil.settings import get_settings

schemathesis = pytest.importorskip("schemathesis")

pytestmark = pytest.mark.integration

MAX_EXAMPLES = int(os.environ.get("VIGIL_TEST_FUZZ_EXAMPLES", "25"))


def _clear() -> None:
    from schemas.codec import default_codec

    get_settings.cache_clear()
    default_codec.cache_clear()


@pytest.fixture(scope="module")
def fuzz_world(stack: dict[str, str]) -> Iterator[World]:
    mp = pytest.MonkeyPatch()
    prefix = f"t{uuid.uuid4().hex[:10]}"
    mp.setenv("VIGIL_TOPIC_PREFIX", prefix)
    _clear()
    try:
        with make_world(stack["KAFKA_BOOTSTRAP"], stack["DATABASE_URL"], prefix) as w:
            seed_world(w, events_per_camera=3)
            w.add_key("admin", "admin")
            w.add_key("viewer_a", "viewer", ["site-a"])
            yield w
    finally:
        mp.undo()
        _clear()


STREAM = "/api/v1/alerts/stream"
#: the longest a generated live stream may stay open (it is endless by design)
STREAM_CAP_S = 0.3


def _operations(app: Any) -> list[Any]:
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    return [result.ok() for result in schema.get_all_operations()]


def _bounded(case: Any) -> None:
    """A generated stream request ends: a valid `timeout_s` (or none) is capped, an
    invalid one is left for the API to refuse."""
    query = dict(case.query or {})
    value = query.get("timeout_s")
    if value is None or (isinstance(value, int | float) and not isinstance(value, bool)
                         and value > 0):
        query["timeout_s"] = min(float(value or STREAM_CAP_S), STREAM_CAP_S)
        case.query = query


def _fuzz(op: Any, mode: Any, headers: dict[str, str], checks: list[Any]) -> None:
    @settings(max_examples=MAX_EXAMPLES, deadline=None, database=None,
              suppress_health_check=list(HealthCheck))
    @given(case=op.as_strategy(generation_mode=mode))
    def run(case: Any) -> None:
        if op.path == STREAM:
            _bounded(case)
        response = case.call(headers=headers)
        case.validate_response(response, checks=checks)

    run()
    if op.path == STREAM:  # and a replay for sure: a stream of every kind of event frame
        for last in ("0:-1", None):
            case = op.Case(query={"timeout_s": STREAM_CAP_S},
                           headers={"Last-Event-ID": last} if last else {})
            case.validate_response(case.call(headers=headers), checks=checks)


@pytest.mark.parametrize("mode", ["positive", "negative"])
@pytest.mark.parametrize("role", ["admin", "viewer_a"])
def test_fuzz_every_operation(fuzz_world: World, role: str, mode: str) -> None:
    from schemathesis import GenerationMode
    from schemathesis.checks import (
        content_type_conformance,
        not_a_server_error,
        response_schema_conformance,
        status_code_conformance,
    )

    w = fuzz_world

    async def fake_embedder(data: bytes) -> list[float]:
        """Stands in for Triton (not part of this test) so uploads reach pgvector."""
        return unit_vector(len(data), w.dim)

    app = create_app(
        get_settings(), w.engine, w.producer, read_schema=w.schema,
        api_settings=load_api_settings(env={}, keys_schema=w.keys_schema,
                                       rate_limit_per_s=100_000, rate_limit_burst=100_000,
                                       max_wait_s=0.1),
        embed_image=fake_embedder,
        # the real object store: presigned URLs and exports (background builds) run too
        object_store=object_store(),
    )
    headers = w.auth(role)
    checks = [not_a_server_error, status_code_conformance, content_type_conformance,
              response_schema_conformance]
    failures: list[str] = []
    ops = _operations(app)
    # the whole document: every path and method it describes is fuzzed
    with TestClient(app) as c:
        spec = c.get("/openapi.json").json()
    documented = {(m.upper(), path) for path, item in spec["paths"].items() for m in item}
    # (schemathesis leaves out the document's own path, which takes no input)
    assert {(op.method.upper(), op.path) for op in ops} == documented - {
        ("GET", "/openapi.json")}
    for op in ops:
        # Readiness answers 503 on purpose when a dependency is down (Triton is not
        # wired here); its 503 is documented, so only conformance is checked there.
        op_checks = checks[1:] if op.path.startswith("/health/") else checks
        try:
            _fuzz(op, GenerationMode(mode), headers, op_checks)
        except Unsatisfiable:
            continue  # nothing to make invalid: the operation takes no input
        except (Exception, BaseExceptionGroup) as exc:  # collect every operation's failure
            failures.append(f"{op.method.upper()} {op.path}: {str(exc)[:1500]}")
    assert not failures, "\n\n".join(failures)
