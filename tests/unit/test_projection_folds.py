"""Pure parts of the projection: folds, offsets, migrations text, table definitions."""

from __future__ import annotations

import re
from datetime import UTC, date, datetime

import pytest

from projections.handlers import FOLDS, Batch, HandlerError, Position, fold, payload
from projections.migrate import add_months, load_migrations, partition_name
from projections.offsets import next_offsets
from projections.projector import next_batch_target, projected_suffixes
from projections.settings import ProjectorSettings
from projections.writer import APPEND_COLUMNS, OPS
from schemas import events as ev
from schemas import tables
from tools.bench.workload import mixed_workload

P = Position("t.x", 0, 0)


def test_every_event_type_has_a_fold() -> None:
    assert set(FOLDS) == set(ev.EVENT_TYPES.values())


def test_privacy_is_read_first_and_internal_topics_are_not() -> None:
    s = projected_suffixes()
    assert s[0] == "privacy"
    assert "dlq" not in s and "alert-ticks" not in s and "detections" in s


def test_migration_matches_table_definitions() -> None:
    ddl = "\n".join(m.text for m in load_migrations())
    for table in tables.metadata.tables.values():
        if table.name == "schema_migrations":
            continue
        m = re.search(rf"CREATE TABLE {table.name} \((.*?)\n\)", ddl, re.S)
        assert m, table.name
        cols = [ln.split()[0].strip('"') for ln in m.group(1).splitlines()
                if ln.strip() and not ln.strip().startswith("PRIMARY KEY")]
        # later migrations add columns at the end, in order
        for alter in re.findall(rf"ALTER TABLE {table.name} (ADD COLUMN .*?);", ddl, re.S):
            cols += re.findall(r"ADD COLUMN (\w+)", alter)
        assert cols == [c.name for c in table.columns], table.name


def test_append_columns_exist_in_tables() -> None:
    for name, cols in APPEND_COLUMNS.items():
        assert set(cols) <= {c.name for c in tables.metadata.tables[name].columns}, name


def test_fold_of_a_workload_fills_every_kind_of_write() -> None:
    b = Batch()
    for i, (_suffix, _key, e) in enumerate(mixed_workload(cameras=1, frames_per_camera=3)):
        fold(b, e, Position("t", 0, i), 192)
    assert {"frames", "detections", "embeddings", "scene_events", "alert_events", "commands",
            "notifications", "health_events", "erasures", "recordings"} <= set(b.appends)
    assert {k for k, _ in b.ops} <= set(OPS)
    assert b.last_frame and b.last_heartbeat
    assert b.months == {date(2026, 11, 1)}


def test_last_frame_reduction_is_order_independent() -> None:
    items = [e for s, _, e in mixed_workload(cameras=1, frames_per_camera=5) if s == "frames"]
    a, b = Batch(), Batch()
    for e in items:
        fold(a, e, P, 192)
    for e in reversed(items):
        fold(b, e, P, 192)
    assert a.last_frame == b.last_frame
    assert next(iter(a.last_frame.values()))[1] == 4


def test_wrong_embedding_dimension_is_a_handler_error_without_rows() -> None:
    e = ev.AppearanceEmbedded.create(producer="t", camera_id="c", detection_id="d",
                                     frame_sequence=1, model="m", vector=[0.1] * 3)
    b = Batch()
    with pytest.raises(HandlerError):
        fold(b, e, P, 192)
    assert not b.appends and b.events == 0


def test_entity_deleted_of_unknown_kind_is_rejected() -> None:
    e = ev.EntityDeleted.create(producer="t", entity_kind="planet", entity_id="x")
    with pytest.raises(HandlerError):
        fold(Batch(), e, P, 192)


def test_payload_is_canonical_json() -> None:
    e = ev.StreamUp.create(producer="t", edge_id="e", camera_id="c",
                           occurred_at=datetime(2026, 1, 1, tzinfo=UTC))
    assert payload(e) == payload(e)
    assert '"camera_id":"c"' in payload(e)


def test_next_offsets_take_the_highest_per_partition() -> None:
    pos = [Position("a", 0, 5), Position("a", 0, 3), Position("a", 1, 0), Position("b", 0, 9)]
    assert next_offsets(pos) == {("a", 0): 6, ("a", 1): 1, ("b", 0): 10}


def test_partition_names_and_month_arithmetic() -> None:
    assert partition_name(date(2026, 1, 1)) == "detections_y2026m01"
    assert add_months(date(2026, 11, 1), 2) == date(2027, 1, 1)
    assert add_months(date(2026, 12, 1), 1) == date(2027, 1, 1)


def test_settings_reject_bad_schema_names() -> None:
    with pytest.raises(ValueError):
        ProjectorSettings(schema_name="vigil; drop")
    assert ProjectorSettings(schema_name="Vigil_2").schema_name == "vigil_2"


def test_batches_grow_under_backlog_and_shrink_when_live() -> None:
    t = 50
    for _ in range(10):
        t = next_batch_target(t, t, 50, 5000)
    assert t == 5000
    assert next_batch_target(3, 5000, 50, 5000) == 2500
    assert next_batch_target(0, 60, 50, 5000) == 50
    assert next_batch_target(40, 60, 50, 5000) == 60


def test_replay_split_balances_disjoint_partition_sets() -> None:
    from projections.replay import _split

    sizes = {("e", 0): 600, ("e", 1): 500, ("d", 0): 300, ("d", 1): 200, ("f", 0): 0}
    shards = _split(list(sizes), sizes, 2, parallel_min=0)
    assert len(shards) == 2
    flat = [tp for s in shards for tp in s]
    assert sorted(flat) == sorted(tp for tp, n in sizes.items() if n)  # disjoint, no empty
    loads = sorted(sum(sizes[tp] for tp in s) for s in shards)
    assert loads == [800, 800]
    # small work: one process, not worth spawning
    assert len(_split(list(sizes), sizes, 2, parallel_min=10_000)) == 1


def test_verify_offsets_match_tolerates_partitions_emptied_by_retention() -> None:
    from projections.replay import _offsets_match

    live = {("t", 0): 10, ("t", 1): 5}
    assert _offsets_match(live, {("t", 0): 10, ("t", 1): 5}, {})
    assert not _offsets_match(live, {("t", 0): 10}, {})
    # partition 1: everything up to the live position was deleted, nothing to rebuild
    assert _offsets_match(live, {("t", 0): 10}, {("t", 1): 5})
    assert not _offsets_match(live, {("t", 0): 9, ("t", 1): 5}, {})


def test_pack_vector_is_pgvector_halfvec_binary_and_rejects_out_of_range() -> None:
    import struct

    from projections.handlers import HandlerError, pack_vector

    packed = pack_vector([0.5, -1.0, 2.0])
    assert packed == struct.pack(">HH3e", 3, 0, 0.5, -1.0, 2.0)
    # 0x3800 is 0.5 in IEEE half precision: the server reads these bits as they are
    assert packed[4:6] == bytes.fromhex("3800")
    with pytest.raises(HandlerError):  # beyond half precision's 65504
        pack_vector([70000.0])
