"""`vigil faults run [--json FILE] [--only NAME ...] [--quick] [--seed S] [--sweep N]`:
fault scenarios, judged.

Timing bugs hide in the moment a fault lands. Every crash scenario draws its kill moment
from the seed (`Ctx.rng`, seeded with "<seed>:<scenario>"), so `--seed S` repeats a run's
moments exactly, and `--sweep N` runs every selected scenario with N seeds (S, S+1, ...)
and prints, for each failure, the command that repeats it (docs/faults.md).

Each scenario starts its own pipeline of real processes (edge, worker, projector, API)
on the stack the environment points at, injects one kind of fault, waits (bounded) for
the pipeline to drain and compares the Kafka log with the read models as sets. It prints
a table and writes the results as JSON; the exit code is non-zero if any scenario lost,
duplicated, missed or doubled anything.

Scenarios that stop a broker or cut a network path never touch the stack the
environment points at: they start a dedicated Kafka + PostgreSQL (tools.faults.infra) on
their own ports, and stop it at the end of the run. triton_restart likewise SIGKILLs a
Triton of its own (tools.faults.triton), and spool_full gives the edge a small tmpfs in a
mount namespace of its own (tools.faults.disk).
"""

from __future__ import annotations

import argparse
import json
import random
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

from tools.faults.harness import ScenarioResult

#: name -> "module:function"; in the issue's order (cheap first in --quick).
SCENARIOS: dict[str, str] = {
    "worker_kill": "tools.faults.crashes:worker_kill",
    "projector_kill": "tools.faults.crashes:projector_kill",
    "edge_kill": "tools.faults.crashes:edge_kill",
    "poison": "tools.faults.poison:poison",
    "ack_race": "tools.faults.ack_race:ack_race",
    "network_cut": "tools.faults.infra:network_cut",
    "broker_restart": "tools.faults.infra:broker_restart",
    "postgres_restart": "tools.faults.infra:postgres_restart",
    "worker_stall": "tools.faults.stalls:worker_stall",
    "worker_pair_kill": "tools.faults.stalls:worker_pair_kill",
    "worker_wipe": "tools.faults.stalls:worker_wipe",
    "projector_commit_kill": "tools.faults.commit_kill:projector_commit_kill",
    "spool_full": "tools.faults.disk:spool_full",
    "recording_outage": "tools.faults.recording:recording_outage",
    "malformed": "tools.faults.malformed:malformed",
    "triton_restart": "tools.faults.triton:triton_restart",
    "restore_drill": "tools.faults.restore:restore_drill",
}

#: Scenarios named in the issue and not implemented, with the reason (shown in the table).
SKIPPED: dict[str, str] = {}

#: These stop a broker or cut a network path: they run on a dedicated stack of their own.
INFRA = {"network_cut", "broker_restart", "postgres_restart"}

#: Scenarios that SIGKILL a process or a service at a seed-chosen moment: the default
#: selection of a sweep.
CRASH = ["worker_kill", "projector_kill", "edge_kill", "projector_commit_kill",
         "postgres_restart", "broker_restart"]


def _load(name: str) -> Callable[..., ScenarioResult]:
    import importlib

    mod, fn = SCENARIOS[name].split(":")
    return getattr(importlib.import_module(mod), fn)  # type: ignore[no-any-return]


def run_scenarios(names: list[str], env: dict[str, str], run_dir: Path, quick: bool,
                  seed: int | None = None) -> list[ScenarioResult]:
    """Run the named scenarios one after another; a crashing scenario is a failed result,
    not an aborted run, so one broken scenario does not hide the others."""
    from tools.faults.crashes import Ctx

    seed = seed if seed is not None else random.randrange(1 << 30)
    print(f"vigil faults: seed {seed} (repeat a scenario with --only NAME --seed {seed})")
    results = []
    for name in names:
        ctx = Ctx(env=env, run_dir=run_dir, quick=quick, rng=random.Random(f"{seed}:{name}"))
        t0 = time.monotonic()
        try:
            res = _load(name)(ctx)
        except Exception as exc:
            res = ScenarioResult(name)
            res.problems.append(f"scenario crashed: {type(exc).__name__}: {exc}")
        res.duration_s = round(time.monotonic() - t0, 1)
        res.details["seed"] = seed
        res.judge()
        results.append(res)
        print_table([res], header=not results[:-1])
    return results


def repeat_command(name: str, seed: int, quick: bool) -> str:
    return f"vigil faults run --only {name} --seed {seed}" + (" --quick" if quick else "")


