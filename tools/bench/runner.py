"""`vigil bench NAME --json FILE`: run one benchmark (or `all`) and write its result.

Every benchmark measures its own baseline in the same run on the same machine (raw
consumer throughput, plain COPY, direct Triton calls, ...), so the ratio means something
even on a noisy two-core box. A benchmark module exposes ``run(quick: bool) ->
BenchResult``; `quick` shortens it for smoke tests.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import platform
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

BENCHMARKS: dict[str, str] = {
    "edge": "tools.bench.edge",
    "inference": "tools.bench.inference",
    "scene": "tools.bench.scene",
    "alerts": "tools.bench.alerts",
    "projection": "tools.bench.projection",
    "api": "tools.bench.api",
    "e2e": "tools.bench.e2e",
    "notify": "tools.bench.notify",
}


@dataclass
class BenchResult:
    name: str
    value: float
    unit: str
    baseline: float
    ratio: float  # ours / reference, higher is better
    details: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, default=str)


def percentile(values: list[float], q: float) -> float:
    """The sample at rank round(q * (n - 1)) of the sorted values (q in [0, 1]), NaN for
    none: a value that was measured, never an interpolation between two. The one
    percentile of every benchmark, so p99s of different benchmarks mean the same."""
    if not values:
        return float("nan")
    s = sorted(values)
    return s[min(len(s) - 1, max(0, round(q * (len(s) - 1))))]


#: iterations of the calibration loop (about 0.2-0.5 s of one core)
CALIBRATION_LOOPS = 2_000_000


def calibration_ms(loops: int = CALIBRATION_LOOPS) -> float:
    """Milliseconds one core takes for a fixed pure-Python loop, best of three.

    Absolute figures (frames/s, seconds per replay) move with the machine a session
    happens to get: two "2-core" machines here differed by 2x in single-core speed. The
    baseline in the same run makes the ratio comparable; this figure makes the absolute
    numbers of two runs comparable, or shows that they are not."""
    best = float("inf")
    for _ in range(3):
        started = time.perf_counter()
        total = 0
        for i in range(loops):
            total += i
        best = min(best, time.perf_counter() - started)
    return round(best * 1000, 1)


def machine() -> dict[str, Any]:
    """What the numbers were measured on (recorded in every result's details)."""
    return {"cpus": os.cpu_count(), "processor": platform.processor() or platform.machine(),
            "python": platform.python_version(),
            "calibration_loop_ms": calibration_ms(),
            "calibration_loops": CALIBRATION_LOOPS,
            "loadavg_1m_before": round(os.getloadavg()[0], 2)}


def run_one(name: str, quick: bool = False) -> BenchResult:
    module = importlib.import_module(BENCHMARKS[name])
    host = machine()
    result: BenchResult = module.run(quick=quick)
    if result.name != name:
        raise ValueError(f"benchmark {name} reported itself as {result.name}")
    result.details.setdefault("machine", host)
    return result


def _print_table(results: list[BenchResult]) -> None:
    print(f"{'benchmark':12} {'value':>14} {'unit':14} {'baseline':>14} {'ratio':>7}")
    for r in results:
        print(f"{r.name:12} {r.value:14.2f} {r.unit:14} {r.baseline:14.2f} {r.ratio:7.3f}")


def _cmd(args: argparse.Namespace) -> int:
    names = list(BENCHMARKS) if args.name == "all" else [args.name]
    results = []
    failed = []
    for name in names:
        try:
            results.append(run_one(name, quick=args.quick))
        except Exception as exc:  # one failing benchmark must not hide the others
            print(f"bench {name} failed: {type(exc).__name__}: {exc}", file=sys.stderr)
            failed.append(name)
    _print_table(results)
    if args.json:
        out = Path(args.json)
        if args.name == "all":
            out.mkdir(parents=True, exist_ok=True)
            for r in results:
                (out / f"{r.name}.json").write_text(r.to_json() + "\n")
        else:
            out.parent.mkdir(parents=True, exist_ok=True)
            if results:
                out.write_text(results[0].to_json() + "\n")
    return 1 if failed else 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("bench", help="run a benchmark and write its JSON result")
    p.add_argument("name", choices=[*BENCHMARKS, "all"])
    p.add_argument("--json", help="output file (a folder for `all`)")
    p.add_argument("--quick", action="store_true", help="a short run, for smoke tests")
    p.set_defaults(func=_cmd)
