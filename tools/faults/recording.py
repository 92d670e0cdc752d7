"""Scenario: the object store is unreachable for a while during recording, then back.

Why a proxy in front of the store and not a stopped server: the stack's object store is
shared with the caller (and other scenarios); cutting the edge's own path to it is the
fault the edge sees when the cloud link or the store goes away, and nobody else is
disturbed. The edge records a real-time synthetic camera in 4 s segments; the path is cut
once the first segment is announced and restored after OUTAGE_S, so several segments are
finished while every upload fails.

What must hold (edge_producer/segments.py, edge_producer/uploader.py): every segment
recorded arrives in the object store and is announced by `SegmentRecorded` exactly once,
in recording order per camera; each object is a playable MP4 (PyAV opens it and decodes
its first frame); nothing is declared evicted; the edge never treats the outage as a
camera failure.
"""

from __future__ import annotations

import tempfile
import time
from collections import Counter
from pathlib import Path

from tools.faults.crashes import Ctx
from tools.faults.harness import Pipeline, ScenarioResult, free_port
from tools.faults.proxy import TcpProxy

SEGMENT_S = 4.0
OUTAGE_S = 15.0


def recording_outage(ctx: Ctx) -> ScenarioResult:
    from schemas.events import EdgeHeartbeat, SegmentRecorded, StreamDown

    res = ScenarioResult("recording_outage")
    p = Pipeline(ctx.env, ctx.run_dir / "recording_outage", ["night"], "recout",
                 realtime=True)
    s3_host, s3_port = p.env["S3_ENDPOINT"].split("://", 1)[1].rsplit(":", 1)
    proxy = TcpProxy(free_port(), int(s3_port), s3_host)
    try:
        p.setup()
        proxy.start()
        edge = p.procs["edge"]
        edge.env = {**p.env, "S3_ENDPOINT": f"http://127.0.0.1:{proxy.listen_port}",
                    "VIGIL_EDGE_SEGMENT_S": str(SEGMENT_S),
                    "VIGIL_EDGE_BACKOFF_INITIAL_S": "0.5", "VIGIL_EDGE_BACKOFF_MAX_S": "2",
                    "VIGIL_EDGE_HEARTBEAT_INTERVAL_S": "2"}
        rec_dir = Path(p.env["VIGIL_STATE_DIR"]) / "edge" / "demo-edge" / "recordings"
        p.start("edge")

        def announced() -> list[SegmentRecorded]:
            return [e for e in p.read_topic("recordings") if isinstance(e, SegmentRecorded)]

        p.wait_for(lambda: len(announced()) >= 1, 180, "the first announced segment")
        proxy.cut()
        res.faults.append(f"object store unreachable for the edge for {OUTAGE_S:.0f} s")
        time.sleep(OUTAGE_S)
        waiting = sorted(q.name for q in rec_dir.glob("*/*.mp4")
                         if not q.name.endswith(".up.mp4"))
        proxy.restore()
        res.faults.append("object store reachable again")
        t0 = time.monotonic()
        p.wait_for(lambda: not edge.alive, 240, "the edge to upload its backlog and exit")
        res.recovery_s.append(round(time.monotonic() - t0, 2))
        if edge.popen is not None and edge.popen.returncode != 0:
            res.problems.append(f"the edge exited with {edge.popen.returncode} (see {edge.log})")
        _judge(p, res, rec_dir, announced(), waiting)
        hbs = [e for e in p.read_topic("heartbeats") if isinstance(e, EdgeHeartbeat)]
        if not hbs:
            res.problems.append("no heartbeat from the edge")
        else:
            last = max(hbs, key=lambda h: h.occurred_at)
            evicted = {s.camera_id: s.segments_evicted for s in last.streams}
            if any(evicted.values()):
                res.problems.append(f"segments declared evicted: {evicted}")
            res.details["max_record_backlog"] = max(h.record_backlog for h in hbs)
        downs = [e for e in p.read_topic("health") if isinstance(e, StreamDown)]
        if downs:
            res.problems.append(f"the outage was treated as a camera failure: {len(downs)} "
                                f"StreamDown event(s)")
        if "segment upload failed" not in edge.log.read_text(errors="replace"):
            res.problems.append("no upload failed: the outage was not seen by the edge")
        res.details["outage_s"] = OUTAGE_S
    finally:
        p.stop_all()
        proxy.close()
    return res


def _judge(p: Pipeline, res: ScenarioResult, rec_dir: Path, events: list, waiting: list[str]
           ) -> None:
    """Files in the edge's buffer (what was recorded) vs announcements vs objects."""
    import av

    from vigil.objects import client

    recorded = sorted(rec_dir.glob("*/*.mp4"))
    res.produced = len(recorded)
    counts = Counter((e.camera_id, e.start_at) for e in events)
    res.duplicated = sum(n - 1 for n in counts.values())
    not_uploaded = [q.name for q in recorded if not q.name.endswith(".up.mp4")]
    if not_uploaded:
        res.problems.append(f"segments still waiting in the edge buffer: {not_uploaded}")
    for cam in {e.camera_id for e in events}:
        starts = [e.start_at for e in events if e.camera_id == cam]
        if starts != sorted(starts):
            res.problems.append(f"{cam}: segments announced out of recording order")
    playable = 0
    with tempfile.TemporaryDirectory() as tmp:
        for (cam, start), _n in counts.items():
            ev = next(e for e in events if (e.camera_id, e.start_at) == (cam, start))
            bucket, key = ev.object_ref.removeprefix("s3://").split("/", 1)
            try:
                data = client().get_object(bucket, key).read()
                path = Path(tmp) / "seg.mp4"
                path.write_bytes(data)
                with av.open(str(path)) as c:
                    next(c.decode(video=0))
            except Exception as exc:
                res.problems.append(f"{key}: not playable from the store: {exc}")
                continue
            if len(data) != ev.size_bytes:
                res.problems.append(f"{key}: {len(data)} bytes stored, {ev.size_bytes} "
                                    f"announced")
                continue
            playable += 1
    res.in_read_model = playable
    res.lost = max(res.produced - playable, 0)
    if len(waiting) < 2:
        res.problems.append(f"only {len(waiting)} segment(s) recorded during the outage: "
                            f"nothing proven")
    res.details.update({"segments_recorded": res.produced,
                        "recorded_during_outage": len(waiting),
                        "announcements": len(events), "playable": playable,
                        "segment_s": SEGMENT_S})
