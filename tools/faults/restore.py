"""Scenario `restore_drill`: back up, destroy the data, restore, and measure RPO and RTO.

The operations plan's monthly drill as a fault scenario (docs/operations.md, "Backup and
restore"). A pipeline (the demo's three scenarios; one in --quick) raises alerts with
evidence and an API key reads them. Then:

1. `vigil backup DIR` of the pipeline's read-model and key schemas, its own buckets and its
   config topic;
2. after the backup an operator acknowledges an alert (an event, kept by Kafka) and a
   second key is created (PostgreSQL only): the two sides of the recovery point;
3. the fault: both schemas dropped, the buckets emptied and deleted. Kafka is kept (a
   fresh broker would leave `replay --verify` nothing to compare with); the config topic's
   restore into an empty topic is checked under a fresh prefix instead;
4. `vigil restore DIR`, projector and API started again;
5. judged: the set oracle (log vs restored read model), `vigil projector check`,
   `vigil replay --verify`, the API's alerts, states and evidence images byte for byte as
   before the fault (the acknowledgement included), the first key working and the late
   one refused.

Measured (details): backup and restore durations, the recovery time (restore start to
the API serving the post-backup acknowledgement: `recovery_s`), and the recovery point
(the PostgreSQL-only window between the backup's snapshot and the fault, lost by design;
events Kafka kept, recovered).
"""

from __future__ import annotations

import hashlib
import json
import logging
import subprocess
import time
from datetime import UTC, datetime
from typing import Any

import httpx

from tools.faults.crashes import FULL_SCENARIOS, Ctx
from tools.faults.harness import Pipeline, ScenarioResult, vigil_argv

#: httpx logs every request URL at INFO; the evidence URLs are presigned (bearer
#: credentials for a few minutes) and have no place in the run's log
logging.getLogger("httpx").setLevel(logging.WARNING)


def _key(out: str) -> str:
    return out.strip().splitlines()[-1].split()[-1]


def api_view(base: str, key: str, images: bool = True) -> dict[str, Any]:
    """What an operator reads: every alert with its state and evidence, and each evidence
    image's checksum (fetched through its presigned URL; not with `images=False`)."""
    h = {"Authorization": f"Bearer {key}"}
    listing = httpx.get(f"{base}/api/v1/alerts", params={"limit": 500}, headers=h, timeout=30)
    listing.raise_for_status()
    view: dict[str, Any] = {}
    for item in listing.json()["items"]:
        detail = httpx.get(f"{base}/api/v1/alerts/{item['alert_id']}", headers=h, timeout=30)
        detail.raise_for_status()
        d = detail.json()
        evidence: dict[str, str | None] = {}
        for ev in d["evidence"]:
            if not images:
                evidence[ev["evidence_id"]] = None
                continue
            img = httpx.get(ev["snapshot_url"], timeout=30)
            evidence[ev["evidence_id"]] = (hashlib.sha256(img.content).hexdigest()
                                           if img.status_code == 200
                                           else f"HTTP {img.status_code}")
        view[item["alert_id"]] = {"state": d["state"], "version": d["version"],
                                  "rule_id": d["rule_id"], "camera_id": d["camera_id"],
                                  "evidence": evidence}
    return view


def _drop_buckets(p: Pipeline, buckets: list[str]) -> None:
    from vigil.objects import make_client
    from vigil.settings import load_settings

    store = make_client(settings=load_settings(
        {k: v for k, v in p.env.items() if not k.startswith("VIGIL_")}))
    for b in buckets:
        if store.bucket_exists(b):
            for obj in store.list_objects(b, recursive=True):
                store.remove_object(b, obj.object_name)
            store.remove_bucket(b)


def _drop_schemas(p: Pipeline, schemas: list[str]) -> None:
    import psycopg

    with psycopg.connect(p.dsn, autocommit=True) as conn:
        for schema in schemas:
            conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


