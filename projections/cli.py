"""CLI: `vigil db upgrade|retention`, `vigil project`, `vigil projector check`,
`vigil replay`, `vigil audit alert|verify-access`, `vigil erase`. Heavy imports happen
inside the commands so `vigil --help` stays fast."""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
import time
from collections.abc import Iterator
from typing import Any

from prometheus_client.registry import Collector

log = logging.getLogger(__name__)


def _settings():
    from projections.settings import get_projector_settings
    from vigil.settings import get_settings

    return get_settings(), get_projector_settings()


def _cmd_upgrade(args: argparse.Namespace) -> int:
    from projections.migrate import upgrade

    s, ps = _settings()
    schema = args.schema or ps.schema_name
    applied = upgrade(s.database_dsn, schema, ps.embedding_dim)
    print(f"schema {schema}: " + (", ".join(applied) if applied else "up to date"))
    return 0


def _cmd_retention(args: argparse.Namespace) -> int:
    """Every retention policy once (the projector also runs them on its own timer)."""
    from projections.retention_service import object_store, run_all
    from schemas.producer import EventProducer

    s, ps = _settings()
    result = run_all(s.database_dsn, args.schema or ps.schema_name, ps, store=object_store(),
                     producer=EventProducer())
    print(json.dumps(result, indent=2, default=str))
    return 0 if result["outcome"] == "ok" else 1


class AlertsOpenCollector(Collector):
    """``vigil_alerts_open{severity,state}``: alerts not RESOLVED, counted from the alerts
    read model at scrape time.

    Why here: the projector is the single writer of that read model and runs once per
    schema (an advisory lock enforces it), so the gauge has exactly one exporter; workers
    (one per partition subset, several replicas) and API replicas would each see only a
    part or count the same alerts twice. A query at scrape time (every 15 s, an indexed
    GROUP BY on open alerts) is always consistent with the table, including after a
    replay, which incrementally maintained counters are not. Severity x open-state
    combinations with no alert are exported as 0 so alert rules and panels see a series.
    """

    SEVERITIES = ("info", "warning", "critical")
    STATES = ("NEW", "ESCALATED", "ACKNOWLEDGED")

    def __init__(self, dsn: str, schema: str) -> None:
        self.dsn = dsn
        self.schema = schema

    def _family(self) -> Any:
        from prometheus_client.core import GaugeMetricFamily

        return GaugeMetricFamily("vigil_alerts_open", "Alerts not resolved, from the read model",
                                 labels=["severity", "state"])

    def describe(self) -> Iterator[Any]:
        """Names only, so registering does not query the database."""
        yield self._family()

    def collect(self) -> Iterator[Any]:
        import psycopg
        from psycopg import sql

        counts = {(sev, st): 0 for sev in self.SEVERITIES for st in self.STATES}
        try:
            with psycopg.connect(self.dsn, autocommit=True, connect_timeout=3) as conn:
                rows = conn.execute(sql.SQL(
                    "SELECT severity, state, count(*) FROM {}.alerts "
                    "WHERE state <> 'RESOLVED' GROUP BY severity, state"
                ).format(sql.Identifier(self.schema))).fetchall()
        except psycopg.Error as exc:  # DB away: no sample beats a wrong zero
            log.warning("vigil_alerts_open not collected: %s", exc)
            return
        for severity, state, n in rows:
            counts[(str(severity), str(state))] = int(n)
        family = self._family()
        for (severity, state), n in sorted(counts.items()):
            family.add_metric([severity, state], n)
        yield family


def _ping_postgres(dsn: str) -> str:
    import psycopg

    with psycopg.connect(dsn, autocommit=True, connect_timeout=3) as conn:
        conn.execute("SELECT 1")
    return "SELECT 1 answered"


def _fresh(proj: Any, limit_s: float) -> str:
    """Readiness fails while the read model is older than `limit_s` (projector stuck or
    behind)."""
    age = time.time() - proj.caught_up_at
    if age > limit_s:
        raise RuntimeError(f"read model {age:.0f} s behind Kafka (limit {limit_s:g} s)")
    return f"caught up {age:.1f} s ago"


