"""Two-worker scenarios: a stalled worker, a killed one, and a worker whose RocksDB is gone.

- worker_stall: worker A is SIGSTOPped for longer than the Kafka session timeout (15 s,
  agents/app.py) while worker B is in the group, so B takes A's partitions over; then A
  is resumed. A's late writes (productions and offset commits it had in flight when it
  froze) must be fenced by the group or deduplicated downstream by event id: the set
  oracle then sees every frame once, analysed once, and no alert doubled.
- worker_pair_kill: the same two workers, A is SIGKILLed and not restarted: B must take
  its partitions and its table state (from the changelog) and finish the run alone.
- worker_wipe: the only worker is SIGKILLed and its RocksDB folder deleted before the
  restart, so every table is restored from its changelog; the alerts raised afterwards
  must still equal the scenarios' ground truth (the reference), nothing doubled.
"""

from __future__ import annotations

import shutil
import signal
import time
from pathlib import Path

from tools.faults.crashes import FULL_SCENARIOS, Ctx, _recovery, _wait_progress
from tools.faults.harness import Pipeline, ScenarioResult, free_port, vigil_argv

#: agents/app.py broker_session_timeout
SESSION_TIMEOUT_S = 15.0



def _two_workers(ctx: Ctx, name: str, scen: list[str]) -> Pipeline:
    """A pipeline whose group has two workers (own ids, RocksDB folders and web ports),
    both joined before the edge starts so each owns partitions when the fault lands."""
    # live pace: the fault must land while frames are still arriving; played flat out,
    # the workers (at ~20 frames/s) are done before the busy worker has been found
    p = Pipeline(ctx.env, ctx.run_dir / name, scen, name[:8], partitions=4, realtime=True)
    p.setup()
    p.procs["worker"].env = {**p.env, "VIGIL_WORKER_ID": "wa"}
    p.add("worker_b", vigil_argv("worker")).env = {
        **p.env, "VIGIL_WORKER_ID": "wb", "VIGIL_WORKER_WEB_PORT": str(free_port())}
    p.start("worker", "worker_b", "projector")
    time.sleep(10)  # both in the group: the first rebalance settles
    p.start("edge")
    return p


def _stop_busy_worker(p: Pipeline) -> tuple[str, list[str]]:
    """SIGSTOP the worker that owns a busy camera's partition, so the stall hits work in
    flight (which worker got which partition is the assignor's choice). Probes each in
    turn: a camera with a backlog whose analyses stop while a worker is frozen is that
    worker's. Returns the frozen worker's name (left stopped) and those cameras."""
    # A camera is the frozen worker's when it has frames waiting at the end of the probe
    # and none of them got analysed during it.
    for _round in range(2):
        for name in ("worker", "worker_b"):
            p.procs[name].signal(signal.SIGSTOP)
            # progress is read from the read model: analyses the worker wrote just before
            # it froze are still on their way through the projector, so settle first
            time.sleep(2)
            before = p.progress()
            time.sleep(4)
            after = p.progress()
            frozen = [c for c in p.cameras
                      if after[c][0] > after[c][1] and after[c][1] == before[c][1]]
            if frozen:
                return name, frozen
            p.procs[name].signal(signal.SIGCONT)
    p.procs["worker"].signal(signal.SIGSTOP)
    return "worker", []


