"""Work-arounds for Faust behaviours that lose events or CPU, installed through App
settings.

A root logger left at DEBUG (faust-streaming 0.15.3, faust/worker.py
``Worker._setup_spinner_handler``): at ``-l warn`` or above Faust keeps its terminal
spinner and, to make it turn on every log call, sets the *root logger* to DEBUG and adds
a DEBUG handler to it (the console handler alone is set to the requested level). Every
``log.debug`` in aiokafka and Faust then builds a LogRecord and runs the handlers: about
5 % of a scene worker's CPU at 1000 frames/s, for a spinner nobody sees (our workers log
to files). `VigilWorker` leaves the root logger at the requested level and installs no
spinner.

Events lost after a restore from the changelogs (faust-streaming 0.15.3,
faust/tables/recovery.py ``Recovery.on_recovery_completed``). A worker whose tables must
be rebuilt (empty or wiped RocksDB) starts the Fetcher *during* recovery, to read the
changelogs, with the stream partitions paused. When the restore is done Faust resumes the
stream partitions, awaits the seek of every partition to its committed offset, and only
then calls ``flow_control.resume()``, which *clears every stream buffer* (channel queues
are made with ``clear_on_resume``). The Fetcher runs the whole time: while the seek is
awaited it delivers stream records from the committed offset on into the agents' buffers
and records each one in the consumer's read offset (``Consumer._read_offset``; the drain
loop drops any record below it as already read). The records still queued at the clear
are thrown away un-acked and are not delivered again: the rest of the batch fetched
before the seek moves the read offset past them, so their re-fetch is dropped as already
read. They are never processed, acked or dead-lettered (worker_wipe lost exactly the
records the clear discarded, offsets 33-34 of the frames partition, in 2 of 3 runs). A
restart with its RocksDB intact does not restore, so the Fetcher starts after the seek and
the clear, and nothing is lost. The same order is in ``Recovery._resume_streams``, the
path of an app without tables, reported as
https://github.com/faust-streaming/faust/issues/216.

The fix stops the consumer flow before the seek (a fetch that completes while the flow is
stopped is not delivered: Faust seeks back to the committed offsets instead), and clears
the buffers and resumes the flow right after the seek with no ``await`` in between. The
stream partitions are still resumed *before* the seek, as Faust does: resuming them after
it was tried and is worse, because with every partition paused a fetch already in flight
asks aiokafka for "no partitions", which means all of them, and Faust then skips the
stream records of that batch although aiokafka counted them as consumed.

A fetch held for 1.5 s (faust-streaming 0.15.3, faust/transport/drivers/aiokafka.py
``AIOKafkaConsumerThread._create_worker_consumer`` passes ``fetch_max_wait_ms=1500``,
with no setting). aiokafka keeps one fetch in flight per broker and does not fetch a
partition whose records are still buffered, so the fetch it sends asks only for the
partitions already drained; when the broker holds that one for up to 1.5 s, records of
the other partitions wait behind it. A scene worker at 1000 frames/s over two
partitions had a standing 1.2-1.5 s (later 3 s) between a frame's publication and its
batch, with a fifth of its core idle; with 50 ms the same run's median was 136 ms.
`install_fetch_max_wait` makes it ``VIGIL_WORKER_FETCH_MAX_WAIT_MS`` (default 50): an
idle worker then sends up to 20 empty fetches a second per broker instead of one every
1.5 s.

A restarted static member's assignment carries its old address (faust-streaming 0.15.3,
faust/assignor/partition_assignor.py ``PartitionAssignor.on_assignment``). With static
membership (agents/settings.py) a worker restarted within the session timeout gets the
assignment the broker keeps for its ``group.instance.id``, made by the leader at the last
rebalance, with no new one. Its Faust metadata holds the URL the worker had then (its web
host and port), and Faust asserts it equals the current one: a worker restarted with
another ``VIGIL_WORKER_WEB_PORT`` died in that assertion inside aiokafka's coordination
task, leaving a process that looks alive and consumes nothing. The URL only serves
Faust's web routing of table reads to their owner, which Vigil does not use, so
`VigilPartitionAssignor` keeps the assignment, logs the change and carries on; the next
rebalance spreads the new URL.

Two workers with one ``group.instance.id`` take turns instead of failing (aiokafka 0.14,
aiokafka/consumer/group_coordinator.py). When a second process joins under a static
member's id, the broker hands it the membership; the Java client then gets
FENCED_INSTANCE_ID on its next heartbeat and stops, but aiokafka's heartbeat (v0/v1)
carries no instance id, so it gets UNKNOWN_MEMBER_ID, resets and joins again, taking the
id back: the two trade the partitions forever (aio-libs/aiokafka issue #1186: even the
fencing error is unmapped). `install_static_member_guard` checks, before a static member
joins again after losing its membership, whether the broker lists its instance id under
another member id: then another process holds it, and this worker exits (code 78) with
a message naming the id, rather than fight. A member merely expired (frozen past its
session timeout) is no longer listed and rejoins as before.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from typing import Any, cast

import faust
from faust.assignor import PartitionAssignor
from faust.assignor.client_assignment import ClientMetadata
from faust.tables import TableManager
from faust.tables.recovery import Recovery

_log = logging.getLogger(__name__)


def _buffered_offsets(app: Any) -> list[tuple[str, int, int]]:
    """(topic, partition, offset) of the events waiting in the flow-controlled buffers,
    i.e. what ``flow_control.resume()`` is about to discard: with the fix, none of a stream
    partition (reads private attributes of mode's queues, so it degrades to "none")."""
    out: list[tuple[str, int, int]] = []
    for queue in list(getattr(app.flow_control, "_queues", ())):
        for event in list(getattr(queue, "_queue", ())):
            msg = getattr(event, "message", None)
            if msg is not None:
                out.append((msg.topic, msg.partition, msg.offset))
    return out


class SeekThenClearRecovery(Recovery):
    """Faust's Recovery, with no stream record delivered between the seek and the clear."""

    async def _seek_then_clear(self, assignment: set[Any]) -> None:
        """Seek the stream partitions to their committed offsets, then clear the buffers
        and resume the flow, with no record delivered in between (module docstring)."""
        app = cast(Any, self.app)
        consumer = app.consumer
        # A fetch that completes while the flow is stopped is not delivered: Faust seeks
        # back to the committed offsets instead.
        consumer.stop_flow()
        # Resumed before the seek, as Faust does: with every partition paused, a fetch in
        # flight would be asked for no partitions, i.e. all of them, and Faust would skip
        # (not deliver) records the consumer already counted as consumed.
        consumer.resume_partitions(
            {tp for tp in assignment if not self._is_changelog_tp(tp)})
        if assignment:
            self.log.info("Seek stream partitions to committed offsets.")
            await self._wait(consumer.perform_seek(),
                             timeout=app.conf.broker_request_timeout)
        # From here to resume_flow nothing awaits.
        dropped = _buffered_offsets(app)
        if dropped:  # a sign that a record was delivered before the seek again
            self.log.warning("Recovery clears %d buffered events (topic, partition, "
                             "offset): %s", len(dropped), dropped[:20])
        self.completed.set()
        app.flow_control.resume()
        consumer.resume_flow()

    async def _resume_streams(self, generation_id: int = 0) -> None:
        """Faust's path for an app without tables (a worker running only `inference`):
        the same resume-seek-clear order, issue #216."""
        app = cast(Any, self.app)
        await app.on_rebalance_complete.send()
        assignment = app.consumer.assignment()
        if app.consumer_generation_id != generation_id:
            self.log.warning("Recovery rebalancing again")
            return
        if not assignment:
            self.log.info("Resuming streams with empty assignment")
        await self._seek_then_clear(assignment)
        await app._fetcher.maybe_start()
        self.tables.on_actives_ready()
        self.tables.on_standbys_ready()
        app.on_rebalance_end()
        self.log.info("Worker ready")

    async def on_recovery_completed(self, generation_id: int = 0) -> None:
        app = cast(Any, self.app)
        consumer = app.consumer
        self.log.info("Restore complete!")
        await app.on_rebalance_complete.send()
        self._set_recovery_ended()
        callbacks = [
            asyncio.ensure_future(table.on_recovery_completed(
                self.actives_for_table[table], self.standbys_for_table[table]))
            for table in self.tables.values()
        ]
        if callbacks:
            await asyncio.wait(callbacks)
        assignment = consumer.assignment()
        if app.consumer_generation_id != generation_id:
            self.log.warning("Recovery rebalancing again app id %s param %s",
                             app.consumer_generation_id, generation_id)
            return
        await self._seek_then_clear(assignment)
        await app._fetcher.maybe_start()
        self.tables.on_actives_ready()
        if not app.assignor.assigned_standbys():
            self.tables.on_standbys_ready()
        app.on_rebalance_end()
        self.log.info("Worker ready")


class VigilTableManager(TableManager):
    """Faust's TableManager with `SeekThenClearRecovery` (App setting ``TableManager``)."""

    @property
    def recovery(self) -> Recovery:
        if self._recovery is None:
            self._recovery = SeekThenClearRecovery(
                self.app, self, beacon=self.beacon, loop=self.loop)
        return self._recovery


class VigilPartitionAssignor(PartitionAssignor):  # type: ignore[misc]
    """Faust's assignor, accepting an assignment made for this worker's previous URL
    (module docstring). App setting ``PartitionAssignor``."""

    def on_assignment(self, assignment: Any) -> None:
        """Faust's ``on_assignment`` (0.15.3) with the URL assertion turned into a
        warning; the check that the partitions match is kept."""
        metadata = cast(Any, ClientMetadata.loads(self._decompress(assignment.user_data)))
        self._assignment = metadata.assignment
        self._topic_groups = dict(metadata.topic_groups)
        self._active_tps = self._assignment.active_tps
        self._standby_tps = self._assignment.standby_tps
        self.changelog_distribution = metadata.changelog_distribution
        self.external_topic_distribution = metadata.external_topic_distribution
        a = sorted(assignment.assignment)
        b = sorted(self._assignment.kafka_protocol_assignment(self._table_manager))
        assert a == b, f"{a!r} != {b!r}"
        if metadata.url != str(self._url):
            _log.warning("assignment made for this worker's previous address %s, now %s "
                         "(a static member restarted with another web host or port): "
                         "kept", metadata.url, self._url)


class VigilWorker(faust.Worker):  # type: ignore[misc]
    """Faust's Worker without the terminal spinner, whose handler set the root logger
    to DEBUG whatever ``-l`` said (module docstring). App setting ``Worker``."""

    def on_setup_root_logger(self, logger: Any, level: int) -> None:
        self.spinner = None
        if level:
            logger.setLevel(level)

    def _setup_logging(self) -> None:
        """Vigil's handler (JSON by default, vigil/logs.py) instead of mode's console
        handler, which replaced it with plain ``[INFO]`` lines; stray prints still become
        log records through mode's stdout redirect."""
        from vigil.logs import setup_logging

        level = self.loglevel if isinstance(self.loglevel, str) else None
        setup_logging(level=level, service="worker")
        self.on_setup_root_logger(logging.root, logging.root.level)
        if self.redirect_stdouts:
            self._redirect_stdouts()


def install_fetch_max_wait(ms: int) -> None:
    """Give every worker consumer Faust creates ``fetch_max_wait_ms=ms`` (module
    docstring). aiokafka reads the value when the consumer starts, so setting it on the
    fresh consumer is enough; idempotent."""
    from faust.transport.drivers.aiokafka import AIOKafkaConsumerThread

    create = getattr(AIOKafkaConsumerThread._create_worker_consumer, "__wrapped__",
                     AIOKafkaConsumerThread._create_worker_consumer)

    @functools.wraps(create)
    def create_worker_consumer(self: Any, transport: Any) -> Any:
        consumer = create(self, transport)
        consumer._fetch_max_wait_ms = ms
        return consumer

    AIOKafkaConsumerThread._create_worker_consumer = create_worker_consumer  # type: ignore[method-assign]


#: exit code of a worker whose group.instance.id another process holds (EX_CONFIG)
EXIT_DUPLICATE_ID = 78


def instance_holder(members: list[tuple[str, str | None]], instance_id: str,
                    last_member_id: str) -> str | None:
    """The member id under which the group lists `instance_id`, if it is not the one
    this process last had: another process joined with the same id. `members` are
    (member id, group instance id) as the broker describes the group."""
    for member_id, iid in members:
        if iid == instance_id and member_id != last_member_id:
            return member_id
    return None


def install_static_member_guard(admin_config: dict[str, Any]) -> None:
    """Make a static member that lost its membership check, before joining again, that
    no other process holds its instance id; if one does, log it and exit the process
    (module docstring). `admin_config`: librdkafka settings for the describe call.
    Idempotent; a no-op for consumers without an instance id."""
    import os

    from aiokafka.consumer.group_coordinator import CoordinatorGroupRebalance

    join = getattr(CoordinatorGroupRebalance.perform_group_join, "__wrapped__",
                   CoordinatorGroupRebalance.perform_group_join)

    def members_of(group: str) -> list[tuple[str, str | None]]:
        from confluent_kafka.admin import AdminClient

        admin = AdminClient({**admin_config, "logger": logging.getLogger("librdkafka")})
        desc = admin.describe_consumer_groups([group], request_timeout=10)[group]
        return [(m.member_id, m.group_instance_id) for m in desc.result(timeout=15).members]

    @functools.wraps(join)
    async def perform_group_join(self: Any) -> Any:
        coord = self._coordinator
        iid = coord._group_instance_id
        last = getattr(coord, "_vigil_last_member_id", "")
        if iid and last and not coord.member_id:  # a static member joining *again*
            try:
                members = await asyncio.get_running_loop().run_in_executor(
                    None, members_of, coord.group_id)
            except Exception as exc:  # the broker is the problem: rejoin, as before
                _log.warning("could not describe group %s before rejoining: %s",
                             coord.group_id, exc)
                members = []
            holder = instance_holder(members, iid, last)
            if holder is not None:
                _log.critical(
                    "another process runs with this worker's id: group %s lists "
                    "group.instance.id %r under member %s, not ours (%s). Each worker "
                    "needs its own VIGIL_WORKER_ID (docs/operations.md, \"Failover\"); "
                    "exiting rather than taking the partitions back and forth.",
                    coord.group_id, iid, holder, last)
                for handler in logging.root.handlers:
                    handler.flush()
                os._exit(EXIT_DUPLICATE_ID)
        result = await join(self)
        if coord.member_id:
            coord._vigil_last_member_id = coord.member_id
        return result

    CoordinatorGroupRebalance.perform_group_join = perform_group_join  # type: ignore[method-assign]
