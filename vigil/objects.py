"""Object-store helpers (MinIO/S3): oversized frames, snapshots, video segments.

Refs are ``s3://bucket/key`` strings, which is what events carry (`object_ref`,
`snapshot_ref`), so a consumer needs only the bucket and key to fetch the bytes.
"""

from __future__ import annotations

import io
import threading
from functools import cache
from urllib.parse import urlparse

import urllib3
from minio import Minio
from minio.error import S3Error

from vigil.settings import Settings, get_settings

_made: set[str] = set()
_lock = threading.Lock()


def split_ref(ref: str, default_bucket: str, known: tuple[str, ...] | list[str]
              ) -> tuple[str, str]:
    """An object reference as (bucket, key): ``s3://bucket/key``, ``bucket/key`` for a
    known bucket, or a bare key in the default bucket. The one parser of the refs this
    module writes: the API (presigned URLs) and the worker (frame fetch) both use it."""
    if ref.startswith("s3://"):
        bucket, _, key = ref[5:].partition("/")
        return bucket, key
    head, sep, tail = ref.partition("/")
    if sep and head in known:
        return head, tail
    return default_bucket, ref


def make_client(http_client: urllib3.PoolManager | None = None,
                settings: Settings | None = None) -> Minio:
    """A new client of the configured store: the one place that turns S3_* settings into a
    Minio client (`http_client` for callers that need their own timeouts/retries)."""
    s = settings or get_settings()
    u = urlparse(s.s3_endpoint)
    return Minio(u.netloc, access_key=s.s3_access_key,
                 secret_key=s.s3_secret_key.get_secret_value(), secure=u.scheme == "https",
                 region=s.s3_region, http_client=http_client)


@cache
def client() -> Minio:
    return make_client()


@cache
def failfast_client() -> Minio:
    """For a caller that retries on its own (the segment uploader): short timeouts and no
    retries inside the client, so an unreachable store is noticed in seconds, not after
    the client's own retry loop."""
    return make_client(urllib3.PoolManager(
        timeout=urllib3.Timeout(connect=5, read=60), retries=urllib3.Retry(total=0)))


def ref_for(bucket: str, key: str) -> str:
    return f"s3://{bucket}/{key}"


def _ensure_bucket(c: Minio, bucket: str) -> None:
    with _lock:
        if bucket not in _made:
            if not c.bucket_exists(bucket):
                c.make_bucket(bucket)
            _made.add(bucket)


def get_bytes(bucket: str, key: str, c: Minio | None = None) -> bytes:
    """An object's whole content, its connection handed back to the pool (errors raise:
    `S3Error` for a missing object, urllib3's for a store that does not answer)."""
    c = c or client()
    resp = c.get_object(bucket, key)
    try:
        return bytes(resp.read())
    finally:
        resp.close()
        resp.release_conn()


def put_bytes(bucket: str, key: str, data: bytes, content_type: str,
              c: Minio | None = None) -> str:
    c = c or client()
    _ensure_bucket(c, bucket)
    c.put_object(bucket, key, io.BytesIO(data), len(data), content_type=content_type)
    return ref_for(bucket, key)


def object_size(bucket: str, key: str, c: Minio | None = None) -> int | None:
    """The size of an existing object, None if there is none (other errors raise)."""
    c = c or client()
    try:
        return c.stat_object(bucket, key).size
    except S3Error as exc:
        if exc.code in ("NoSuchKey", "NoSuchBucket", "NoSuchObject", "ResourceNotFound"):
            return None
        raise


def store_frame(jpeg: bytes, key: str) -> str:
    return put_bytes(get_settings().bucket_frames, key, jpeg, "image/jpeg")


def store_snapshot(jpeg: bytes, key: str) -> str:
    """Store an alert snapshot (JPEG) in the snapshots bucket; returns its ``s3://`` ref."""
    return put_bytes(get_settings().bucket_snapshots, key, jpeg, "image/jpeg")
