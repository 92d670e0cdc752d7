"""Scenario: the edge's spool disk fills up while Kafka is unreachable.

Why a real filesystem: the failure is ENOSPC from the kernel in the middle of a write, with
the head file and the tail segment on the same full disk; a configured cap would only
exercise the spool's own bound. The edge runs in a private mount namespace (`unshare -m`,
we are root) with a small tmpfs on its spool folder: nobody else sees the mount and it
disappears with the process, so nothing is left behind.

Why "Kafka unreachable" is a bootstrap port nobody listens on: the edge cannot learn the
broker's advertised address, so it reaches nothing; "Kafka back" is a proxy started on
that port, after which the edge talks to the broker directly. The shared stack is never
disturbed.

What must hold (the behaviour decided in edge_producer/spool.py): the edge neither
crashes nor blocks; a frame it could not keep is declared (heartbeat `frames_dropped`
per camera, `spool_evicted`); every sequence number it allocated is either in the read
model exactly once or declared dropped, and the two numbers match.
"""

from __future__ import annotations

import time
from pathlib import Path

from tools.faults.crashes import Ctx
from tools.faults.harness import Pipeline, ScenarioResult, free_port
from tools.faults.proxy import TcpProxy

#: ~14 frames of ~36 KB: even if Kafka is seen down at once (keyframes only, ~18 frames
#: for the two scenes) the disk overflows; flat out (~90 frames) it overflows many times.
TMPFS_BYTES = 512 * 1024
SEGMENT_BYTES = 64 * 1024


def _in_small_fs(argv: list[str], mount_dir: Path, size: int) -> list[str]:
    """`argv` in its own mount namespace with a `size`-byte tmpfs on `mount_dir`."""
    script = f'mount -t tmpfs -o size={size},mode=0755 vigil-spool "$0" && exec "$@"'
    return ["unshare", "-m", "--propagation", "private", "sh", "-c", script, str(mount_dir),
            *argv]


def spool_full(ctx: Ctx) -> ScenarioResult:
    from schemas.events import EdgeHeartbeat, StreamDown

    res = ScenarioResult("spool_full")
    scen = ["loiterer", "passers_by"]
    p = Pipeline(ctx.env, ctx.run_dir / "spool_full", scen, "spoolfull")
    proxy: TcpProxy | None = None
    try:
        p.setup()
        assert p.edge_file is not None
        edge_dir = Path(p.env["VIGIL_STATE_DIR"]) / "edge" / "demo-edge"
        spool_dir = edge_dir / "spool"
        spool_dir.mkdir(parents=True, exist_ok=True)
        kafka_host, kafka_port = p.env["KAFKA_BOOTSTRAP"].split(",")[0].rsplit(":", 1)
        dead_port = free_port()
        edge = p.procs["edge"]
        edge.argv = _in_small_fs(edge.argv, spool_dir, TMPFS_BYTES)
        edge.env = {**p.env, "KAFKA_BOOTSTRAP": f"127.0.0.1:{dead_port}",
                    "VIGIL_EDGE_MESSAGE_TIMEOUT_S": "3", "VIGIL_EDGE_BACKOFF_MAX_S": "2",
                    "VIGIL_EDGE_HEARTBEAT_INTERVAL_S": "2",
                    "VIGIL_EDGE_SPOOL_SEGMENT_BYTES": str(SEGMENT_BYTES)}
        p.start("worker", "projector", "edge")
        res.faults.append(f"Kafka unreachable for the edge; spool on a {TMPFS_BYTES // 1024} "
                          f"KiB tmpfs")
        # every camera reaches the end of its scene while Kafka is still unreachable
        p.wait_for(lambda: edge.log.read_text(errors="replace").count("source ended")
                   >= len(p.cameras) or not edge.alive, 240, "the edge to capture its scenes")
        if not edge.alive:
            res.problems.append(f"the edge exited while Kafka was unreachable (see {edge.log})")
        time.sleep(2)
        proxy = TcpProxy(dead_port, int(kafka_port), kafka_host)
        proxy.start()
        res.faults.append("Kafka reachable again (proxy on the edge's bootstrap port)")
        t0 = time.monotonic()
        p.wait_for(lambda: not edge.alive, 180, "the edge to drain its spool and exit")
        res.recovery_s.append(round(time.monotonic() - t0, 2))
        if edge.popen is not None and edge.popen.returncode != 0:
            res.problems.append(f"the edge exited with {edge.popen.returncode} (see {edge.log})")
        p.drain(res, every_camera=False)
        p.judge_frames(res, check_alerts=False, gaps_declared=True)
        _judge_declared(p, res, edge_dir, EdgeHeartbeat, StreamDown)
    finally:
        p.stop_all()
        if proxy is not None:
            proxy.close()
    return res


def _judge_declared(p: Pipeline, res: ScenarioResult, edge_dir: Path, hb_type: type,
                    down_type: type) -> None:
    """Each allocated sequence number is in the read model or declared dropped: the
    missing ones per camera must equal the edge's last heartbeat's `frames_dropped`."""
    hbs = [e for e in p.read_topic("heartbeats") if isinstance(e, hb_type)]
    if not hbs:
        res.problems.append("no heartbeat from the edge")
        return
    last = max(hbs, key=lambda h: (h.occurred_at, h.spool_evicted))
    declared = {s.camera_id: s.frames_dropped for s in last.streams}
    rm = p.query("select camera_id, sequence from {s}.frames")
    missing: dict[str, int] = {}
    allocated: dict[str, int] = {}
    for cam in p.cameras:
        seq_file = edge_dir / "sequences" / cam
        allocated[cam] = int(seq_file.read_text()) if seq_file.exists() else 0
        have = {s for c, s in rm if c == cam}
        missing[cam] = len(set(range(1, allocated[cam] + 1)) - have)
        if have - set(range(1, allocated[cam] + 1)):
            res.problems.append(f"{cam}: sequence numbers beyond the last allocated one")
    undeclared = {c: missing[c] - declared.get(c, 0) for c in p.cameras
                  if missing[c] != declared.get(c, 0)}
    res.lost += sum(max(0, n) for n in undeclared.values())
    if undeclared:
        res.problems.append(f"missing frames not matching the declared drops (missing - "
                            f"declared per camera): {undeclared}")
    if sum(declared.values()) == 0:
        res.problems.append("the spool never filled up: nothing was dropped, nothing proven")
    downs = [e for e in p.read_topic("health") if isinstance(e, down_type)]
    if downs:
        res.problems.append(f"the full disk was treated as a camera failure: "
                            f"{len(downs)} StreamDown event(s)")
    res.details.update({
        "sequences_allocated": allocated, "missing_in_read_model": missing,
        "declared_dropped": declared, "heartbeat_spool_evicted": last.spool_evicted,
        "heartbeats": len(hbs), "tmpfs_bytes": TMPFS_BYTES,
        "note": "alerts not judged: the spool dropped frames (declared) by design",
    })
