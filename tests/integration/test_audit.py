"""`vigil audit alert ID`: the chain alert -> actions -> scene -> detections -> frames."""

from __future__ import annotations

import json

import psycopg
import pytest

from projections.migrate import upgrade
from projections.projector import Projector
from projections.replay import drop_schema
from projections.settings import ProjectorSettings, get_projector_settings
from tools.bench.workload import mixed_workload, publish
from vigil.settings import get_settings
from vigil_cli.main import main

pytestmark = pytest.mark.integration


def test_audit_chain_comes_from_the_log(
    topic_prefix: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    dsn = get_settings().database_dsn
    monkeypatch.setenv("VIGIL_PROJECTOR_SCHEMA", topic_prefix)
    get_projector_settings.cache_clear()
    upgrade(dsn, topic_prefix, 192)
    try:
        publish(mixed_workload(seed=9, cameras=1, frames_per_camera=5, alerts=1, erase=0))
        proj = Projector(dsn=dsn, schema=topic_prefix, prefix=topic_prefix,
                         settings=ProjectorSettings(), stop_at="end")
        proj.run(max_seconds=60)
        proj.close()
        with psycopg.connect(dsn) as c:
            alert_id = c.execute(f"SELECT alert_id FROM {topic_prefix}.alerts").fetchone()[0]

        assert main(["audit", "alert", alert_id, "--json"]) == 0
        chain = json.loads(capsys.readouterr().out)
        roots = chain["roots"]
        types = [r["event"]["event_type"] for r in roots]
        assert types == ["AlertRaised", "AlertRepeated", "AlertEscalated", "AlertAcknowledged",
                         "CommandRejected", "AlertResolved"]
        assert all(r["status"] == "ok" for r in roots)
        ack = roots[3]
        assert ack["children"][0]["kind"] == "command"
        assert ack["children"][0]["event"]["operator"] == "alice"
        scene = roots[0]["children"][0]
        assert scene["event"]["event_type"] == "RuleTriggered"
        analyses = scene["children"]
        assert len(analyses) == 3
        assert all(a["event"]["event_type"] == "FrameAnalyzed" for a in analyses)
        frame = analyses[0]["children"][0]
        assert frame["event"]["event_type"] == "FrameCaptured"
        assert frame["event"]["object_ref"].startswith("s3://frames/")

        assert main(["audit", "alert", alert_id]) == 0
        text = capsys.readouterr().out
        assert "RuleTriggered" in text and "FrameCaptured" in text
        assert main(["audit", "alert", "nope"]) == 1
    finally:
        drop_schema(dsn, topic_prefix)
        get_projector_settings.cache_clear()
