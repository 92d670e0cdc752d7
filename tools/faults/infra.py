"""Infrastructure faults on a DEDICATED stack: network cut, broker and PostgreSQL restarts.

Why a dedicated stack: restarting Kafka or PostgreSQL would break everybody else's
processes on the shared dev or test stack. `FaultStack` is a `Stack` on its own ports and
state folder (Kafka + PostgreSQL only; Triton and the object store stay the caller's,
they are stateless for these scenarios) and is stopped when the run ends.

Why a second broker listener: a proxy in front of the bootstrap address alone only
carries the first connection, since the broker's metadata names its advertised address
and clients go there directly. The fault broker therefore has a second listener,
PROXIED, whose advertised address is the proxy's port: a client bootstrapped through the
proxy keeps talking through it, everyone else uses the direct listener.
"""

from __future__ import annotations

import os
import signal
import time

from tools.devstack.process import port_is_free
from tools.devstack.stack import Kafka, Ports, Stack
from tools.faults.crashes import Ctx
from tools.faults.harness import Pipeline, ScenarioResult
from tools.faults.proxy import TcpProxy
from vigil.errors import VigilError
from vigil.settings import PROJECT_ROOT

STATE_DIR = PROJECT_ROOT / ".vigil" / "faults-stack"


def _port_offset() -> int:
    """VIGIL_FAULTS_PORT_OFFSET shifts the dedicated stack's ports, so that it can run
    beside test stacks whose own offset put them on the default ports."""
    raw = os.environ.get("VIGIL_FAULTS_PORT_OFFSET", "0")
    try:
        return int(raw)
    except ValueError:
        raise VigilError(f"VIGIL_FAULTS_PORT_OFFSET must be an integer, not {raw!r}") from None


_OFF = _port_offset()
#: Below 32768 (not ephemeral) and apart from the dev (19xxx) and test (27xxx) stacks.
PORTS = Ports(kafka=28092 + _OFF, kafka_controller=28093 + _OFF, postgres=28432 + _OFF,
              triton_http=28000 + _OFF, triton_grpc=28001 + _OFF,
              triton_metrics=28002 + _OFF, s3=28900 + _OFF,
              alertmanager=28193 + _OFF, notifier=28110 + _OFF)
PROXIED_LISTENER_PORT = 28094 + _OFF
PROXY_PORT = 28095 + _OFF


class ProxiedKafka(Kafka):
    """The stack's Kafka with an extra listener advertised at the proxy's port."""

    def ports(self) -> list[int]:
        return [*super().ports(), PROXIED_LISTENER_PORT]

    def prepare(self) -> None:
        super().prepare()
        p = self.stack.ports
        path = self.dir / "server.properties"
        lines = []
        for line in path.read_text().splitlines():
            key = line.split("=", 1)[0]
            if key == "listeners":
                line = (f"listeners=PLAINTEXT://127.0.0.1:{p.kafka},CONTROLLER://127.0.0.1:"
                        f"{p.kafka_controller},PROXIED://127.0.0.1:{PROXIED_LISTENER_PORT}")
            elif key == "advertised.listeners":
                line = (f"advertised.listeners=PLAINTEXT://127.0.0.1:{p.kafka},"
                        f"PROXIED://127.0.0.1:{PROXY_PORT}")
            elif key == "listener.security.protocol.map":
                line = ("listener.security.protocol.map=CONTROLLER:PLAINTEXT,"
                        "PLAINTEXT:PLAINTEXT,PROXIED:PLAINTEXT")
            lines.append(line)
        path.write_text("\n".join(lines) + "\n")


_stack: Stack | None = None


def fault_stack() -> Stack:
    """The dedicated stack, started on first use (idempotent, like `vigil dev up`)."""
    global _stack
    if _stack is None:
        st = Stack(STATE_DIR, PORTS, overrides={}, kafka_heap="512m", fast_unsafe=True)
        st.services["kafka"] = ProxiedKafka(st)
        _stack = st
    _stack.up(["postgres", "kafka"])
    return _stack


def teardown() -> None:
    """Stop the dedicated stack if this run started it (called once at the end)."""
    global _stack
    if _stack is not None:
        _stack.down(["postgres", "kafka"])
        _stack = None


def _env(ctx: Ctx, st: Stack) -> dict[str, str]:
    env = dict(ctx.env)
    env["KAFKA_BOOTSTRAP"] = st.services["kafka"].address()
    env["DATABASE_URL"] = st.services["postgres"].address()
    return env



