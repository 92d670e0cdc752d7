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
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

BENCHMARKS: dict[str, str] = {
    "edge": "edge_producer.bench",
    "inference": "agents.inference_bench",
    "scene": "agents.scene_bench",
    "alerts": "agents.alerts_bench",
    "projection": "projections.bench",
    "api": "api.bench",
    "e2e": "vigil.e2e_bench",
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


def run_one(name: str, quick: bool = False) -> BenchResult:
    module = importlib.import_module(BENCHMARKS[name])
    result: BenchResult = module.run(quick=quick)
    if result.name != name:
        raise ValueError(f"benchmark {name} reported itself as {result.name}")
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
