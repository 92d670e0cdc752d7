"""Scenario: Triton SIGKILLed under steady load and started again.

Why a Triton of its own: killing the stack's Triton would fail every other process and
test using it. This one is the devstack's Triton service on the fault ports
(tools.faults.infra.PORTS, which the Kafka/PostgreSQL fault stack leaves unused) under
its own state folder; Kafka and PostgreSQL stay the caller's. It is stopped at the end of
the scenario.

What must hold (docs/architecture.md, inference): a Triton outage never skips a frame. The worker
publishes `InferenceDegraded` once, stops consuming, probes, publishes
`InferenceRecovered` when Triton answers and drains the backlog from Kafka: every frame
analysed exactly once, alerts as the ground truth says.
"""

from __future__ import annotations

import signal
import time

from tools.devstack.stack import Stack
from tools.faults.crashes import Ctx, _wait_progress
from tools.faults.harness import Pipeline, ScenarioResult
from tools.faults.infra import PORTS
from vigil.settings import PROJECT_ROOT

STATE_DIR = PROJECT_ROOT / ".vigil" / "faults-triton"



def triton_restart(ctx: Ctx) -> ScenarioResult:
    from schemas.events import InferenceDegraded, InferenceRecovered

    res = ScenarioResult("triton_restart")
    scen = ["loiterer"] if ctx.quick else ["loiterer", "crowd6"]
    st = Stack(STATE_DIR, PORTS, overrides={}, fast_unsafe=True)
    t0 = time.monotonic()
    st.up(["triton"])
    env = {**ctx.env, "TRITON_URL": st.services["triton"].address()}
    res.details["triton_start_s"] = round(time.monotonic() - t0, 1)
    p = Pipeline(env, ctx.run_dir / "triton_restart", scen, "triton")
    try:
        p.setup()
        p.start("worker", "projector", "edge")
        total = p.expected_frames
        outages = 1 if ctx.quick else 2
        svc = st.services["triton"]
        for i in range(outages):
            _wait_progress(p, ctx.rng.randint(int(total * (0.15 + 0.35 * i)),
                                              int(total * (0.3 + 0.35 * i))), 300)
            at = p.analysed()
            svc.process.stop(timeout=30, sig=signal.SIGKILL)
            res.faults.append(f"SIGKILL Triton at {at} analysed frames")
            time.sleep(ctx.rng.uniform(3, 6))  # frames keep arriving while it is down
            t1 = time.monotonic()
            st.up(["triton"])
            p.wait_for(lambda a=at: p.analysed() > a, 240, "analysis to resume")
            res.recovery_s.append(round(time.monotonic() - t1, 2))
        p.drain(res, ctx.quick)
        p.judge_frames(res)
        health = p.read_topic("health")
        kinds = [type(e).__name__ for e in health
                 if isinstance(e, (InferenceDegraded, InferenceRecovered))]
        res.details["inference_health"] = kinds
        if kinds.count("InferenceDegraded") < 1 or kinds.count("InferenceRecovered") < 1:
            res.problems.append(f"expected InferenceDegraded then InferenceRecovered, "
                                f"got {kinds}")
        elif kinds[-1] != "InferenceRecovered":
            res.problems.append(f"the last inference health event is not a recovery: {kinds}")
    finally:
        p.stop_all()
        st.down(["triton"])
    return res
