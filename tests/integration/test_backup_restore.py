"""The restore drill: a real pipeline's data backed up, destroyed, restored, and read again.

The demo's scenarios (edge on three synthetic cameras, Faust worker with inference on Triton,
projector, API) raises alerts with evidence; an API key reads them. Then:

1. `vigil backup DIR` (the scenario's read-model schema and key schema, its own buckets,
   its config topic);
2. after the backup an operator acknowledges an alert (an event, in Kafka) and a second key
   is created (PostgreSQL only): the two sides of the recovery point;
3. the data is destroyed: both schemas dropped, the buckets emptied and deleted (Kafka is
   kept: destroying the broker too would leave `replay --verify` nothing to compare with;
   the config topic's restore into an empty topic is checked under a fresh prefix);
4. `vigil restore DIR`, projector and API started again;
5. `vigil projector check` and `vigil replay --verify` pass, the API answers the same
   alerts (the acknowledgement made after the backup included: the projector resumes from
   the restored offsets), the first key works, the evidence images are byte-identical; the
   key created after the backup is gone (the recovery point of PostgreSQL-only data).

The measured recovery times are written to the test's folder (drill.json) and printed; no
assertion depends on them.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path
from subprocess import run as sp_run
from typing import Any

import httpx
import psycopg
import pytest

from tools.demo import DEFAULT_SCENARIOS
from tools.faults.harness import Pipeline, vigil_argv
from vigil.objects import make_client
from vigil.settings import load_settings

pytestmark = pytest.mark.integration


def _key(out: str) -> str:
    return out.strip().splitlines()[-1].split()[-1]


def _api_view(base: str, key: str, images: bool = True) -> dict[str, Any]:
    """What an operator reads: every alert with its state and evidence, and each evidence
    image's checksum (fetched through its presigned URL; not with `images=False`)."""
    h = {"Authorization": f"Bearer {key}"}
    listing = httpx.get(f"{base}/api/v1/alerts", params={"limit": 500}, headers=h, timeout=30)
    assert listing.status_code == 200, listing.text
    view: dict[str, Any] = {}
    for item in listing.json()["items"]:
        detail = httpx.get(f"{base}/api/v1/alerts/{item['alert_id']}", headers=h, timeout=30)
        assert detail.status_code == 200, detail.text
        d = detail.json()
        evidence = {}
        for ev in d["evidence"]:
            if not images:
                evidence[ev["evidence_id"]] = None
                continue
            img = httpx.get(ev["snapshot_url"], timeout=30)
            assert img.status_code == 200, (ev["evidence_id"], img.status_code)
            evidence[ev["evidence_id"]] = hashlib.sha256(img.content).hexdigest()
        view[item["alert_id"]] = {"state": d["state"], "version": d["version"],
                                  "rule_id": d["rule_id"], "camera_id": d["camera_id"],
                                  "evidence": evidence}
    return view


def _wait_api(p: Pipeline, base: str) -> None:
    p.wait_for(lambda: httpx.get(f"{base}/health/ready", timeout=5).status_code == 200, 90,
               "the API ready")


def _drop_buckets(env: dict[str, str], buckets: list[str]) -> None:
    store = make_client(settings=load_settings(env))
    for b in buckets:
        if store.bucket_exists(b):
            for obj in store.list_objects(b, recursive=True):
                store.remove_object(b, obj.object_name)
            store.remove_bucket(b)