def worker_stall(ctx: Ctx) -> ScenarioResult:
    res = ScenarioResult("worker_stall")
    scen = ["loiterer", "passers_by"] if ctx.quick else FULL_SCENARIOS
    p = _two_workers(ctx, "worker_stall", scen)
    try:
        total = p.expected_frames
        _wait_progress(p, ctx.rng.randint(int(total * 0.15), int(total * 0.3)), 300)
        t0 = time.monotonic()
        name, frozen = _stop_busy_worker(p)
        victim = p.procs[name]
        stalled_at = {c: a for c, (_, a) in p.progress().items()}
        stall_s = SESSION_TIMEOUT_S + 10
        if not frozen:
            res.problems.append("no worker owned a busy partition: the stall hit no work")
        # recovered = the frozen cameras make progress again while the victim is still
        # frozen: the other worker took its partitions over
        try:
            p.wait_for(lambda: all(p.progress()[c][1] > stalled_at[c] for c in frozen),
                       stall_s + 60, "the other worker to take over")
            res.recovery_s.append(round(time.monotonic() - t0, 2))
        except Exception as exc:
            res.problems.append(str(exc))
        time.sleep(max(0.0, stall_s - (time.monotonic() - t0)))
        victim.signal(signal.SIGCONT)
        res.faults.append(f"SIGSTOP {name} (owner of {frozen}) at {sum(stalled_at.values())} "
                          f"analysed frames for {time.monotonic() - t0:.0f} s (session "
                          f"timeout {SESSION_TIMEOUT_S:.0f} s), then SIGCONT")
        p.drain(res, ctx.quick, live=("worker", "worker_b", "projector"))
        p.judge_frames(res)
        _log_duplicates(p, res)
    finally:
        p.stop_all()
    return res


def _log_duplicates(p: Pipeline, res: ScenarioResult) -> None:
    """How many analyses reached the LOG twice (late writes of the stalled worker, or
    re-processing after the take-over): the read model must have absorbed them."""
    from collections import Counter

    from schemas.events import FrameAnalyzed

    per_frame = Counter(e.causation_id for e in p.read_topic("detections")
                        if isinstance(e, FrameAnalyzed))
    res.details["analyses_in_log"] = sum(per_frame.values())
    res.details["frames_analysed_more_than_once_in_log"] = sum(
        1 for n in per_frame.values() if n > 1)


def worker_pair_kill(ctx: Ctx) -> ScenarioResult:
    res = ScenarioResult("worker_pair_kill")
    scen = ["loiterer", "passers_by"] if ctx.quick else FULL_SCENARIOS
    p = _two_workers(ctx, "worker_pair_kill", scen)
    try:
        total = p.expected_frames
        _wait_progress(p, ctx.rng.randint(int(total * 0.15), int(total * 0.3)), 300)
        name, frozen = _stop_busy_worker(p)
        p.procs[name].kill()
        survivor = "worker_b" if name == "worker" else "worker"
        res.faults.append(f"SIGKILL {name} (owner of {frozen}) at {p.analysed()} analysed "
                          f"frames; {survivor} alone from then on")
        if not frozen:
            res.problems.append("no worker owned a busy partition: the kill hit no work")
        at = {c: a for c, (_, a) in p.progress().items()}
        t0 = time.monotonic()
        p.wait_for(lambda: all(p.progress()[c][1] > at[c] for c in frozen),
                   SESSION_TIMEOUT_S + 120, f"{survivor} to take the partitions over")
        res.recovery_s.append(round(time.monotonic() - t0, 2))
        p.drain(res, ctx.quick, live=(survivor, "projector"))
        p.judge_frames(res)
        _log_duplicates(p, res)
    finally:
        p.stop_all()
    return res


def worker_wipe(ctx: Ctx) -> ScenarioResult:
    res = ScenarioResult("worker_wipe")
    scen = ["loiterer"] if ctx.quick else FULL_SCENARIOS
    p = Pipeline(ctx.env, ctx.run_dir / "worker_wipe", scen, "wwipe")
    try:
        p.setup()
        p.start("worker", "projector", "edge")
        total = p.expected_frames
        _wait_progress(p, ctx.rng.randint(int(total * 0.3), int(total * 0.5)), 300)
        time.sleep(ctx.rng.uniform(0, 2))
        w = p.procs["worker"]
        w.kill()
        datadir = Path(p.env["VIGIL_STATE_DIR"]) / "worker" / p.prefix
        size = sum(f.stat().st_size for f in datadir.rglob("*") if f.is_file())
        shutil.rmtree(datadir)
        res.faults.append(f"SIGKILL worker, RocksDB folder wiped ({size // 1024} KiB) at "
                          f"{p.analysed()} analysed frames")
        w.start()
        res.recovery_s.append(round(_recovery(p, 240), 2))
        p.drain(res, ctx.quick)
        p.judge_frames(res)
        res.details["note"] = ("state restored from the changelogs alone; the reference is "
                               "the scenarios' ground truth alerts")
    finally:
        p.stop_all()
    return res
