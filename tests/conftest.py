"""Test-session fixtures: the real local stack, started once, and per-test isolation.

Integration tests (marker ``integration``) get the stack from the `stack` fixture:
- by default `tools.devstack` starts Kafka, PostgreSQL+pgvector, Triton and the object
  store under a test state folder and stops them at the end of the session;
- with ``VIGIL_TEST_STACK=external`` the addresses come from the environment
  (KAFKA_BOOTSTRAP, DATABASE_URL, TRITON_URL, S3_ENDPOINT) and nothing is started.

`secure` is a secured broker (TLS + SASL/SCRAM-SHA-512 + ACLs,
tools/devstack/kafka_security.py): a Kafka-only stack of its own
(``<VIGIL_TEST_STATE_DIR>-secure-kafka``, ports shifted by ``VIGIL_TEST_SECURE_PORT_SHIFT``
(500) from the test stack's), so
the rest of the suite keeps its plaintext broker.

Each test gets its own topic prefix (so its own topics and consumer groups), which keeps
tests from seeing each other's data on one broker.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from vigil.settings import get_settings

ROOT = Path(__file__).resolve().parent.parent


def _clear_caches() -> None:
    from schemas.codec import default_codec

    get_settings.cache_clear()
    default_codec.cache_clear()


@pytest.fixture(scope="session")
def stack() -> Iterator[dict[str, str]]:
    """Environment variables that point a process at the running stack."""
    if os.environ.get("VIGIL_TEST_STACK") == "external":
        s = get_settings()
        yield {
            "KAFKA_BOOTSTRAP": s.kafka_bootstrap,
            "DATABASE_URL": s.database_url,
            "TRITON_URL": s.triton_url,
            "S3_ENDPOINT": s.s3_endpoint,
            "VIGIL_STATE_DIR": str(s.state_dir),
        }
        return
    from tools.devstack.stack import Stack

    state_dir = Path(os.environ.get("VIGIL_TEST_STATE_DIR", ROOT / ".vigil" / "test-stack"))
    st = Stack.for_tests(state_dir)
    env = st.up()
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    _clear_caches()
    try:
        yield env
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        _clear_caches()
        if not os.environ.get("VIGIL_TEST_KEEP_STACK"):
            st.down()


@pytest.fixture(scope="module")
def secure() -> Iterator[tuple[str, Any]]:
    """(bootstrap address, `Security`: the broker's CA and principals' passwords)."""
    from tools.devstack.stack import Stack

    base = Path(os.environ.get("VIGIL_TEST_STATE_DIR", ROOT / ".vigil" / "test-stack"))
    # the secured broker's ports: the test stack's shifted by VIGIL_TEST_SECURE_PORT_SHIFT
    # (500), which a checkout beside others may have to move off a neighbour's ports
    offset = int(os.environ.get("VIGIL_TEST_PORT_OFFSET", "0")) + int(
        os.environ.get("VIGIL_TEST_SECURE_PORT_SHIFT", "500"))
    mp = pytest.MonkeyPatch()
    mp.setenv("VIGIL_TEST_PORT_OFFSET", str(offset))
    st = Stack.for_tests(base.with_name(base.name + "-secure-kafka"), kafka_secure=True)
    mp.undo()
    st.up(["kafka"])
    try:
        kafka = st.services["kafka"]
        yield kafka.address(), kafka.security()  # type: ignore[attr-defined]
    finally:
        if not os.environ.get("VIGIL_TEST_KEEP_STACK"):
            st.down(["kafka"])


@pytest.fixture
def topic_prefix(stack: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A fresh topic prefix with every catalog topic created (2 partitions each)."""
    from schemas.topics import apply_topics

    prefix = f"t{uuid.uuid4().hex[:10]}"
    apply_topics(stack["KAFKA_BOOTSTRAP"], prefix, partitions_override=2)
    monkeypatch.setenv("VIGIL_TOPIC_PREFIX", prefix)
    _clear_caches()
    yield prefix
    monkeypatch.delenv("VIGIL_TOPIC_PREFIX")
    _clear_caches()


@pytest.fixture
def vigil_env(stack: dict[str, str], topic_prefix: str, tmp_path: Path) -> dict[str, str]:
    """Environment for a subprocess (worker, projector, edge) bound to this test's topics."""
    env = dict(os.environ)
    env.update(stack)
    env["VIGIL_TOPIC_PREFIX"] = topic_prefix
    env["VIGIL_STATE_DIR"] = str(tmp_path / "state")
    env["VIGIL_LOG_FORMAT"] = "text"
    return env
