"""`vigil backup TARGET` and `vigil restore SOURCE` (docs/operations.md, "Backup and restore").

Why in the command layer: a backup composes stores that belong to different services
(the projector's read models, the API's keys, the object store, the config topic), and no
service may import another; the set itself is vigil_cli/backup_set.py.

`vigil backup TARGET --every 15m` is the scheduler (the compose `backup` service): one
backup at once, then one per interval, each followed by pruning, with metrics and health
on ``VIGIL_BACKUP_METRICS_PORT`` so a backup that stops running pages someone.
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import threading
import time
from typing import Any

from api.cli import duration
from vigil.errors import ConfigError

log = logging.getLogger(__name__)

PARTS = ("postgres", "objects", "config")


def _metrics() -> dict[str, Any]:
    """Declared on first use, so only the backup process exports them."""
    from prometheus_client import Counter, Gauge

    return {
        "runs": Counter("vigil_backup_runs_total", "Backup runs, by outcome", ["outcome"]),
        "last_success": Gauge("vigil_backup_last_success_timestamp_seconds",
                              "Unix time the last successful backup finished"),
        "duration": Gauge("vigil_backup_duration_seconds", "Duration of the last backup"),
        "bytes": Gauge("vigil_backup_size_bytes",
                       "Size of the last backup: database dump plus the objects it lists"),
    }


def _port() -> int:
    import os

    raw = os.environ.get("VIGIL_BACKUP_METRICS_PORT", "0")
    try:
        port = int(raw)
    except ValueError:
        raise ConfigError(f"VIGIL_BACKUP_METRICS_PORT must be a port number, not {raw!r}"
                          ) from None
    if not 0 <= port <= 65535:
        raise ConfigError(f"VIGIL_BACKUP_METRICS_PORT must be 0..65535, not {port}")
    return port


def _summary(info: Any) -> str:
    m = info.manifest
    objs = m["objects"]
    n = sum(b["objects"] for b in objs["buckets"].values())
    size = sum(b["bytes"] for b in objs["buckets"].values())
    return (f"backup {info.backup_id}: {m['duration_s']} s; postgres {m['postgres']['bytes']} "
            f"bytes ({', '.join(m['postgres']['schemas'])}); {n} objects, {size} bytes "
            f"({objs['copied']} copied, {objs['unchanged']} unchanged); config "
            f"{m['kafka']['config']['records']} records")


def _backup(args: argparse.Namespace) -> int:
    from vigil.settings import get_settings
    from vigil_cli import backup_set as bs

    s = get_settings()
    target = bs.open_target(args.target, s)
    policy = bs.KeepPolicy(args.keep_days, args.keep_weeks, args.keep_months)
    if args.list:
        for b in bs.list_backups(target):
            m = b.manifest
            print(f"{b.backup_id}  finished {m['finished_at']}  {m['duration_s']:>7} s  "
                  f"schemas {','.join(m['postgres']['schemas'])}")
        return 0
    if args.verify:
        info = bs.find_backup(target, args.backup)
        problems = bs.verify_backup(target, info, deep=args.deep)
        for p in problems:
            print(p)
        print(f"backup {info.backup_id}: " + ("restorable" if not problems
                                              else f"{len(problems)} problem(s)"))
        return 0 if not problems else 1
    if args.every is None:
        info = bs.run_backup(s, target, args.schema or None)
        print(_summary(info))
        if not args.no_prune:
            print(json.dumps(bs.prune(target, policy)))
        return 0
    return _schedule(args, s, target, policy)


def _schedule(args: argparse.Namespace, s: Any, target: Any, policy: Any) -> int:
    """One backup now, then one per interval (measured from each start); a failed run is
    counted and logged and the next one comes at its time."""
    from vigil_cli import backup_set as bs

    interval = args.every.total_seconds()
    if interval < 60:
        raise ConfigError("--every must be at least 1m")
    m = _metrics()
    for outcome in ("ok", "failed"):
        m["runs"].labels(outcome)
    stop = threading.Event()
    last: dict[str, Any] = {"error": None}
    port = _port()
    if port:
        from vigil.ops_http import OpsServer

        def healthy() -> str:
            if last["error"]:
                raise RuntimeError(f"last backup failed: {last['error']}")
            return "last backup ok" if last.get("ok") else "no backup finished yet"

        ops = OpsServer("backup", s.metrics_host, port)
        ops.check("last_backup", healthy)
        ops.start()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    log.info("backup scheduler running", extra={"target": str(target),
                                                 "interval_s": interval})
    while not stop.is_set():
        began = time.monotonic()
        try:
            info = bs.run_backup(s, target, args.schema or None)
            man = info.manifest
            m["runs"].labels("ok").inc()
            m["last_success"].set(time.time())
            m["duration"].set(man["duration_s"])
            m["bytes"].set(man["postgres"]["bytes"] + sum(
                b["bytes"] for b in man["objects"]["buckets"].values()))
            last.update(error=None, ok=True)
            log.info(_summary(info), extra={"backup_id": info.backup_id})
            if not args.no_prune:
                log.info("pruned", extra=bs.prune(target, policy))
        except Exception as exc:  # the store or database away: retried at the next interval
            m["runs"].labels("failed").inc()
            last["error"] = f"{type(exc).__name__}: {str(exc)[:300]}"
            log.exception("backup failed")
        stop.wait(max(0.0, interval - (time.monotonic() - began)))
    return 0


def _restore(args: argparse.Namespace) -> int:
    from vigil.settings import get_settings
    from vigil_cli import backup_set as bs

    s = get_settings()
    parts = set(args.only.split(",")) if args.only else set(PARTS)
    unknown = parts - set(PARTS)
    if unknown:
        raise ConfigError(f"--only: unknown part(s) {', '.join(sorted(unknown))}; "
                          f"known: {', '.join(PARTS)}")
    target = bs.open_target(args.source, s)
    info = bs.find_backup(target, args.backup)
    report = bs.run_restore(s, target, info, parts, force=args.force)
    print(json.dumps(report, indent=2))
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("backup", help="back up PostgreSQL, the buckets and the config topic")
    p.add_argument("target", help="a directory, or s3://bucket/prefix")
    p.add_argument("--schema", action="append", metavar="SCHEMA",
                   help="back up only this schema (repeatable; default: every schema that "
                        "is not PostgreSQL's own)")
    p.add_argument("--every", type=duration, metavar="DURATION",
                   help="keep running: one backup now, then one per DURATION (15m, 1h, 1d)")
    p.add_argument("--keep-days", type=float, default=30,
                   help="keep every backup of the last N days (30)")
    p.add_argument("--keep-weeks", type=int, default=12,
                   help="and the newest of each of the last N weeks (12)")
    p.add_argument("--keep-months", type=int, default=12,
                   help="and the newest of each of the last N months (12)")
    p.add_argument("--no-prune", action="store_true", help="delete nothing")
    p.add_argument("--list", action="store_true", help="list the complete backups")
    p.add_argument("--verify", action="store_true",
                   help="check a backup's checksums and that its blobs exist")
    p.add_argument("--deep", action="store_true", help="with --verify: re-hash every blob")
    p.add_argument("--backup", metavar="ID", help="with --verify: which one (default latest)")
    p.set_defaults(func=_backup)

    r = sub.add_parser("restore", help="restore a backup into a fresh stack")
    r.add_argument("source", help="a directory, or s3://bucket/prefix")
    r.add_argument("--backup", metavar="ID", help="which backup (default: the latest)")
    r.add_argument("--only", metavar="PARTS",
                   help="comma-separated subset of postgres,objects,config")
    r.add_argument("--force", action="store_true",
                   help="drop the backup's schemas first if they already hold tables")
    r.set_defaults(func=_restore)