def test_backup_destroy_restore_gives_the_same_alerts_keys_and_evidence(
        stack: dict[str, str], tmp_path: Path) -> None:
    base_env = {**os.environ, **stack}
    p = Pipeline(base_env, tmp_path / "drill", list(DEFAULT_SCENARIOS), "drill")
    buckets = {"VIGIL_BUCKET_SNAPSHOTS": f"{p.prefix}-snap",
               "VIGIL_BUCKET_SEGMENTS": f"{p.prefix}-seg",
               "VIGIL_BUCKET_FRAMES": f"{p.prefix}-frames"}
    keys_schema = f"{p.prefix}_api"
    p.env.update(buckets)
    p.env.update({"VIGIL_API_KEYS_SCHEMA": keys_schema,
                  "VIGIL_PROJECTOR_PROBE_INTERVAL_S": "0"})
    target = tmp_path / "backups"
    api = f"http://127.0.0.1:{p.env['VIGIL_API_PORT']}"
    figures: dict[str, Any] = {}
    try:
        p.setup()
        key = _key(p.run(vigil_argv("api", "keys", "create", "--role", "operator",
                                    "--name", "drill"), "vigil api keys create"))
        p.start("worker", "projector", "edge", "api")
        assert p.wait_drained(420, live=("worker", "projector", "api")), p.positions()
        p.wait_for(lambda: p.query("select count(*) from {s}.evidence")[0][0] > 0, 180,
                   "evidence of an alert in the read model")
        _wait_api(p, api)
        assert _api_view(api, key), "the scenario raised no alert"

        t0 = time.monotonic()
        p.run(vigil_argv("backup", str(target), "--schema", p.prefix, "--schema",
                         keys_schema), "vigil backup", timeout=300)
        figures["backup_s"] = round(time.monotonic() - t0, 2)
        (manifest_file,) = target.glob("backups/*/manifest.json")
        manifest = json.loads(manifest_file.read_text())
        assert manifest["postgres"]["schemas"] == sorted([p.prefix, keys_schema])
        assert sum(b["objects"] for b in manifest["objects"]["buckets"].values()) > 0
        assert manifest["kafka"]["config"]["records"] > 0
        figures["backup_bytes"] = manifest["postgres"]["bytes"] + sum(
            b["bytes"] for b in manifest["objects"]["buckets"].values())

        # after the backup: an event (kept by Kafka) and a key (PostgreSQL only)
        open_alert = next(a for a, v in _api_view(api, key).items()
                          if v["state"] in ("NEW", "ESCALATED"))
        ack = httpx.post(f"{api}/api/v1/alerts/{open_alert}/ack", params={"wait": 20},
                         json={"note": "after the backup"},
                         headers={"Authorization": f"Bearer {key}"}, timeout=40)
        assert ack.status_code in (200, 202), ack.text
        p.wait_for(lambda: _api_view(api, key, False)[open_alert]["state"] == "ACKNOWLEDGED", 60,
                   "the acknowledgement in the read model")
        late_key = _key(p.run(vigil_argv("api", "keys", "create", "--role", "viewer",
                                         "--name", "late"), "vigil api keys create"))
        for name in ("edge", "worker"):  # nothing new after this: the view is final
            p.procs[name].stop()
        views: list[dict[str, Any]] = []

        def settled() -> bool:
            time.sleep(1)
            views.append(_api_view(api, key))
            return len(views) >= 3 and views[-1] == views[-2] == views[-3]

        p.wait_for(settled, 90, "the read model at rest")
        before = views[-1]
        for name in ("api", "projector"):
            p.procs[name].stop()

        # destroy: the schemas and the buckets
        with psycopg.connect(p.dsn, autocommit=True) as conn:
            for schema in (p.prefix, keys_schema):
                conn.execute(f'DROP SCHEMA "{schema}" CASCADE')
        _drop_buckets(p.env, list(buckets.values()))

        t0 = time.monotonic()
        report = json.loads(p.run(vigil_argv("restore", str(target)), "vigil restore",
                                  timeout=600))
        figures["restore_s"] = round(time.monotonic() - t0, 2)
        figures["restore_parts_s"] = {k: v["seconds"] for k, v in report.items()
                                      if isinstance(v, dict)}
        assert report["objects"]["restored"] == sum(
            b["objects"] for b in manifest["objects"]["buckets"].values())
        p.start("projector", "api")
        _wait_api(p, api)
        p.wait_for(lambda: _api_view(api, key, False)[open_alert]["state"] == "ACKNOWLEDGED", 120,
                   "the post-backup acknowledgement projected again from Kafka")
        figures["recovery_s"] = round(time.monotonic() - t0, 2)

        assert _api_view(api, key) == before
        figures.update(alerts=len(before), evidence=sum(len(v["evidence"])
                                                        for v in before.values()),
                       event_after_backup_recovered=True, key_after_backup_lost=True)
        gone = httpx.get(f"{api}/api/v1/alerts",
                         headers={"Authorization": f"Bearer {late_key}"}, timeout=10)
        assert gone.status_code == 401, "a key created after the backup cannot survive it"
        p.procs["projector"].stop()  # replay --verify compares a resting read model
        p.run(vigil_argv("projector", "check"), "vigil projector check", timeout=300)
        p.run(vigil_argv("replay", "--verify"), "vigil replay --verify", timeout=600)

        # the config topic into an empty topic (a lost broker): same configuration
        fresh = {**p.env, "VIGIL_TOPIC_PREFIX": f"{p.prefix}r"}
        res = sp_run(vigil_argv("restore", str(target), "--only", "config"), env=fresh,
                     capture_output=True, text=True, timeout=120)
        assert res.returncode == 0, res.stderr[-2000:]
        assert json.loads(res.stdout)["config"]["republished"] == manifest["kafka"][
            "config"]["keys"]
        site_file = tmp_path / "drill" / "site.yaml"
        dry = sp_run(vigil_argv("config", "apply", str(site_file), "--dry-run"), env=fresh,
                     capture_output=True, text=True, timeout=120)
        assert dry.returncode == 0, dry.stderr[-2000:]
        assert not [ln for ln in dry.stdout.splitlines()
                    if ln.startswith(("upsert", "delete"))], dry.stdout
    finally:
        p.stop_all()
        (tmp_path / "drill.json").write_text(json.dumps(figures, indent=2))
        print("restore drill figures:", json.dumps(figures))
        _drop_buckets(p.env, list(buckets.values()))
        with psycopg.connect(p.dsn, autocommit=True) as conn:
            for schema in (p.prefix, keys_schema):
                conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
