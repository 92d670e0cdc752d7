"""The `vigil` command: one entry point, subcommands registered by each component.

This is the composition root: the only module that imports every layer (the services and,
lazily, the tooling); nothing imports it.

Each module in COMMAND_MODULES exposes ``register(subparsers)`` and sets ``func`` on its
parsers; a command's ``func(args)`` returns the process exit code.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from vigil.errors import VigilError

COMMAND_MODULES = (
    "tools.devstack.cli",  # dev up|status|down|logs
    "vigil_cli.topics",  # topics apply|list
    "vigil_cli.config",  # config apply|validate
    "vigil_cli.backup",  # backup, restore
    "edge_producer.cli",  # edge run, sim render|serve-rtsp|truth
    "agents.cli",  # worker
    "projections.cli",  # db upgrade, project, replay, audit, erase
    "api.cli",  # api serve
    "tools.bench.runner",  # bench NAME --json FILE
    "tools.demo",  # demo
    "tools.faults.cli",  # faults run
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="vigil", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            # a component not built yet, or the tooling (tools/), which the image leaves out
            if exc.name is not None and (name == exc.name or name.startswith(exc.name + ".")):
                continue
            raise
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    from vigil.logs import service_for_command, setup_logging

    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        setup_logging(service=service_for_command(args.command))
        return int(args.func(args) or 0)
    except VigilError as exc:
        print(f"vigil {args.command}: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