def _restart_dead(p: Pipeline, res: ScenarioResult, during: str) -> None:
    """A process that exits on a transient outage is a finding; restart it so the rest
    of the run can still be judged for loss and duplication."""
    for name in ("worker", "projector"):
        proc = p.procs[name]
        if proc.popen is not None and not proc.alive:
            res.problems.append(f"{name} exited ({proc.popen.returncode}) during {during}; "
                                f"restarted (see {proc.log})")
            proc.start()


def _outage(ctx: Ctx, name: str, scen: list[str], down_s: float, outages: int,
            fault: str, hard: bool = False) -> ScenarioResult:
    res = ScenarioResult(name)
    st = fault_stack()
    env = _env(ctx, st)
    proxy: TcpProxy | None = None
    p = Pipeline(env, ctx.run_dir / name, scen, name[:6])
    try:
        p.setup()
        if fault == "network":
            if not port_is_free(PROXY_PORT):
                raise VigilError(f"proxy port {PROXY_PORT} is taken")
            proxy = TcpProxy(PROXY_PORT, PROXIED_LISTENER_PORT)
            proxy.start()
            p.procs["worker"].env = {**p.env, "KAFKA_BOOTSTRAP": f"127.0.0.1:{PROXY_PORT}"}
        p.start("worker", "projector", "edge")
        total = p.expected_frames
        for i in range(outages):
            # the seed picks the moment: a point of the stream, then a fraction of a second
            lo = 0.1 + 0.4 * i
            target = int(total * ctx.rng.uniform(lo, lo + 0.3))
            p.wait_for(lambda t=target: p.analysed() >= t, 300, f"{target} analysed frames")
            time.sleep(ctx.rng.uniform(0, 1.0))
            if fault == "network":
                assert proxy is not None
                proxy.cut()
                res.faults.append(f"cut worker<->broker for {down_s:.0f} s at {target}+ "
                                  f"analysed frames")
                time.sleep(down_s)
                proxy.restore()
            else:
                svc = st.services[fault]
                # hard: a crash (no flush, no controlled shutdown), else a clean stop
                svc.process.stop(timeout=30, sig=signal.SIGKILL if hard else signal.SIGTERM)
                res.faults.append(f"{'SIGKILL' if hard else 'stop'} {fault}, down "
                                  f"{down_s:.0f} s, at {target}+ analysed frames")
                time.sleep(down_s)
                st.up([fault])
            t0 = time.monotonic()
            before = p.analysed()
            p.wait_for(lambda b=before: p.analysed() > b or (
                not p.procs["edge"].alive and all(a >= f for f, a in p.progress().values())),
                240, f"progress after the {fault} outage")
            res.recovery_s.append(round(time.monotonic() - t0, 2))
            _restart_dead(p, res, f"the {fault} outage")
        deadline = time.monotonic() + (420 if ctx.quick else 900)
        while time.monotonic() < deadline:
            _restart_dead(p, res, f"the {fault} outage")
            try:
                if p.wait_drained(min(60.0, deadline - time.monotonic())):
                    break
            except VigilError:
                continue  # a process died while draining: restarted above
        else:
            p.not_drained(res)
        p.judge_frames(res)
        if proxy is not None:
            res.details["proxy_connections"] = proxy.connections
    finally:
        p.stop_all()
        if proxy is not None:
            proxy.close()
    return res


def network_cut(ctx: Ctx) -> ScenarioResult:
    """Scenario 5: the worker loses its broker connections (reset + refused) for a while."""
    return _outage(ctx, "network_cut", ["loiterer"], 8 if ctx.quick else 20,
                   1 if ctx.quick else 2, "network")


def broker_restart(ctx: Ctx) -> ScenarioResult:
    """Scenario 6a: the (dedicated) Kafka broker stops (SIGKILL unless --quick) and starts
    again mid-stream."""
    return _outage(ctx, "broker_restart", ["loiterer"], 3 if ctx.quick else 10,
                   1, "kafka", hard=not ctx.quick)


def postgres_restart(ctx: Ctx) -> ScenarioResult:
    """Scenario 6b: the (dedicated) PostgreSQL is SIGKILLed and starts again mid-stream.
    Always a crash, also with --quick: a crash is what loses acknowledged commits (the
    stack runs synchronous_commit=off), the case of issue 24."""
    return _outage(ctx, "postgres_restart", ["loiterer"], 3 if ctx.quick else 10,
                   1, "postgres", hard=True)