def _cmd_project(args: argparse.Namespace) -> int:
    from prometheus_client import REGISTRY

    from projections.migrate import upgrade
    from projections.projector import Projector
    from schemas.producer import EventProducer
    from vigil.ops_http import OpsServer

    s, ps = _settings()
    schema = args.schema or ps.schema_name
    upgrade(s.database_dsn, schema, ps.embedding_dim)
    proj = Projector(dsn=s.database_dsn, schema=schema, prefix=s.topic_prefix, settings=ps,
                     producer=EventProducer())
    if ps.metrics_port:
        import projections.probe  # declares vigil_probe_*
        import projections.retention_service  # noqa: F401  (declares vigil_retention_*)

        REGISTRY.register(AlertsOpenCollector(s.database_dsn, schema))
        ops = OpsServer("projector", s.metrics_host, ps.metrics_port)
        ops.check("postgres", lambda: _ping_postgres(s.database_dsn))
        ops.check("read_model", lambda: _fresh(proj, ps.read_model_stale_s))
        ops.start()
    timer = None
    if ps.retention_interval_s > 0:
        from projections.retention_service import RetentionTimer

        timer = RetentionTimer(s.database_dsn, schema, ps, proj.producer,
                               ps.retention_interval_s).start()
    probe = None
    if ps.probe_interval_s > 0:
        from projections.probe import Probe

        probe = Probe(s.database_dsn, schema, proj.producer, ps.probe_interval_s,
                      ps.probe_timeout_s).start()
    signal.signal(signal.SIGTERM, lambda *_: proj.stop())
    signal.signal(signal.SIGINT, lambda *_: proj.stop())
    log.info("projector running", extra={"schema": schema, "prefix": s.topic_prefix})
    try:
        stats = proj.run(max_seconds=args.max_seconds)
    finally:
        for t in (timer, probe):
            if t is not None:
                t.stop()
        proj.close()
    log.info("projector stopped", extra={"messages": stats.messages, "batches": stats.batches})
    return 0


def _cmd_check(args: argparse.Namespace) -> int:
    from projections.check import check_schema

    s, ps = _settings()
    report = check_schema(s.database_dsn, args.schema or ps.schema_name, s.topic_prefix,
                          s.kafka_bootstrap, consumer_name=args.consumer or ps.consumer)
    print(json.dumps(report.to_dict(), indent=2, default=str) if args.json else report.text())
    return 0 if report.ok else 1


def _cmd_replay(args: argparse.Namespace) -> int:
    from projections.replay import replay_into, verify

    s, ps = _settings()
    if args.verify:
        result = verify(s.database_dsn, s.topic_prefix, ps, live_schema=args.live or ps.schema_name,
                        keep=args.keep)
        if args.json:
            print(json.dumps(result.to_dict(), indent=2, default=str))
        else:
            print(result.text())
        return 0 if result.equal else 1
    if not args.into:
        print("replay: give --into SCHEMA or --verify", file=sys.stderr)
        return 2
    stats = replay_into(s.database_dsn, s.topic_prefix, ps, args.into, force=args.force)
    print(f"replayed {stats.messages} messages into schema {args.into} "
          f"({stats.dead_letters} dead letters; {stats.workers} consumer process(es), "
          f"load {stats.load_s:.1f} s, index build {stats.index_s:.1f} s: "
          f"HNSW {stats.hnsw_s:.1f} s, B-trees {stats.btree_s:.1f} s)")
    return 0


def _cmd_audit(args: argparse.Namespace) -> int:
    from projections.audit import audit_alert

    s, ps = _settings()
    chain = audit_alert(s.database_dsn, args.schema or ps.schema_name, s.topic_prefix,
                        args.alert_id)
    print(json.dumps(chain.to_dict(), indent=2, default=str) if args.json else chain.text())
    return 0 if chain.found else 1


