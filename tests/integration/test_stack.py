"""The local stack really answers, restarts idempotently and fails with clear messages.

Runs against the session's test stack (`Stack.for_tests`, its own ports and state
folder), never against a developer's `vigil dev up`.
"""

from __future__ import annotations

import socket
import time
import uuid
from pathlib import Path

import numpy as np
import psycopg
import pytest
from confluent_kafka.admin import AdminClient

from tools.devstack.process import port_is_free
from tools.devstack.stack import (
    MODEL_REPOSITORY,
    Ports,
    Stack,
    StackError,
    model_names,
)
from vigil.settings import get_settings

pytestmark = pytest.mark.integration


def test_kafka_answers_metadata(stack: dict[str, str]) -> None:
    md = AdminClient({"bootstrap.servers": stack["KAFKA_BOOTSTRAP"]}).list_topics(timeout=10)
    assert len(md.brokers) == 1


def test_postgres_select_one_and_pgvector(stack: dict[str, str]) -> None:
    dsn = "postgresql://" + stack["DATABASE_URL"].split("://", 1)[1]
    with psycopg.connect(dsn, connect_timeout=5) as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)
        assert conn.execute(
            "SELECT 1 FROM pg_extension WHERE extname = 'vector'").fetchone() == (1,)
        dist = conn.execute("SELECT '[1,0]'::vector <=> '[0,1]'::vector").fetchone()
        assert dist is not None and dist[0] == pytest.approx(1.0)


def test_triton_every_model_ready_and_identity_infers(stack: dict[str, str]) -> None:
    import tritonclient.grpc as grpcclient

    client = grpcclient.InferenceServerClient(stack["TRITON_URL"])
    try:
        assert client.is_server_ready(client_timeout=5)
        names = model_names(MODEL_REPOSITORY)
        assert "identity" in names
        for name in names:
            assert client.is_model_ready(name, client_timeout=5), name
        data = np.arange(4, dtype=np.float32)
        inp = grpcclient.InferInput("INPUT0", list(data.shape), "FP32")
        inp.set_data_from_numpy(data)
        res = client.infer("identity", [inp], client_timeout=30)
        np.testing.assert_array_equal(res.as_numpy("OUTPUT0"), data)
    finally:
        client.close()


def _minio(endpoint: str):  # type: ignore[no-untyped-def]
    from minio import Minio

    s = get_settings()
    return Minio(endpoint.split("://", 1)[1], access_key=s.s3_access_key,
                 secret_key=s.s3_secret_key.get_secret_value(), secure=False,
                 region=s.s3_region)


def test_object_store_lists_the_buckets(stack: dict[str, str]) -> None:
    import io

    client = _minio(stack["S3_ENDPOINT"])
    names = {b.name for b in client.list_buckets()}
    assert set(get_settings().buckets) <= names
    bucket = get_settings().bucket_snapshots
    client.put_object(bucket, "probe.txt", io.BytesIO(b"hello"), 5)
    assert client.get_object(bucket, "probe.txt").read() == b"hello"


def test_up_is_idempotent_and_status_shows_pids(stack: dict[str, str]) -> None:
    st = Stack.for_tests(Path(stack["VIGIL_STATE_DIR"]))
    before = {s.name: s.pid for s in st.status()}
    assert all(s.state == "up" for s in st.status())
    t0 = time.monotonic()
    assert st.up() == stack
    assert time.monotonic() - t0 < 30
    assert {s.name: s.pid for s in st.status()} == before


def test_objects_survive_a_restart_of_the_object_store(stack: dict[str, str]) -> None:
    """Evidence must outlive the process that stores it: write, restart the server, read."""
    import io
    import os

    bucket = get_settings().bucket_segments
    key = f"restart-probe/{uuid.uuid4().hex}.bin"
    data = os.urandom(200_000)
    _minio(stack["S3_ENDPOINT"]).put_object(bucket, key, io.BytesIO(data), len(data),
                                            content_type="video/mp4")
    st = Stack.for_tests(Path(stack["VIGIL_STATE_DIR"]))
    [before] = st.status(["s3"])
    assert st.down(["s3"]) == ["s3"]
    [s3] = st.status(["s3"])
    assert s3.state == "down" and s3.pid is None
    assert port_is_free(st.ports.s3)
    st.up(["s3"])
    [after] = st.status(["s3"])
    assert after.pid != before.pid
    client = _minio(stack["S3_ENDPOINT"])
    assert set(get_settings().buckets) <= {b.name for b in client.list_buckets()}
    assert client.get_object(bucket, key).read() == data
    assert client.stat_object(bucket, key).content_type == "video/mp4"


