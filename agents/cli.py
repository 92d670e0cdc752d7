"""`vigil worker` (the Faust worker), `vigil notifier` (alert delivery) and
`vigil notify retry|failed` (operator commands for failed deliveries).

`vigil worker` is ``faust -A agents.app worker -l info``; the agent modules it runs are
the ones named by ``VIGIL_WORKER_AGENTS`` (see agents/app.py).

Also run as ``python -m agents.cli worker`` (the integration tests do).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


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


def _notify_retry(args: argparse.Namespace) -> int:
    """Publish RetryNotification (the same command as the API's retry route)."""
    import getpass

    from schemas.events import RetryNotification
    from schemas.producer import EventProducer

    if not args.all and not args.event_ids:
        print("name NotificationFailed event ids, or --all", file=sys.stderr)
        return 2
    producer = EventProducer()
    who = args.by or f"cli:{getpass.getuser()}"
    for eid in ["*"] if args.all else args.event_ids:
        cmd = RetryNotification.create(producer="vigil-cli", notification_event_id=eid,
                                       alert_id=args.alert_id or "*", requested_by=who)
        producer.send("notifications", args.alert_id or "*", cmd)
        print(f"retry requested: {eid} (command {cmd.event_id})")
    left = producer.flush()
    return 1 if left else 0


def _notify_failed(args: argparse.Namespace) -> int:
    """Failed deliveries from the notifier's outbox on this host, with the ids to retry."""
    import json

    from agents.notifier import get_notify_settings, outcome_event_id
    from agents.notify_outbox import Outbox

    path = args.outbox or get_notify_settings().outbox_path()
    if not path.exists():
        print(f"no outbox at {path}", file=sys.stderr)
        return 1
    box = Outbox(path)
    try:
        for r in box.rows("failed", args.limit):
            print(json.dumps({"notification_event_id": outcome_event_id("NotificationFailed", r),
                              "alert_id": r.alert_id, "route": r.route_id,
                              "channel": r.channel, "recipient": r.recipient,
                              "attempts": r.attempts, "reason": r.last_error}))
    finally:
        box.close()
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("worker", help="run the Faust worker (agents from VIGIL_WORKER_AGENTS)")
    p.add_argument("-l", "--loglevel", default="info")
    p.set_defaults(func=_worker)
    n = sub.add_parser("notifier", help="deliver alert events to email, MQTT, webhooks, "
                                        "chat and SMS/push (VIGIL_NOTIFY_*)")
    n.set_defaults(func=_notifier)
    notify = sub.add_parser("notify", help="failed notifications: list, retry")
    nsub = notify.add_subparsers(dest="notify_command", required=True)
    r = nsub.add_parser("retry", help="deliver failed notifications again")
    r.add_argument("event_ids", nargs="*", help="NotificationFailed event ids")
    r.add_argument("--all", action="store_true", help="every failed delivery")
    r.add_argument("--alert-id", default=None, help="the alert (message key; optional)")
    r.add_argument("--by", default=None, help="operator name recorded on the command")
    r.set_defaults(func=_notify_retry)
    f = nsub.add_parser("failed", help="list failed deliveries of this host's outbox")
    f.add_argument("--outbox", type=Path, default=None)
    f.add_argument("--limit", type=int, default=100)
    f.set_defaults(func=_notify_failed)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="python -m agents.cli")
    register(parser.add_subparsers(dest="command", required=True))
    ns = parser.parse_args()
    sys.exit(ns.func(ns))
