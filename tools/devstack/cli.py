"""`vigil dev up|status|down|logs|env`: the local stack from the command line.

`up` is idempotent and returns only once every service answers (or fails naming the
service, the reason and its log file); `down` stops only processes `up` started.
"""

from __future__ import annotations

import argparse
import shlex
import sys
import time

from tools.devstack.process import tail
from tools.devstack.stack import SERVICE_ORDER, Stack
from vigil.settings import get_settings


def _stack() -> Stack:
    return Stack.from_environment(get_settings())


def _up(args: argparse.Namespace) -> int:
    stack = Stack.from_environment(get_settings(), kafka_secure=args.secure)
    t0 = time.monotonic()
    env = stack.up(args.services)
    took = time.monotonic() - t0
    for st in stack.status(args.services):
        pid = f"pid {st.pid}" if st.pid else st.state
        print(f"{st.name:<9} {st.address:<52} {pid}")
    print(f"stack ready in {took:.1f}s; state in {stack.state_dir}")
    if not args.services or "alertmanager" in args.services:
        print(f"alertmanager delivers to the notifier at 127.0.0.1:{stack.ports.notifier}: "
              f"run it with VIGIL_NOTIFY_METRICS_PORT={stack.ports.notifier}")
    print("point Vigil at it with:  eval \"$(vigil dev env)\"")
    if args.print_env:
        for k, v in env.items():
            print(f"export {k}={shlex.quote(v)}")
    return 0


def _status(args: argparse.Namespace) -> int:
    stack = _stack()
    all_up = True
    for st in stack.status(args.services):
        all_up &= st.state in ("up", "external") and st.detail in ("", "answers")
        pid = str(st.pid) if st.pid else "-"
        extra = f"  ({st.detail})" if st.detail and st.detail != "answers" else ""
        print(f"{st.name:<9} {st.state:<9} pid {pid:<8} {st.address}{extra}")
    return 0 if all_up else 1


def _down(args: argparse.Namespace) -> int:
    stopped = _stack().down(args.services)
    print("stopped: " + (", ".join(stopped) if stopped else "nothing was running"))
    return 0


def _logs(args: argparse.Namespace) -> int:
    stack = _stack()
    svc = stack.select([args.service])[0]
    path = svc.log_file
    if not path.exists():
        print(f"no log yet at {path}", file=sys.stderr)
        return 1
    print(tail(path, args.lines))
    if not args.follow:
        return 0
    with path.open("rb") as fh:
        fh.seek(0, 2)
        while True:  # until Ctrl-C (main() turns it into exit code 130)
            chunk = fh.read()
            if chunk:
                sys.stdout.write(chunk.decode("utf-8", "replace"))
                sys.stdout.flush()
            else:
                time.sleep(0.5)


def _env(args: argparse.Namespace) -> int:
    for k, v in _stack().env().items():
        print(f"export {k}={shlex.quote(v)}")
    return 0


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    dev = sub.add_parser(
        "dev", help="run the local stack (Kafka, PostgreSQL, Triton, S3, Alertmanager)")
    dsub = dev.add_subparsers(dest="dev_command", required=True, metavar="ACTION")
    names = f"services (default all: {', '.join(SERVICE_ORDER)})"

    p = dsub.add_parser("up", help="start the stack and wait until every service answers")
    p.add_argument("services", nargs="*", metavar="SERVICE", help=names)
    p.add_argument("--print-env", action="store_true", help="also print export lines")
    p.add_argument("--secure", action="store_true",
                   help="Kafka with TLS, SASL/SCRAM-SHA-512 and per-service ACLs (first "
                        "start of a broker folder; kept after that); see docs/security.md")
    p.set_defaults(func=_up)

    p = dsub.add_parser("status", help="show each service: up/down, pid, address")
    p.add_argument("services", nargs="*", metavar="SERVICE", help=names)
    p.set_defaults(func=_status)

    p = dsub.add_parser("down", help="stop the processes `dev up` started")
    p.add_argument("services", nargs="*", metavar="SERVICE", help=names)
    p.set_defaults(func=_down)

    p = dsub.add_parser("logs", help="show (or follow) a service's log")
    p.add_argument("service", choices=SERVICE_ORDER)
    p.add_argument("-n", "--lines", type=int, default=50)
    p.add_argument("-f", "--follow", action="store_true")
    p.set_defaults(func=_logs)

    p = dsub.add_parser("env", help="print export lines pointing Vigil at the stack")
    p.set_defaults(func=_env)
