"""Object-store helpers (MinIO/S3): oversized frames, snapshots, video segments.

Refs are ``s3://bucket/key`` strings, which is what events carry (`object_ref`,
`snapshot_ref`), so a consumer needs only the bucket and key to fetch the bytes.
"""

from __future__ import annotations

import io
import threading
from functools import cache
from urllib.parse import urlparse

from minio import Minio

from vigil.settings import get_settings

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


@cache
def client() -> Minio:
    s = get_settings()
    u = urlparse(s.s3_endpoint)
    return Minio(u.netloc, access_key=s.s3_access_key,
                 secret_key=s.s3_secret_key.get_secret_value(), secure=u.scheme == "https",
                 region=s.s3_region)


def put_bytes(bucket: str, key: str, data: bytes, content_type: str) -> str:
    c = client()
    with _lock:
        if bucket not in _made:
            if not c.bucket_exists(bucket):
                c.make_bucket(bucket)
            _made.add(bucket)
    c.put_object(bucket, key, io.BytesIO(data), len(data), content_type=content_type)
    return f"s3://{bucket}/{key}"


def store_frame(jpeg: bytes, key: str) -> str:
    return put_bytes(get_settings().bucket_frames, key, jpeg, "image/jpeg")


def store_snapshot(jpeg: bytes, key: str) -> str:
    """Store an alert snapshot (JPEG) in the snapshots bucket; returns its ``s3://`` ref."""
    return put_bytes(get_settings().bucket_snapshots, key, jpeg, "image/jpeg")