def sweep(names: list[str], env: dict[str, str], run_dir: Path, quick: bool, n: int,
          seed: int | None = None) -> list[ScenarioResult]:
    """Each scenario with `n` seeds (seed, seed+1, ...; random start if None). Prints each
    failure with the command that repeats it, then the tally."""
    base = seed if seed is not None else random.randrange(1 << 30)
    print(f"vigil faults: sweep of {len(names)} scenario(s) x {n} seed(s) from {base}")
    results: list[ScenarioResult] = []
    for i in range(n):
        s = base + i
        for res in run_scenarios(names, env, run_dir / f"seed-{s}", quick, s):
            results.append(res)
            if not (res.ok or res.skipped):
                print(f"    FAILED {res.name} with seed {s}: repeat with "
                      f"`{repeat_command(res.name, s, quick)}`")
        # so far, after every seed: a long sweep interrupted still leaves its results
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "sweep.json").write_text(
            json.dumps([asdict(r) for r in results], indent=2, default=str) + "\n")
    failed = [r for r in results if not (r.ok or r.skipped)]
    print(f"vigil faults: sweep done: {len(names)} scenario(s) x {n} seed(s) = "
          f"{len(results)} run(s), {len(failed)} failed")
    for r in failed:
        print(f"    {r.name} seed {r.details.get('seed')}: {'; '.join(r.problems)[:300]}")
    sys.stdout.flush()
    return results


def print_table(results: list[ScenarioResult], header: bool = True) -> None:
    if header:
        print(f"{'scenario':21} {'ok':4} {'prod':>5} {'rm':>5} {'lost':>5} {'dup':>4} "
              f"{'alerts':>7} {'missed':>6} {'dbl':>4} {'escal':>7} {'recovery s':14} "
              f"{'time s':>7}")
    for r in results:
        ok = "skip" if r.skipped else ("ok" if r.ok else "FAIL")
        # a recovery over the scenario's target is marked "!" (reported, not failed)
        over = r.recovery_target_s
        rec = ",".join(f"{x:.1f}" + ("!" if over is not None and x > over else "")
                       for x in r.recovery_s) or "-"
        print(f"{r.name:21} {ok:4} {r.produced:5} {r.in_read_model:5} {r.lost:5} "
              f"{r.duplicated:4} {r.alerts_raised:3}/{r.alerts_expected:<3} {r.missed:6} "
              f"{r.doubled:4} {r.escalations_fired:3}/{r.escalations_due:<3} {rec:14} "
              f"{r.duration_s:7.1f}")
        for p in r.problems:
            print(f"    ! {p}")
        if r.recovery_target_s is not None and r.recovery_s:
            slow = [x for x in r.recovery_s if x > r.recovery_target_s]
            print(f"    - recovery after the process is up: max {max(r.recovery_s):.1f} s, "
                  f"target < {r.recovery_target_s:.0f} s"
                  + (f" ({len(slow)} over)" if slow else ""))
        if r.skipped:
            print(f"    - {r.skipped}")
    sys.stdout.flush()


def _cmd(args: argparse.Namespace) -> int:
    import os

    from vigil.settings import get_settings

    names = args.only or (list(CRASH) if args.sweep else list(SCENARIOS))
    unknown = [n for n in names if n not in SCENARIOS and n not in SKIPPED]
    if unknown:
        print(f"unknown scenario(s) {unknown}; known: {[*SCENARIOS, *SKIPPED]}",
              file=sys.stderr)
        return 2
    # SIGTERM runs the scenarios' clean-up (their pipelines' processes), like Ctrl-C
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    settings = get_settings()
    env = dict(os.environ)
    env.update({"KAFKA_BOOTSTRAP": settings.kafka_bootstrap,
                "DATABASE_URL": settings.database_url, "TRITON_URL": settings.triton_url,
                "S3_ENDPOINT": settings.s3_endpoint})
    run_dir = settings.state_dir / "faults" / time.strftime("%Y%m%d-%H%M%S")
    print(f"vigil faults: run folder {run_dir}")
    try:
        runnable = [n for n in names if n in SCENARIOS]
        if args.sweep:
            results = sweep(runnable, env, run_dir, args.quick, args.sweep, args.seed)
        else:
            results = run_scenarios(runnable, env, run_dir, args.quick, args.seed)
    finally:
        if INFRA & set(names):
            from tools.faults.infra import teardown

            teardown()
    for n in names:
        if n in SKIPPED:
            results.append(ScenarioResult(n, skipped=SKIPPED[n]))
            print_table(results[-1:], header=False)
    if args.json:
        out = Path(args.json)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps([asdict(r) for r in results], indent=2, default=str) + "\n")
    return 0 if all(r.ok or r.skipped for r in results) else 1


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("faults", help="fault scenarios against real processes")
    fsub = p.add_subparsers(dest="faults_command", required=True)
    r = fsub.add_parser("run", help="run fault scenarios, print a table, write JSON")
    r.add_argument("--json", help="write the results to this file")
    r.add_argument("--only", nargs="+", metavar="NAME",
                   help=f"scenarios to run (default all): {', '.join(SCENARIOS)}")
    r.add_argument("--quick", action="store_true", help="one camera, fewer faults")
    r.add_argument("--seed", type=int, default=None,
                   help="random seed of the kill moments (printed with each result)")
    r.add_argument("--sweep", type=int, default=0, metavar="N",
                   help=f"run each scenario with N seeds (default selection: "
                        f"{', '.join(CRASH)}); prints the failing seeds")
    r.set_defaults(func=_cmd)
