"""What a fault scenario reports when its pipeline does not drain (issue 24: the harness
used to wait in silence while a projector sat idle past its lost rows)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from projections.migrate import upgrade
from projections.replay import drop_schema
from schemas import events as ev
from tools.bench.workload import publish
from tools.faults.harness import Pipeline, ScenarioResult
from vigil.settings import get_settings

pytestmark = pytest.mark.integration


@pytest.fixture
def schema(topic_prefix: str) -> Iterator[str]:
    dsn = get_settings().database_dsn
    upgrade(dsn, topic_prefix, 192)
    yield topic_prefix
    drop_schema(dsn, topic_prefix)


def test_drain_timeout_names_the_partitions_behind(stack: dict[str, str], schema: str,
                                                   tmp_path: Path) -> None:
    publish([("frames", "cam-r", ev.FrameCaptured.create(
        producer="t", edge_id="e", camera_id="cam-r", sequence=s, width=64, height=48,
        motion_score=0.5)) for s in range(1, 4)])
    p = Pipeline(dict(stack), tmp_path, ["loiterer"], "report")
    p.prefix = schema  # this test's topics and schema; nothing projected them
    p.cameras = ["cam-r"]
    res = ScenarioResult("report")
    try:
        p.not_drained(res)
    finally:
        p.stop_all()
    (problem,) = res.problems
    assert problem.startswith("pipeline did not drain in time; partitions: BEHIND frames[")
    assert "end 3 stored -1 rows -" in problem, problem
    behind = res.details["not_drained"]
    assert len(behind) == 1 and behind[0].startswith("BEHIND frames["), behind
    assert res.details["progress_at_timeout"] == {"cam-r": {"frames": 0, "analysed": 0}}
