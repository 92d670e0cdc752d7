"""The projector across database faults injected at exact points (real Kafka + PostgreSQL).

Issue 24: after a PostgreSQL SIGKILL the projector stored offsets past rows it never
wrote. The server runs with ``synchronous_commit=off`` (the test and fault stacks; every
replay's own sessions), so a crash can take commits it had already acknowledged with it;
the projector, reconnecting, carried on from its consumer's in-memory position and
committed the next batch's offsets over the hole. These tests make the same situations
happen deterministically instead of waiting for a kill to land in the window:

- a lost acknowledged commit: the rows and offsets of the committed batches are removed
  (what the crashed server's recovery leaves) and the projector's session is terminated;
- the connection cut between the batch's insert and its COMMIT;
- the same during a bounded run (replay), whose finished partitions are paused.

The oracle is the issue's invariant: every event below the stored offset has its row.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import pytest

from projections.check import check_schema
from projections.migrate import upgrade
from projections.projector import Projector
from projections.replay import drop_schema
from projections.settings import ProjectorSettings
from schemas import events as ev
from schemas.producer import EventProducer
from schemas.topics import topic_name
from tools.bench.workload import publish
from vigil.settings import get_settings

pytestmark = pytest.mark.integration

DIM = 192


@pytest.fixture
def schema(topic_prefix: str) -> Iterator[str]:
    dsn = get_settings().database_dsn
    upgrade(dsn, topic_prefix, DIM)
    yield topic_prefix
    drop_schema(dsn, topic_prefix)


def frames(camera: str, first: int, n: int) -> list[tuple[str, str, ev.Event]]:
    return [("frames", camera, ev.FrameCaptured.create(
        producer="t", edge_id="e", camera_id=camera, sequence=s, width=64, height=48,
        motion_score=0.5)) for s in range(first, first + n)]


def sql(q: str, *args: Any) -> list[tuple[Any, ...]]:
    with psycopg.connect(get_settings().database_dsn, autocommit=True) as c:
        cur = c.execute(q, args or None)
        return cur.fetchall() if cur.description else []


def frame_ids(schema: str) -> set[str]:
    return {r[0] for r in sql(f"SELECT event_id FROM {schema}.frames")}


def stored(schema: str) -> int:
    return int(sql(f"SELECT coalesce(sum(next_offset), 0) FROM {schema}.projector_offsets "
                   "WHERE topic = %s", topic_name("frames"))[0][0])


def kill_session(proj: Projector) -> None:
    """pg_terminate_backend on the projector's own session (found by its name)."""
    n = sql("SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
            "WHERE application_name = %s", proj._session_name)[0][0]
    assert n == 1


def lose_commits(schema: str, proj: Projector) -> None:
    """What recovery leaves after a crash that lost the acknowledged, not yet flushed
    commits of this projector (here: all of them), then the session cut it sees."""
    sql(f"DELETE FROM {schema}.frames")
    sql(f"DELETE FROM {schema}.cameras")
    sql(f"DELETE FROM {schema}.projector_offsets")
    kill_session(proj)


