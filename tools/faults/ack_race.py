"""Scenario 7: 50 concurrent acknowledgements of one alert through the API.

Operators double-click and several consoles show the same alert: the API publishes one
command per request, so exactly-one-AlertAcknowledged has to come from the alerts agent's
state machine (commands for one incident are on one partition, in order). The oracle is
the alert_events read model: one AlertAcknowledged for the alert, the rest rejected.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter

from tools.faults.crashes import Ctx
from tools.faults.harness import Pipeline, ScenarioResult, vigil_argv

CONCURRENT = 50


async def _fire(base: str, key: str, alert_id: str, n: int) -> Counter[int]:
    import httpx

    logging.getLogger("httpx").setLevel(logging.WARNING)  # 50 request lines are noise
    async with httpx.AsyncClient(timeout=30) as client:
        async def one(i: int) -> int:
            r = await client.post(f"{base}/api/v1/alerts/{alert_id}/ack",
                                  headers={"X-API-Key": key}, json={"note": f"race {i}"})
            return r.status_code

        codes = await asyncio.gather(*(one(i) for i in range(n)), return_exceptions=True)
    return Counter(c if isinstance(c, int) else -1 for c in codes)


def ack_race(ctx: Ctx) -> ScenarioResult:
    res = ScenarioResult("ack_race")
    p = Pipeline(ctx.env, ctx.run_dir / "ack_race", ["loiterer"], "ackrace")
    try:
        import httpx

        p.setup()
        out = p.run(vigil_argv("api", "keys", "create", "--role", "operator", "--name",
                               "faults"), "vigil api keys create")
        key = out.strip().splitlines()[-1].split()[-1]
        p.start("worker", "projector", "edge", "api")
        p.drain(res, live=("worker", "projector", "api"))
        p.judge_frames(res)
        # open alerts: NEW, or ESCALATED by the time the pipeline drained (the edge exits
        # only once its recorded segments are uploaded, and escalation is 5 s here);
        # both take an acknowledgement
        alerts = [a for a in p.alerts() if a["state"] in ("NEW", "ESCALATED")]
        if not alerts:
            res.problems.append("no open alert to acknowledge")
            return res
        alert_id = alerts[0]["alert_id"]
        base = f"http://127.0.0.1:{p.env['VIGIL_API_PORT']}"
        p.wait_for(lambda: httpx.get(f"{base}/health", timeout=2).status_code == 200, 60,
                   "the API")
        t0 = time.monotonic()
        codes = asyncio.run(_fire(base, key, alert_id, CONCURRENT))
        res.faults.append(f"{CONCURRENT} concurrent POST /alerts/{{id}}/ack")

        def acks() -> list[tuple[str, str]]:
            return [(r[0], r[1]) for r in p.query(
                f"select event_id, event_type from {{s}}.alert_events "
                f"where alert_id = '{alert_id}'")]

        p.wait_for(lambda: any(t == "AlertAcknowledged" for _, t in acks()), 120,
                   "AlertAcknowledged")
        res.recovery_s.append(round(time.monotonic() - t0, 2))
        time.sleep(8)  # late duplicates would show up now
        types = Counter(t for _, t in acks())
        n_ack = types.get("AlertAcknowledged", 0)
        res.produced = CONCURRENT
        res.in_read_model = n_ack
        res.doubled += max(0, n_ack - 1)
        res.missed += 1 if n_ack == 0 else 0
        res.details.update({"http_status": dict(codes), "alert_event_types": dict(types),
                            "alert_id": alert_id})
        if set(codes) - {200, 202, 409}:
            res.problems.append(f"unexpected HTTP answers: {dict(codes)}")
    finally:
        p.stop_all()
    return res
