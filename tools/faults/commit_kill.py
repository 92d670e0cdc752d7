"""Scenario: the projector SIGKILLed right after a PostgreSQL commit, before anything else.

Why a wrapper and not a random kill: the window between "the batch and its offsets are
committed" and "whatever the loop does next" (metrics, the next fetch, any consumer
commit) is microseconds wide; a kill from outside almost never lands in it. So the
projector is started through this module (`python -m tools.faults.commit_kill`), which
wraps `Projector._with_db_retry` and SIGKILLs its own process the moment the N-th batch
write returns, N from VIGIL_FAULTS_KILL_AFTER_COMMIT. The projector code itself is
unchanged; the restart runs the same wrapper with a new N, the last one without it.
What must hold: the read models equal the log (the offsets were in the same transaction).
"""

from __future__ import annotations

import os
import signal
import sys
import time
from typing import Any

from tools.faults.crashes import Ctx, _judge_alert_log, _recovery
from tools.faults.harness import Pipeline, ScenarioResult

ENV = "VIGIL_FAULTS_KILL_AFTER_COMMIT"


def _install(after: int) -> None:
    from projections.projector import Projector

    orig = Projector._with_db_retry
    commits = 0

    def wrapped(self: Projector, fn: Any) -> Any:
        nonlocal commits
        out = orig(self, fn)
        if getattr(fn, "__name__", "") == "write":  # the batch + offsets transaction
            commits += 1
            if commits >= after:
                os.kill(os.getpid(), signal.SIGKILL)
        return out

    Projector._with_db_retry = wrapped  # type: ignore[method-assign]


def _idle(p: Pipeline) -> bool:
    """The edge has finished and every frame is analysed and projected: an armed projector
    has (almost) nothing left to commit, so waiting out the 180 s for its kill is waste."""
    prog = p.progress()
    return (not p.procs["edge"].alive and bool(prog)
            and all(f > 0 and a >= f for f, a in prog.values()))


def projector_commit_kill(ctx: Ctx) -> ScenarioResult:
    res = ScenarioResult("projector_commit_kill")
    kills = 2 if ctx.quick else 5
    p = Pipeline(ctx.env, ctx.run_dir / "projector_commit_kill", ["loiterer"], "pcommit")
    proj = None
    try:
        p.setup()
        proj = p.add("projector", [sys.executable, "-m", "tools.faults.commit_kill"])
        p.start("worker", "edge")
        done = 0
        for _ in range(kills):
            n = ctx.rng.randint(2, 6)
            proj.env = {**p.env, ENV: str(n)}
            proj.start()
            try:
                p.wait_for(lambda: not proj.alive or _idle(p), 180,
                           f"the kill after commit #{n}")
            except Exception:
                break
            if proj.alive:
                break  # nothing left to commit: the run is over before the kill
            done += 1
            res.faults.append(f"projector SIGKILLed right after its commit #{n}")
            time.sleep(ctx.rng.uniform(0.2, 1.5))
        proj.stop()  # still armed if the run ended before its kill: restart it unarmed
        proj.env = dict(p.env)
        proj.start()
        res.recovery_s.append(round(_recovery(p, 180), 2))
        res.details["kills_after_commit"] = done
        p.drain(res, ctx.quick)
        p.judge_frames(res)
        _judge_alert_log(p, res)
    finally:
        p.stop_all()
    return res


if __name__ == "__main__":
    if os.environ.get(ENV):
        _install(int(os.environ[ENV]))
    from vigil_cli.main import main

    sys.exit(main(["project"]))
