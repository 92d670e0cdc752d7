"""The secured broker (TLS + SASL/SCRAM-SHA-512 + ACLs, tools/devstack/kafka_security.py):
a client without credentials is refused, each service principal reaches only its topics,
and the edge reports a refused write clearly and keeps running.

The broker is a Kafka-only stack of its own (tests/integration/secure_support.py)."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Consumer, KafkaError, KafkaException, Producer
from confluent_kafka.admin import AdminClient

from schemas.codec import default_codec
from schemas.events import AcknowledgeAlert, FrameCaptured
from tools.devstack.kafka_security import Security, apply_acls
from vigil.settings import get_settings

pytestmark = pytest.mark.integration



def _clear() -> None:
    get_settings.cache_clear()
    default_codec.cache_clear()


@pytest.fixture
def as_principal(secure: tuple[str, Security]) -> Any:
    """Point this process's settings at the secured broker as a given principal, with the
    catalog topics of a fresh prefix created (as admin) and the service ACLs applied."""
    from schemas.topics import apply_topics

    bootstrap, sec = secure
    prefix = f"s{uuid.uuid4().hex[:10]}"
    monkeypatch = pytest.MonkeyPatch()

    def use(principal: str) -> dict[str, str]:
        env = {"KAFKA_BOOTSTRAP": bootstrap, "VIGIL_TOPIC_PREFIX": prefix,
               **sec.client_env(principal)}
        for k, v in env.items():
            monkeypatch.setenv(k, v)
        _clear()
        return env

    try:
        use("admin")
        apply_topics(bootstrap, prefix, partitions_override=1)
        apply_acls(sec.client_config("admin", bootstrap), prefix)
        yield use
    finally:  # the environment first, then the cached settings made from it
        monkeypatch.undo()
        _clear()


def _produce(cfg: dict[str, Any], topic: str, value: bytes) -> KafkaError | None:
    errors: list[KafkaError | None] = []
    p = Producer({**cfg, "message.timeout.ms": 15_000, "enable.idempotence": True})
    p.produce(topic, value=value, on_delivery=lambda err, _m: errors.append(err))
    p.flush(20)
    return errors[0] if errors else KafkaError(KafkaError._MSG_TIMED_OUT)


def test_a_client_without_credentials_is_refused(secure: tuple[str, Security]) -> None:
    bootstrap, sec = secure
    attempts = {
        "plaintext": {"bootstrap.servers": bootstrap},
        "tls without SASL": {"bootstrap.servers": bootstrap, "security.protocol": "ssl",
                             "ssl.ca.location": str(sec.ca)},
        "wrong password": {**sec.client_config("edge", bootstrap),
                           "sasl.password": "not-the-password"},
        "unknown CA": {**sec.client_config("edge", bootstrap),
                       "ssl.ca.location": "/etc/ssl/certs/ca-certificates.crt"},
    }
    for what, cfg in attempts.items():
        admin = AdminClient({**cfg, "socket.timeout.ms": 3000,
                             "socket.connection.setup.timeout.ms": 3000,
                             "logger": logging.getLogger("quiet")})
        with pytest.raises(KafkaException):
            admin.list_topics(timeout=4)
            pytest.fail(f"{what}: the broker answered")
    ok = AdminClient(sec.client_config("edge", bootstrap)).list_topics(timeout=15)
    assert ok.brokers


def test_each_principal_reaches_only_its_topics(secure: tuple[str, Security],
                                                as_principal: Any) -> None:
    from schemas.topics import topic_name

    bootstrap, sec = secure
    as_principal("admin")
    codec = default_codec()
    edge = sec.client_config("edge", bootstrap)
    frame = codec.encode(FrameCaptured.create(producer="t", edge_id="e", camera_id="c",
                                              sequence=1, width=2, height=2, motion_score=0))
    assert _produce(edge, topic_name("frames"), frame) is None
    ack = codec.encode(AcknowledgeAlert.create(
        producer="t", alert_id="a", operator="mallory", note=""))
    refused = _produce(edge, topic_name("commands"), ack)
    assert refused is not None and refused.code() == KafkaError.TOPIC_AUTHORIZATION_FAILED
    # the API may write commands, not frames
    api = sec.client_config("api", bootstrap)
    assert _produce(api, topic_name("commands"), ack) is None
    assert _produce(api, topic_name("frames"), frame).code() == \
        KafkaError.TOPIC_AUTHORIZATION_FAILED  # type: ignore[union-attr]
    # the edge reads nothing: not even the frames it wrote
    c = Consumer({**edge, "group.id": f"{topic_name('frames')}-x",
                  "auto.offset.reset": "earliest"})
    c.subscribe([topic_name("frames")])
    err = None
    deadline = time.monotonic() + 20
    while err is None and time.monotonic() < deadline:
        msg = c.poll(0.5)
        if msg is not None and msg.error():
            err = msg.error()
        assert msg is None or msg.error(), "the edge principal read a frame"
    c.close()
    assert err is not None and err.code() in (KafkaError.TOPIC_AUTHORIZATION_FAILED,
                                              KafkaError.GROUP_AUTHORIZATION_FAILED)
    # the projector reads frames (its group name) and writes none
    proj = sec.client_config("projector", bootstrap)
    c = Consumer({**proj, "group.id": f"{as_principal('admin')['VIGIL_TOPIC_PREFIX']}"
                  ".projector.t", "auto.offset.reset": "earliest"})
    c.subscribe([topic_name("frames")])
    got = None
    deadline = time.monotonic() + 30
    while got is None and time.monotonic() < deadline:
        msg = c.poll(0.5)
        if msg is not None:
            assert not msg.error(), msg.error()
            got = msg.value()
    c.close()
    assert got == frame
    assert _produce(proj, topic_name("frames"), frame).code() == \
        KafkaError.TOPIC_AUTHORIZATION_FAILED  # type: ignore[union-attr]


def test_settings_configure_confluent_and_aiokafka_clients(
        secure: tuple[str, Security], as_principal: Any) -> None:
    """EventProducer (confluent-kafka) and aiokafka (the notifier; Faust's transport) both
    log in from KAFKA_SECURITY_PROTOCOL / KAFKA_SASL_* / KAFKA_SSL_CA alone."""
    from aiokafka import AIOKafkaConsumer

    from agents.app import broker_credentials  # noqa: F401  (importable with TLS settings)
    from schemas.producer import EventProducer
    from schemas.topics import topic_name

    as_principal("api")
    p = EventProducer()
    p.send("commands", "k", AcknowledgeAlert.create(
        producer="t", alert_id="a", operator="op", note=""))
    assert p.flush(20) == 0
    s = as_principal("notifier") and get_settings()

    async def read_one() -> bytes:
        consumer = AIOKafkaConsumer(topic_name("alerts"), bootstrap_servers=s.kafka_bootstrap,
                                    group_id=f"{s.topic_prefix}-notifier-t",
                                    auto_offset_reset="earliest", **s.aiokafka_security())
        await consumer.start()
        try:
            parts = await asyncio.wait_for(consumer._client.fetch_all_metadata(), 20)
            return str(parts.topics()).encode()
        finally:
            await consumer.stop()

    assert topic_name("alerts").encode() in asyncio.run(read_one())


@pytest.mark.filterwarnings("error::pytest.PytestUnhandledThreadExceptionWarning")
def test_the_edge_reports_a_refused_write_and_keeps_running(
        secure: tuple[str, Security], as_principal: Any, tmp_path: Path,
        caplog: pytest.LogCaptureFixture) -> None:
    from edge_producer.config import parse_edge_config
    from edge_producer.runtime import Edge

    as_principal("notifier")  # a principal with no WRITE on frames
    cfg = parse_edge_config({
        "edge_id": "edge-acl", "site_id": "s", "state_dir": str(tmp_path / "edge"),
        "heartbeat_interval_s": 60, "message_timeout_s": 5, "backoff_initial_s": 0.2,
        "backoff_max_s": 1.0,
        "cameras": [{"camera_id": "cam-1", "url": "sim://passers_by", "loop": True,
                     "realtime": True, "fps": 2}]}, env={})
    edge = Edge(cfg)
    runner = threading.Thread(target=edge.run)
    caplog.set_level(logging.ERROR, logger="edge_producer")
    runner.start()
    try:
        deadline = time.monotonic() + 40
        while time.monotonic() < deadline and not any(
                "lacks an ACL" in r.getMessage() for r in caplog.records):
            time.sleep(0.3)
        time.sleep(3)  # several more refused attempts
        assert runner.is_alive()  # no crash, no exit
        assert edge.outbox.is_alive()  # the sender keeps retrying, too
        captured = edge.cameras["cam-1"].captured
    finally:
        edge.stop_event.set()
        runner.join(30)
    messages = [r.getMessage() for r in caplog.records if "lacks an ACL" in r.getMessage()]
    assert messages, [r.getMessage() for r in caplog.records]
    assert "principal 'notifier'" in messages[0] and ".frames" in messages[0]
    assert "TOPIC_AUTHORIZATION_FAILED" in messages[0]
    assert len(messages) == 1  # said once (rate-limited), not once per frame
    assert captured > 0 and edge.spool.backlog > 0  # frames kept, not lost