def until(pred: Callable[[], bool], what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


def projector(schema: str, prefix: str, **kw: Any) -> Projector:
    settings = ProjectorSettings(embedding_dim=DIM, min_batch=4, max_batch=4, max_wait_ms=100)
    return Projector(dsn=get_settings().database_dsn, schema=schema, prefix=prefix,
                     settings=settings, producer=EventProducer(), **kw)


def assert_invariant(schema: str, prefix: str) -> None:
    report = check_schema(get_settings().database_dsn, schema, prefix,
                          get_settings().kafka_bootstrap)
    assert report.missing == [], report.missing
    assert report.checked > 0


def test_commits_lost_with_the_server_are_read_again(topic_prefix: str, schema: str) -> None:
    """Batches committed, then lost by the server (synchronous_commit=off): the next
    batch must not store its offsets over them; everything is read again."""
    first = frames("cam-a", 1, 8)
    publish(first)
    proj = projector(schema, topic_prefix)
    runner = threading.Thread(target=proj.run, kwargs={"max_seconds": 90}, daemon=True)
    runner.start()
    try:
        until(lambda: len(frame_ids(schema)) == 8 and stored(schema) == 8, "8 frames")
        time.sleep(0.5)  # between batches: nothing in flight
        lose_commits(schema, proj)
        second = frames("cam-a", 9, 5)
        publish(second)
        until(lambda: stored(schema) >= 13, "the offsets of the second batch")
        until(lambda: len(frame_ids(schema)) == 13, "13 frames", timeout=20)
    finally:
        proj.stop()
        runner.join(30)
        proj.close()
    assert_invariant(schema, topic_prefix)
    assert frame_ids(schema) == {e.event_id for _, _, e in first + second}
    assert proj.stats.rewinds >= 1


def _cut_on_write(proj: Projector, at_rows: int, lose: str | None = None) -> list[int]:
    """Wrap the writer: on the first batch that brings the frames written so far to
    `at_rows`, after its rows are inserted and before the transaction's COMMIT,
    terminate the session (and then, if `lose` names the schema, remove what the
    earlier batches committed). Returns [writer calls]."""
    calls = [0]
    rows = [0]
    fired = [False]
    real = proj.writer.write

    def write(conn: psycopg.Connection, batch: Any) -> None:
        real(conn, batch)
        calls[0] += 1
        rows[0] += len(batch.appends.get("frames", ()))
        if not fired[0] and rows[0] >= at_rows:
            fired[0] = True
            kill_session(proj)  # first: its open transaction holds row locks
            if lose is not None:
                sql(f"DELETE FROM {lose}.frames")
                sql(f"DELETE FROM {lose}.cameras")
                sql(f"DELETE FROM {lose}.projector_offsets")

    proj.writer.write = write  # type: ignore[method-assign]
    return calls


def test_connection_cut_between_insert_and_commit(topic_prefix: str, schema: str) -> None:
    events = frames("cam-b", 1, 12)
    publish(events)
    proj = projector(schema, topic_prefix)
    calls = _cut_on_write(proj, at_rows=5)
    runner = threading.Thread(target=proj.run, kwargs={"max_seconds": 90}, daemon=True)
    runner.start()
    try:
        until(lambda: stored(schema) >= 12 and len(frame_ids(schema)) == 12, "12 frames")
    finally:
        proj.stop()
        runner.join(30)
        proj.close()
    assert_invariant(schema, topic_prefix)
    assert frame_ids(schema) == {e.event_id for _, _, e in events}
    assert calls[0] >= 4  # the cut batch was written again
    assert proj.stats.rewinds == 1


def test_bounded_run_resumes_paused_partitions_after_lost_commits(
        topic_prefix: str, schema: str) -> None:
    """A replay-style run (stop at the end offsets): the cut lands on its last batch,
    after the earlier ones were lost; partitions already done must be read again."""
    events = frames("cam-c", 1, 6) + frames("cam-d", 1, 6)
    publish(events)
    proj = projector(schema, topic_prefix, stop_at="end")
    calls = _cut_on_write(proj, at_rows=12, lose=schema)
    try:
        proj.run(max_seconds=90)
    finally:
        proj.close()
    assert_invariant(schema, topic_prefix)
    assert frame_ids(schema) == {e.event_id for _, _, e in events}
    assert stored(schema) == 12
    assert calls[0] >= 4 and proj.stats.rewinds == 1


def test_projector_check_command_names_the_missing_event(
        topic_prefix: str, schema: str, vigil_env: dict[str, str]) -> None:
    """`vigil projector check` on a live schema: clean, then one row removed behind the
    projector's back (what issue 24's lost commit left) is reported by its position."""
    import json
    import subprocess
    import sys

    events = frames("cam-e", 1, 4)
    publish(events)
    proj = projector(schema, topic_prefix, stop_at="end")
    try:
        proj.run(max_seconds=60)
    finally:
        proj.close()
    argv = [sys.executable, "-m", "vigil_cli", "projector", "check", "--schema", schema,
            "--json"]
    env = {**vigil_env, "VIGIL_PROJECTOR_SCHEMA": schema}
    clean = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=120)
    assert clean.returncode == 0, clean.stdout + clean.stderr[-2000:]
    assert json.loads(clean.stdout)["checked"] == 4
    victim = events[2][2]
    part, off = sql(f"SELECT log_partition, log_offset FROM {schema}.frames "
                    "WHERE event_id = %s", victim.event_id)[0]
    sql(f"DELETE FROM {schema}.frames WHERE event_id = %s", victim.event_id)
    res = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=120)
    assert res.returncode == 1, res.stdout + res.stderr[-2000:]
    report = json.loads(res.stdout)
    assert report["missing_total"] == 1
    assert report["missing"] == [[topic_name("frames"), part, off, "FrameCaptured",
                                  victim.event_id]]