def _cmd_verify_access(args: argparse.Namespace) -> int:
    from projections.access_log import verify_access
    from schemas.topics import topic_name

    s, ps = _settings()
    result = verify_access(s.database_dsn, args.schema or ps.schema_name,
                           None if args.no_log else topic_name("access"))
    if args.json:
        print(json.dumps({"ok": result.ok, "rows": result.rows,
                          "log_records": result.log_records,
                          "log_start_offset": result.log_start_offset,
                          "pending": result.pending,
                          "problems": result.problems}, indent=2))
    else:
        for problem in result.problems:
            print(problem)
        where = "" if args.no_log else (f", {result.log_records} on the log "
                                         f"({result.pending} not projected yet)")
        verdict = "intact" if result.ok else f"TAMPERED ({len(result.problems)} problem(s))"
        print(f"access record: {result.rows} row(s){where}: {verdict}")
    return 0 if result.ok else 1


def _cmd_erase(args: argparse.Namespace) -> int:
    from projections.erasure import erase

    s, ps = _settings()
    result = erase(s, ps, args.schema or ps.schema_name, args.detection, args.requested_by,
                   args.reason, extra_refs=args.snapshot)
    print(json.dumps(result, indent=2, default=str))
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    db = sub.add_parser("db", help="read-model database: migrations and retention")
    dbs = db.add_subparsers(dest="db_command", required=True)
    p = dbs.add_parser("upgrade", help="apply pending migrations to the read-model schema")
    p.add_argument("--schema", help="default: VIGIL_PROJECTOR_SCHEMA (vigil)")
    p.set_defaults(func=_cmd_upgrade)
    p = dbs.add_parser("retention",
                       help="apply every retention policy once (the projector runs them too)")
    p.add_argument("--schema")
    p.set_defaults(func=_cmd_retention)

    p = sub.add_parser("project", help="run the projector (all public topics -> PostgreSQL)")
    p.add_argument("--schema")
    p.add_argument("--max-seconds", type=float, default=None, help="stop after this long")
    p.set_defaults(func=_cmd_project)

    p = sub.add_parser("projector", help="projector tools")
    psub = p.add_subparsers(dest="projector_command", required=True)
    c = psub.add_parser("check", help="report events below the stored offsets without "
                                      "their row (exit 1 if any)")
    c.add_argument("--schema", help="default: VIGIL_PROJECTOR_SCHEMA (vigil)")
    c.add_argument("--consumer", help="projector_offsets consumer (default: projector)")
    c.add_argument("--json", action="store_true")
    c.set_defaults(func=_cmd_check)

    p = sub.add_parser("replay", help="rebuild read models from offset 0 / verify them")
    p.add_argument("--into", metavar="SCHEMA", help="fresh schema to rebuild into")
    p.add_argument("--force", action="store_true", help="drop SCHEMA first if it exists")
    p.add_argument("--verify", action="store_true",
                   help="rebuild into a temporary schema and compare with the live one")
    p.add_argument("--live", metavar="SCHEMA", help="live schema to compare (default vigil)")
    p.add_argument("--keep", action="store_true", help="keep the temporary schema")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_cmd_replay)

    p = sub.add_parser("audit", help="explain an alert from the log")
    asub = p.add_subparsers(dest="audit_command", required=True)
    a = asub.add_parser("alert", help="alert -> actions -> scene events -> detections -> frames")
    a.add_argument("alert_id")
    a.add_argument("--schema")
    a.add_argument("--json", action="store_true")
    a.set_defaults(func=_cmd_audit)
    a = asub.add_parser("verify-access",
                        help="check the access record's hash chain against the log")
    a.add_argument("--schema")
    a.add_argument("--no-log", action="store_true",
                   help="check the chain only, without reading the vigil.access topic")
    a.add_argument("--json", action="store_true")
    a.set_defaults(func=_cmd_verify_access)

    p = sub.add_parser("erase", help="right to erasure: publish AppearanceErased and delete")
    p.add_argument("--detection", nargs="+", required=True, metavar="ID")
    p.add_argument("--requested-by", default="operator")
    p.add_argument("--reason", default="data subject request")
    p.add_argument("--snapshot", nargs="*", default=[], metavar="S3_REF",
                   help="more objects to delete (s3://bucket/key)")
    p.add_argument("--schema")
    p.set_defaults(func=_cmd_erase)
