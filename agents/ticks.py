"""The leader's clock on a topic, and the state topics the alert/health tables need.

Shared by agents/alerts.py and agents/site_health.py (each can run without the other).

Ticks: timers run on every worker unless ``on_leader=True`` (docs/architecture.md,
Faust), leadership is not fenced and a timer cannot write a table. So the leader only
*sends* ``{"now": ISO}`` to every partition of a tick topic, with an explicit partition
number; the agent that owns partition p of the co-partitioned state reads tick p and
makes the decision with its own table. Two leaders for a moment mean two ticks: harmless,
every step is idempotent.

Changelogs: the app runs with ``topic_allow_declare=False`` and the broker auto-creates
missing topics with its default partition count, which would not match the source topics
(Faust then raises PartitionsMismatch). So before Faust subscribes, the changelog topics
of these tables are created here with exactly the source topic's partition count, and the
tables are declared with that count.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import faust
from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient, NewTopic

from schemas.topics import BY_SUFFIX, admin_client
from vigil.errors import VigilError
from vigil.settings import get_settings

log = logging.getLogger(__name__)


def _admin() -> AdminClient:
    return admin_client(get_settings().kafka_bootstrap)


def source_partitions(suffix: str, wait_s: float = 30.0) -> int:
    """Partition count of a catalog topic on the broker (catalog value if unreachable).

    A topic that does not show yet is waited for, up to `wait_s`, and then fails the
    worker's start naming it: whatever this returns is permanent, because the table's
    changelog is created with it, and a guess that does not match makes Faust refuse
    every write to the table (PartitionsMismatch). A topic created a moment ago can be
    missing from a broker's metadata for a while: 1.6 s was seen on a test broker holding
    about 5,000 partitions, and the catalog's count (8) then went into a changelog whose
    source had 2."""
    name = f"{get_settings().topic_prefix}.{suffix}"
    deadline = time.monotonic() + wait_s
    while True:
        try:
            # all topics, not list_topics(topic=name): a metadata request naming a missing
            # topic makes a broker with auto.create.topics.enable create it, with the
            # broker's default partition count (1 on the dev stack)
            topics = _admin().list_topics(timeout=15).topics
        except KafkaException as exc:
            log.warning("cannot read partitions of %s: %s", name, exc)
            return BY_SUFFIX[suffix].partitions
        t = topics.get(name)
        if t is not None and t.error is None and t.partitions:
            return len(t.partitions)
        if time.monotonic() >= deadline:
            raise VigilError(f"topic {name} does not exist on the broker "
                             f"(create the catalog's topics: vigil topics apply)")
        time.sleep(0.5)


def ensure_topic(name: str, partitions: int, compact: bool = False) -> None:
    """Create topic `name` with `partitions` partitions if it does not exist yet."""
    admin = _admin()
    try:
        if name in admin.list_topics(timeout=15).topics:
            return
        config = {"cleanup.policy": "compact"} if compact else {}
        fut = admin.create_topics([NewTopic(name, num_partitions=partitions,
                                            replication_factor=-1, config=config)])[name]
        fut.result(30)
    except KafkaException as exc:
        if "TOPIC_ALREADY_EXISTS" not in str(exc):
            raise


def ensure_changelog(app: faust.App, table_name: str, partitions: int) -> None:
    """Create the table's compacted changelog (`partitions` partitions) and the leader
    election topic (one partition) that ``on_leader`` timers need: if that topic is
    missing when the worker subscribes, no worker is leader until the next rebalance and
    no tick is ever sent."""
    ensure_topic(f"{app.conf.id}-{table_name}-changelog", partitions, compact=True)
    ensure_topic(f"{app.conf.id}-__assignor-__leader", 1, compact=True)


def tick_value(now: datetime | None = None) -> bytes:
    return json.dumps({"now": (now or datetime.now(UTC)).isoformat()}).encode()


def parse_tick(raw: Any) -> datetime:
    """The wall-clock time a tick carries (raises on garbage: the caller dead-letters)."""
    data = json.loads(raw if isinstance(raw, bytes | str) else bytes(raw))
    now = datetime.fromisoformat(data["now"])
    if now.tzinfo is None:
        raise ValueError("tick time without a time zone")
    return now


async def send_ticks(topic: faust.TopicT, partitions: int) -> None:
    """One tick per partition, explicitly addressed, so every owner hears the clock."""
    value = tick_value()
    for p in range(partitions):
        await topic.send(key=str(p).encode(), value=value, partition=p, force=True)


class WorkerTable:
    """A Faust table declared when the worker starts (`agents.app.at_worker_start`), not
    when its module is imported: declaring it needs the source topic's partition count
    from the broker and creates its changelog there. The agent code reads and writes it
    like the table itself; `partitions` is the count the changelog was created with."""

    def __init__(self, name: str, make: Callable[[], Any]) -> None:
        self.name = name
        self._make = make
        self._table: Any = None

    def declare(self) -> None:
        if self._table is None:
            self._table = self._make()

    @property
    def table(self) -> Any:
        if self._table is None:
            raise VigilError(f"table {self.name} is used before the worker declared it "
                             f"(agents.app.at_worker_start)")
        return self._table

    @property
    def partitions(self) -> int:
        return int(self.table.partitions)

    def get(self, key: bytes, default: Any = None) -> Any:
        return self.table.get(key, default)

    def __getitem__(self, key: bytes) -> Any:
        return self.table[key]

    def __setitem__(self, key: bytes, value: Any) -> None:
        self.table[key] = value


def worker_table(name: str, make: Callable[[], Any]) -> WorkerTable:
    """`make()` run at worker start-up; the returned handle stands for its table."""
    from agents.app import at_worker_start

    handle = WorkerTable(name, make)
    at_worker_start(handle.declare)
    return handle


def state_table(name: str, source: str) -> WorkerTable:
    """A RocksDB table co-partitioned with catalog topic `source`, raw keys, JSON values,
    declared at worker start-up (`worker_table`).

    Its changelog (and the leader topic) are created first with exactly the source
    topic's partition count; `table.partitions` tells the caller that count.

    (Serialisers go through a ``faust.Schema``: faust-streaming 0.15's ``Table`` does not
    accept key_serializer/value_serializer.)
    """

    def make() -> faust.TableT:
        from agents.app import app, table_options

        partitions = source_partitions(source)
        ensure_changelog(app, name, partitions)
        return app.Table(
            name,
            partitions=partitions,
            options=table_options(),
            # key_type=bytes matters: Faust derives the changelog's key serializer from
            # key_type (json when unset), and recovery from the changelog then fails on
            # raw keys ("Error in recovery Expecting value") and silently restores nothing.
            key_type=bytes,
            schema=faust.Schema(key_type=bytes, key_serializer="raw",
                                value_serializer="json"),
        )

    return worker_table(name, make)