def restore_drill(ctx: Ctx) -> ScenarioResult:
    res = ScenarioResult("restore_drill")
    scen = ["loiterer"] if ctx.quick else FULL_SCENARIOS
    p = Pipeline(ctx.env, ctx.run_dir / "restore_drill", scen, "drill")
    buckets = {"VIGIL_BUCKET_SNAPSHOTS": f"{p.prefix}-snap",
               "VIGIL_BUCKET_SEGMENTS": f"{p.prefix}-seg",
               "VIGIL_BUCKET_FRAMES": f"{p.prefix}-frames"}
    keys_schema = f"{p.prefix}_api"
    p.env.update(buckets)
    p.env.update({"VIGIL_API_KEYS_SCHEMA": keys_schema,
                  "VIGIL_PROJECTOR_PROBE_INTERVAL_S": "0"})
    target = p.run_dir / "backups"
    api = f"http://127.0.0.1:{p.env['VIGIL_API_PORT']}"
    d = res.details

    def problem(ok: bool, what: str) -> None:
        if not ok:
            res.problems.append(what)

    try:
        p.setup()
        key = _key(p.run(vigil_argv("api", "keys", "create", "--role", "operator",
                                    "--name", "drill"), "vigil api keys create"))
        p.start("worker", "projector", "edge", "api")
        p.drain(res, ctx.quick, live=("worker", "projector", "api"))
        p.wait_for(lambda: p.query("select count(*) from {s}.evidence")[0][0] > 0, 180,
                   "evidence of an alert in the read model")
        p.wait_for(lambda: httpx.get(f"{api}/health/ready", timeout=5).status_code == 200,
                   90, "the API ready")

        t0 = time.monotonic()
        p.run(vigil_argv("backup", str(target), "--schema", p.prefix, "--schema",
                         keys_schema), "vigil backup", timeout=600)
        d["backup_s"] = round(time.monotonic() - t0, 2)
        (manifest_file,) = target.glob("backups/*/manifest.json")
        manifest = json.loads(manifest_file.read_text())
        n_objects = sum(b["objects"] for b in manifest["objects"]["buckets"].values())
        d["backup_bytes"] = manifest["postgres"]["bytes"] + sum(
            b["bytes"] for b in manifest["objects"]["buckets"].values())
        d["backup_objects"] = n_objects
        problem(n_objects > 0, "the backup holds no object")

        # after the backup: an event (kept by Kafka) and a key (PostgreSQL only)
        open_alert = next(a for a, v in api_view(api, key).items()
                          if v["state"] in ("NEW", "ESCALATED"))
        ack = httpx.post(f"{api}/api/v1/alerts/{open_alert}/ack", params={"wait": 20},
                         json={"note": "after the backup"},
                         headers={"Authorization": f"Bearer {key}"}, timeout=40)
        problem(ack.status_code in (200, 202), f"ack answered {ack.status_code}")
        p.wait_for(lambda: api_view(api, key, False)[open_alert]["state"] == "ACKNOWLEDGED",
                   60, "the acknowledgement in the read model")
        late_key = _key(p.run(vigil_argv("api", "keys", "create", "--role", "viewer",
                                         "--name", "late"), "vigil api keys create"))
        for name in ("edge", "worker"):  # nothing new after this: the view is final
            p.procs[name].stop()
        views: list[dict[str, Any]] = []

        def settled() -> bool:
            time.sleep(1)
            views.append(api_view(api, key))
            return len(views) >= 3 and views[-1] == views[-2] == views[-3]

        p.wait_for(settled, 90, "the read model at rest")
        before = views[-1]
        for name in ("api", "projector"):
            p.procs[name].stop()

        # the fault: the schemas and the buckets are gone
        fault_at = datetime.now(UTC)
        _drop_schemas(p, [p.prefix, keys_schema])
        _drop_buckets(p, list(buckets.values()))
        res.faults.append("read-model and key schemas dropped, buckets deleted")
        d["rpo_postgres_only_s"] = round((fault_at - datetime.fromisoformat(
            manifest["postgres"]["snapshot_at"])).total_seconds(), 2)

        t0 = time.monotonic()
        report = json.loads(p.run(vigil_argv("restore", str(target)), "vigil restore",
                                  timeout=900))
        d["restore_s"] = round(time.monotonic() - t0, 2)
        d["restore_parts_s"] = {k: v["seconds"] for k, v in report.items()
                                if isinstance(v, dict)}
        problem(report["objects"]["restored"] == n_objects,
                f"restored {report['objects']['restored']} of {n_objects} objects")
        p.start("projector", "api")
        p.wait_for(lambda: httpx.get(f"{api}/health/ready", timeout=5).status_code == 200,
                   90, "the API ready after the restore")
        p.wait_for(lambda: api_view(api, key, False)[open_alert]["state"] == "ACKNOWLEDGED",
                   120, "the post-backup acknowledgement projected again from Kafka")
        res.recovery_s.append(round(time.monotonic() - t0, 2))
        d["rto_data_s"] = res.recovery_s[-1]

        after = api_view(api, key)
        problem(after == before, f"the API reads differ after the restore: before {before}, "
                                 f"after {after}")
        d.update(alerts=len(after), evidence=sum(len(v["evidence"]) for v in after.values()),
                 events_after_backup_lost=0 if after.get(open_alert, {}).get("state")
                 == "ACKNOWLEDGED" else 1)
        late = httpx.get(f"{api}/api/v1/alerts",
                         headers={"Authorization": f"Bearer {late_key}"}, timeout=10)
        problem(late.status_code == 401,
                f"a key created after the backup answered {late.status_code}, not 401")
        d["postgres_only_after_backup_lost"] = late.status_code == 401
        p.procs["projector"].stop()  # replay --verify compares a resting read model
        # log vs restored read model; alerts are judged above, before against after (the
        # escalation judge would count deadlines that passed while the worker was stopped)
        p.judge_frames(res, check_alerts=False)
        p.run(vigil_argv("projector", "check"), "vigil projector check", timeout=300)
        p.run(vigil_argv("replay", "--verify"), "vigil replay --verify", timeout=900)

        # the config topic into an empty topic (a lost broker): the same configuration
        fresh = {**p.env, "VIGIL_TOPIC_PREFIX": f"{p.prefix}r"}
        out = subprocess.run(vigil_argv("restore", str(target), "--only", "config"),
                             env=fresh, capture_output=True, text=True, timeout=180)
        problem(out.returncode == 0, f"config restore failed: {out.stderr[-1000:]}")
        if out.returncode == 0:
            republished = json.loads(out.stdout)["config"]["republished"]
            problem(republished == manifest["kafka"]["config"]["keys"],
                    f"{republished} config keys republished into an empty topic, "
                    f"{manifest['kafka']['config']['keys']} backed up")
        dry = subprocess.run(vigil_argv("config", "apply", str(p.run_dir / "site.yaml"),
                                        "--dry-run"), env=fresh, capture_output=True,
                             text=True, timeout=180)
        changes = [ln for ln in dry.stdout.splitlines() if ln.startswith(("upsert", "delete"))]
        problem(dry.returncode == 0 and not changes,
                f"the restored config topic differs from the site file: {changes[:5]} "
                f"{dry.stderr[-500:]}")
    finally:
        p.stop_all()
        _drop_buckets(p, list(buckets.values()))
        _drop_schemas(p, [p.prefix, keys_schema])
    return res
