"""`vigil worker` (the Faust worker) and `vigil notifier` (webhook delivery).

`vigil worker` is ``faust -A agents.app worker -l info`` with one difference: agent modules
that are not in ``VIGIL_WORKER_AGENTS`` are replaced by empty modules before Faust's
autodiscovery runs. Why: the app passes ``origin="agents"``, and Faust appends the origin
to the autodiscover list, so venusian scans (imports) the whole ``agents`` package and
every agent module registers its agents, tables and topics whatever the setting says.
Stubbing the excluded modules makes the setting mean what it says (a worker for alerts
does not subscribe to frames, nor inherit another component's start-up problems).

Also run as ``python -m agents.cli worker`` (the integration tests do).
"""

from __future__ import annotations

import argparse
import sys
import types


def _stub_unselected_agents() -> None:
    from agents.settings import AGENT_MODULES, get_worker_settings

    selected = set(get_worker_settings().agent_modules)
    for module in AGENT_MODULES.values():
        if module not in selected and module not in sys.modules:
            sys.modules[module] = types.ModuleType(module)


def run_worker(loglevel: str = "info") -> int:
    """Run the Faust worker in this process (blocks until it stops)."""
    from vigil.settings import get_settings

    _stub_unselected_agents()
    # Faust creates its data directory without parents.
    from agents.settings import get_worker_settings

    (get_settings().state_dir / "worker" / get_worker_settings().id).parent.mkdir(
        parents=True, exist_ok=True)
    from agents.app import app

    sys.argv = ["faust", "-A", "agents.app", "worker", "-l", loglevel]
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
