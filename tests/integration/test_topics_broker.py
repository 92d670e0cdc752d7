"""Topics per prefix on a real broker.

A state table's partition count comes from its source topic on the broker, and a wrong
guess is permanent (the changelog is created with it and Faust then refuses every
write with PartitionsMismatch): `source_partitions` waits for a topic that does not show
yet and fails naming one that never does, without auto-creating it."""

from __future__ import annotations

import threading
import time
import uuid

import pytest
from confluent_kafka.admin import AdminClient, NewTopic

from agents.ticks import source_partitions
from schemas.topics import CATALOG, apply_topics, delete_topics
from vigil.errors import VigilError
from vigil.settings import get_settings

pytestmark = pytest.mark.integration


@pytest.fixture
def prefix(stack: dict[str, str], monkeypatch: pytest.MonkeyPatch):
    """A fresh topic prefix with NO topics created."""
    p = f"t{uuid.uuid4().hex[:10]}"
    monkeypatch.setenv("VIGIL_TOPIC_PREFIX", p)
    get_settings.cache_clear()
    yield p
    monkeypatch.delenv("VIGIL_TOPIC_PREFIX")
    get_settings.cache_clear()


def _admin(stack: dict[str, str]) -> AdminClient:
    return AdminClient({"bootstrap.servers": stack["KAFKA_BOOTSTRAP"]})


def test_waits_for_a_topic_created_meanwhile(stack: dict[str, str], prefix: str) -> None:
    admin = _admin(stack)

    def create_later() -> None:
        time.sleep(2.0)
        admin.create_topics([NewTopic(f"{prefix}.alerts", num_partitions=3,
                                      replication_factor=1)])[f"{prefix}.alerts"].result(30)

    t = threading.Thread(target=create_later)
    t.start()
    try:
        assert source_partitions("alerts", wait_s=30) == 3  # not the catalog's 8
    finally:
        t.join()


def test_missing_topic_fails_naming_it_and_is_not_created(stack: dict[str, str],
                                                           prefix: str) -> None:
    with pytest.raises(VigilError, match=f"topic {prefix}.alerts does not exist"):
        source_partitions("alerts", wait_s=1.0)
    assert f"{prefix}.alerts" not in _admin(stack).list_topics(timeout=10).topics


def test_delete_topics_removes_a_prefix_and_nothing_else(stack: dict[str, str],
                                                         prefix: str) -> None:
    """What benchmarks call after a run: the prefix's catalog topics and its Faust app's
    topics go, another prefix's stay."""
    other = f"t{uuid.uuid4().hex[:10]}"
    apply_topics(stack["KAFKA_BOOTSTRAP"], prefix, partitions_override=1)
    apply_topics(stack["KAFKA_BOOTSTRAP"], other, partitions_override=1)
    admin = _admin(stack)
    changelog = f"{prefix}-worker-scene-state-changelog"
    admin.create_topics([NewTopic(changelog, 1, 1)])[changelog].result(30)
    deleted = delete_topics(stack["KAFKA_BOOTSTRAP"], prefix)
    assert deleted == len(CATALOG) + 1
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:  # deletion is asynchronous on the broker
        names = set(admin.list_topics(timeout=10).topics)
        if not any(n.startswith(prefix) for n in names):
            break
        time.sleep(0.5)
    assert not any(n.startswith(prefix) for n in names)
    assert {t.name(other) for t in CATALOG} <= names
    delete_topics(stack["KAFKA_BOOTSTRAP"], other)
