"""The one Faust app of Vigil, its topics, and the agent modules it runs.

Choices that follow docs/architecture.md, "Faust: what the agents rely on":
- at-least-once processing (exactly-once has open duplicate and fencing bugs); every
  consumer downstream is idempotent by event id;
- stateful agents run with concurrency=1 and scale by partitions and workers;
- RocksDB through rocksdict with small, explicit cache and write-buffer sizes, one data
  directory per worker id;
- agent modules are named explicitly (``WorkerSettings.agents``) rather than scanned.
"""

from __future__ import annotations

from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

import faust

import agents.codec  # noqa: F401  (registers the "vigil" codec)
from agents.faust_fixes import (
    VigilPartitionAssignor,
    VigilTableManager,
    VigilWorker,
    install_fetch_max_wait,
    install_static_member_guard,
)
from agents.settings import get_worker_settings
from schemas.topics import BY_SUFFIX, CATALOG
from vigil.settings import get_settings

settings = get_settings()
worker = get_worker_settings()
install_fetch_max_wait(worker.fetch_max_wait_ms)  # Faust hard-codes 1.5 s (faust_fixes)
if worker.group_instance_id:  # two workers with one id exit instead of fighting (faust_fixes)
    install_static_member_guard(settings.kafka_client_config())
#: RocksDB lives under state_dir/worker/<topic prefix>/<worker id>: the prefix is part of the
#: app id and of every changelog name, so state of another prefix must never be reused.
DATADIR = settings.state_dir / "worker" / settings.topic_prefix / worker.id


def broker_credentials() -> faust.types.auth.CredentialsT | None:
    """TLS and SASL for Faust's aiokafka clients, from the same settings as every other
    client (KAFKA_SECURITY_PROTOCOL, KAFKA_SASL_*, KAFKA_SSL_CA; docs/security.md)."""
    protocol = settings.kafka_security_protocol
    if protocol == "PLAINTEXT":
        return None
    sec = settings.aiokafka_security()
    if protocol == "SSL":
        return faust.SSLCredentials(sec["ssl_context"])
    return faust.SASLCredentials(
        username=sec["sasl_plain_username"], password=sec["sasl_plain_password"],
        ssl_context=sec.get("ssl_context"), mechanism=sec["sasl_mechanism"])


app = faust.App(
    f"{settings.topic_prefix}-worker",
    broker=f"kafka://{settings.kafka_bootstrap}",
    broker_credentials=broker_credentials(),
    store="rocksdb://",
    datadir=str(DATADIR),
    processing_guarantee="at_least_once",
    topic_partitions=8,
    topic_replication_factor=1,
    topic_allow_declare=False,
    table_standby_replicas=worker.standby_replicas,
    web_host=settings.metrics_host,
    web_bind=settings.metrics_host,  # Faust binds all interfaces unless told otherwise
    web_port=worker.web_port,
    web_in_thread=False,
    # The agent modules to import, named explicitly. No `origin`: Faust appends the origin
    # package to this list and would then import every agent module, whatever the setting.
    autodiscover=worker.agent_modules,
    # Offsets are committed by Faust's 1 s timer only. A count-based commit runs inline in
    # the fetch loop and awaits a full producer flush there (faust/transport/consumer.py
    # ``_drain_messages``): at 1000 frames/s with 1000 it stopped intake once a second for
    # as long as the broker took to acknowledge everything in flight. Faust has no "off".
    broker_commit_every=1 << 40,
    broker_commit_interval=1.0,
    consumer_auto_offset_reset="earliest",
    producer_acks=-1,
    # vigil.frames takes 2 MiB values: a poison frame that large must fit in the DLQ
    producer_max_request_size=4_194_304,
    # aiokafka keeps one request in flight per broker and one open batch per partition; at
    # Faust's 16 KiB a batch held a dozen state writes, so table writes piled up in Faust's
    # producer buffer ("producer buffer full") while the broker was busy
    producer_max_batch_size=1_048_576,
    # Let a produce request collect what the next few milliseconds bring. At Faust's 0
    # every output and table write went out in a request of its own as soon as the last
    # one was answered; on loopback each request's send() also pays the broker side's TCP
    # receive, and that was a seventh of a scene worker's CPU at 1000 frames/s.
    producer_linger=0.005,
    # Static membership (agents/settings.py, docs/operations.md "Failover"): a worker
    # restarted under the same VIGIL_WORKER_ID takes its partitions back at once; without
    # it the group would first wait out the dead member's session timeout.
    consumer_group_instance_id=worker.group_instance_id,
    # A worker that stays away is replaced after the session timeout: 15 s rather than
    # the 60 s default.
    broker_session_timeout=15.0,
    broker_heartbeat_interval=3.0,
    # Faust's own recovery can drop events buffered during a restore from the changelogs
    # (agents/faust_fixes.py).
    TableManager=VigilTableManager,
    # a static member restarted on another web port keeps its assignment (faust_fixes)
    PartitionAssignor=VigilPartitionAssignor,
    # no terminal spinner: Faust's put the root logger at DEBUG (agents/faust_fixes.py)
    Worker=VigilWorker,
)


def _declare(suffix: str) -> faust.TopicT:
    raw = not BY_SUFFIX[suffix].events  # the DLQ and tick topics carry no Avro events
    return app.topic(
        f"{settings.topic_prefix}.{suffix}",
        key_serializer="raw",
        value_serializer="raw" if raw else "vigil",
        allow_empty=True,
    )


#: Every catalog topic, by attribute: topics.frames, topics.detections, topics.alert_ticks…
topics = SimpleNamespace(**{t.suffix.replace("-", "_"): _declare(t.suffix) for t in CATALOG})


#: What the worker does before it starts, in registration order (`at_worker_start`).
_START_UP: list[Callable[[], None]] = []
_started: set[int] = set()


def at_worker_start(fn: Callable[[], None]) -> Callable[[], None]:
    """Run `fn` once when the worker initialises: after Faust imported the agent modules,
    before it starts any service (Faust's ``on_worker_init`` signal).

    Why: importing an agent module must not touch the broker or the disk (a unit test,
    the linter or ``vigil --help`` imports them), yet a table's changelog has to exist,
    with its source topic's partition count, before Faust subscribes; this is the place
    for that. Faust sends the signal more than once on some paths (``app.main`` and the
    CLI's ``prepare_app`` both do), hence "once"."""
    _START_UP.append(fn)
    return fn


def _on_worker_init(sender: Any = None, **_: Any) -> None:
    for fn in _START_UP:
        if id(fn) not in _started:
            _started.add(id(fn))
            fn()


app.on_worker_init.connect(_on_worker_init)


@at_worker_start
def _make_datadir() -> None:
    DATADIR.parent.mkdir(parents=True, exist_ok=True)  # Faust creates only the last level


def table_options() -> dict[str, Any]:
    """RocksDB options for a table (a fresh dict each time: Faust mutates it)."""
    return {
        "driver": "rocksdict",
        "block_cache_size": worker.rocksdb_block_cache,
        "write_buffer_size": worker.rocksdb_write_buffer,
        "max_write_buffer_number": 2,
    }


from agents import metrics as _metrics  # noqa: E402,F401  (/metrics page, lag timer; needs `app`)
