"""The parts of a backup set that need no stack: which backups pruning keeps, what a
compacted topic's state is, the directory target, and the reserved probe ids."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from vigil_cli.backup_set import (
    BackupInfo,
    DirTarget,
    KeepPolicy,
    _major,
    latest_per_key,
    list_backups,
    to_prune,
)

NOW = datetime(2026, 12, 4, 12, 0, tzinfo=UTC)


def _b(days_ago: float, n: int = 0) -> BackupInfo:
    t = NOW - timedelta(days=days_ago)
    return BackupInfo(f"b{days_ago}-{n}", {"finished_at": t.isoformat()})


def test_prune_keeps_recent_days_then_one_per_week_and_month() -> None:
    backups = sorted((_b(d) for d in (0.1, 1, 29, 31, 32, 45, 46, 100, 101, 400)),
                     key=lambda b: b.finished_at)
    gone = {b.backup_id for b in to_prune(backups, KeepPolicy(days=30, weeks=4, months=3), NOW)}
    kept = {b.backup_id for b in backups} - gone
    assert {"b0.1-0", "b1-0", "b29-0"} <= kept  # every one of the last 30 days
    assert "b400-0" in gone  # older than every tier
    # two backups in the same week beyond 30 days: only the newer one may stay weekly
    assert not {"b31-0", "b32-0"} <= kept


def test_prune_never_removes_the_newest_even_when_all_are_old() -> None:
    backups = [_b(500), _b(400)]
    gone = to_prune(backups, KeepPolicy(days=1, weeks=0, months=0), NOW)
    assert [b.backup_id for b in gone] == ["b500-0"]


def test_latest_per_key_is_what_compaction_keeps() -> None:
    recs = [{"partition": 0, "offset": 2, "key": "a", "value": None},
            {"partition": 0, "offset": 0, "key": "a", "value": "v1"},
            {"partition": 0, "offset": 1, "key": "b", "value": "v2"}]
    state = latest_per_key(recs)
    assert state["a"]["value"] is None and state["b"]["value"] == "v2"


def test_a_backup_without_its_manifest_does_not_count(tmp_path: Path) -> None:
    t = DirTarget(tmp_path)
    t.put_bytes("backups/x/postgres.dump", b"dump")
    assert list_backups(t) == []
    t.put_bytes("backups/x/manifest.json", b'{"finished_at": "2026-12-04T00:00:00+00:00"}')
    assert [b.backup_id for b in list_backups(t)] == ["x"]
    assert not list(tmp_path.rglob("*.part"))


@pytest.mark.parametrize(("text", "major"), [
    ("pg_dump (PostgreSQL) 18.6", 18),
    ("pg_dump (PostgreSQL) 15.18 (Debian 15.18-0+deb12u1)", 15),
    ("17.6", 17)])
def test_major_version(text: str, major: int) -> None:
    assert _major(text) == major


def test_site_files_may_not_use_the_probe_ids() -> None:
    """The probe's ids start with an underscore, which the one site-id pattern refuses,
    so no configured camera or edge can ever be mistaken for the probe."""
    import re

    from pydantic import ValidationError

    from schemas.site_config import ID_PATTERN, CameraModel
    from schemas.synthetic import PROBE_CAMERA_ID, PROBE_EDGE_ID

    for probe_id in (PROBE_CAMERA_ID, PROBE_EDGE_ID):
        assert not re.match(ID_PATTERN, probe_id)
    with pytest.raises(ValidationError, match="camera_id"):
        CameraModel(camera_id=PROBE_CAMERA_ID)
    with pytest.raises(ValidationError, match="edge_id"):
        CameraModel(camera_id="cam1", edge_id=PROBE_EDGE_ID)
    assert CameraModel(camera_id="cam1").camera_id == "cam1"