def test_presigned_get_and_put_urls_work_and_a_tampered_one_is_refused(
        stack: dict[str, str]) -> None:
    """The API hands out presigned URLs: the store must check their signature."""
    import urllib.error
    import urllib.request
    from datetime import timedelta

    client = _minio(stack["S3_ENDPOINT"])
    bucket = get_settings().bucket_snapshots
    key = f"presigned/{uuid.uuid4().hex}.jpg"
    put_url = client.presigned_put_object(bucket, key, expires=timedelta(minutes=5))
    req = urllib.request.Request(put_url, data=b"\xff\xd8put-by-url", method="PUT")
    with urllib.request.urlopen(req, timeout=10) as resp:
        assert resp.status == 200
    get_url = client.presigned_get_object(bucket, key, expires=timedelta(minutes=5))
    with urllib.request.urlopen(get_url, timeout=10) as resp:
        assert resp.read() == b"\xff\xd8put-by-url"
    tampered = get_url.replace("X-Amz-Signature=", "X-Amz-Signature=0")
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(tampered, timeout=10)
    assert err.value.code == 403
    other_key = get_url.replace(key, key + "x")  # a URL signed for another object
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(other_key, timeout=10)
    assert err.value.code == 403


def test_multipart_upload_assembles_the_parts(stack: dict[str, str]) -> None:
    """Exports and long clips are uploaded in parts (the client switches to multipart
    above `part_size`); the object read back is the parts in order."""
    import hashlib
    import io
    import os

    client = _minio(stack["S3_ENDPOINT"])
    bucket = get_settings().bucket_segments
    key = f"multipart/{uuid.uuid4().hex}.mp4"
    part = 5 * 2**20  # the S3 minimum part size
    data = os.urandom(2 * part + 12345)
    result = client.put_object(bucket, key, io.BytesIO(data), len(data), part_size=part)
    assert result.etag.endswith("-3")  # S3's multipart ETag: md5 of the parts + "-3"
    got = client.get_object(bucket, key).read()
    assert len(got) == len(data)
    assert hashlib.sha256(got).digest() == hashlib.sha256(data).digest()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_taken_port_names_the_service(tmp_path: Path) -> None:
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        taken = squatter.getsockname()[1]
        ports = Ports(_free_port(), _free_port(), _free_port(), _free_port(), _free_port(),
                      _free_port(), taken, _free_port(), _free_port())
        st = Stack(tmp_path / "state", ports)
        with pytest.raises(StackError) as err:
            st.up(["s3"])
    assert err.value.service == "s3"
    assert f"127.0.0.1:{taken}" in str(err.value) and "taken" in str(err.value)
    assert not (tmp_path / "state" / "run" / "s3.pid").exists()


def test_missing_java_jars_and_triton_say_what_to_do(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ports = Ports(*(_free_port() for _ in range(9)))
    st = Stack(tmp_path / "state", ports, kafka_home=str(tmp_path / "no-kafka"),
               triton_venv=tmp_path / "no-venv")
    with pytest.raises(StackError, match=r"kafka: Kafka jars not found .*KAFKA_HOME"):
        st.up(["kafka"])
    with pytest.raises(StackError, match=r"triton: tritonserver not found .*bootstrap"):
        st.up(["triton"])
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(StackError, match=r"kafka: Java is missing"):
        st.up(["kafka"])


def test_external_override_starts_nothing(stack: dict[str, str], tmp_path: Path) -> None:
    st = Stack(tmp_path / "state", Ports(*(_free_port() for _ in range(9))),
               overrides={"KAFKA_BOOTSTRAP": stack["KAFKA_BOOTSTRAP"]})
    env = st.up(["kafka"])
    assert env["KAFKA_BOOTSTRAP"] == stack["KAFKA_BOOTSTRAP"]
    [kafka] = st.status(["kafka"])
    assert kafka.state == "external" and kafka.pid is None
    assert not (tmp_path / "state" / "run" / "kafka.pid").exists()
