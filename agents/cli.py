"""`vigil worker` (the Faust worker) and `vigil notifier` (webhook delivery).

`vigil worker` is ``faust -A agents.app worker -l info``; the agent modules it runs are
the ones named by ``VIGIL_WORKER_AGENTS`` (see agents/app.py).

Also run as ``python -m agents.cli worker`` (the integration tests do).
"""

from __future__ import annotations

import argparse
import sys


def run_worker(loglevel: str = "info") -> int:
    """Run the Faust worker in this process (blocks until it stops)."""
    from agents.app import app
    from vigil.settings import get_settings

    # --quiet: no banner or "starting➢" progress on stdout, which would interleave with
    # the JSON log lines (each line of a log must parse; docs/operations.md, "Logs").
    quiet = ["--quiet"] if get_settings().log_format == "json" else []
    sys.argv = ["faust", "-A", "agents.app", *quiet, "worker", "-l", loglevel]
    app.main()
    return 0


def _worker(args: argparse.Namespace) -> int:
    return run_worker(args.loglevel)


def _notifier(args: argparse.Namespace) -> int:
    from agents.notifier import main

    return main()


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("worker", help="run the Faust worker (agents from VIGIL_WORKER_AGENTS)")
    p.add_argument("-l", "--loglevel", default="info")
    p.set_defaults(func=_worker)
    n = sub.add_parser("notifier", help="deliver alert events to webhooks (VIGIL_NOTIFY_*)")
    n.set_defaults(func=_notifier)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="python -m agents.cli")
    register(parser.add_subparsers(dest="command", required=True))
    ns = parser.parse_args()
    sys.exit(ns.func(ns))
