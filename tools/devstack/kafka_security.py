"""The secured local broker (`vigil dev up --secure`): TLS, SASL/SCRAM-SHA-512, ACLs.

What it sets up, on first start, under ``<state>/kafka/security/`` (mode 0700):

- a CA and a broker certificate (``cryptography``, no download, no keytool): the broker's
  key and chain in a PKCS#12 keystore, the CA as a PEM truststore (what clients get as
  ``KAFKA_SSL_CA``);
- one SCRAM-SHA-512 principal per service (`SERVICES`) plus ``admin``, with random
  passwords in ``credentials.json``; the credentials are written into the KRaft metadata
  when the storage is formatted (``kafka-storage format --add-scram``), so no plaintext
  window exists in which users are created;
- ACLs (`service_acls`) that give each service only its topics and operations, checked by
  the StandardAuthorizer with ``allow.everyone.if.no.acl.found=false``.

The client listener is SASL_SSL; the controller listener is TLS with client certificates
(only the broker's own certificate opens it), so no port takes an unauthenticated client.
Production clusters configure the same on their side; docs/security.md says what the
services need.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import json
import os
import secrets
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

#: Every service principal (and what it runs as); ``admin`` is the super user for tooling.
SERVICES = ("edge", "worker", "projector", "api", "notifier")
ADMIN = "admin"
BROKER_CN = "vigil-broker"
MECHANISM = "SCRAM-SHA-512"


@dataclass(frozen=True)
class Security:
    dir: Path
    ca: Path
    keystore: Path
    key_password: str
    passwords: dict[str, str]

    def client_env(self, principal: str) -> dict[str, str]:
        """Environment for a process authenticating as `principal`."""
        return {"KAFKA_SECURITY_PROTOCOL": "SASL_SSL", "KAFKA_SASL_MECHANISM": MECHANISM,
                "KAFKA_SASL_USERNAME": principal,
                "KAFKA_SASL_PASSWORD": self.passwords[principal],
                "KAFKA_SSL_CA": str(self.ca)}

    def client_config(self, principal: str, bootstrap: str) -> dict[str, Any]:
        """librdkafka settings for `principal` (tests, tooling)."""
        return {"bootstrap.servers": bootstrap, "security.protocol": "sasl_ssl",
                "sasl.mechanisms": MECHANISM, "sasl.username": principal,
                "sasl.password": self.passwords[principal], "ssl.ca.location": str(self.ca)}


def _write_private(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)


def ensure_security(directory: Path) -> Security:
    """The CA, broker certificate and principals' passwords, made once and then reused."""
    directory.mkdir(parents=True, exist_ok=True)
    directory.chmod(0o700)
    ca, keystore, creds = directory / "ca.pem", directory / "broker.p12", \
        directory / "credentials.json"
    if not (ca.exists() and keystore.exists() and creds.exists()):
        key_password = secrets.token_urlsafe(24)
        ca_pem, keystore_pem = _make_certificates(key_password)
        passwords = {name: secrets.token_urlsafe(24) for name in (ADMIN, *SERVICES)}
        _write_private(ca, ca_pem)
        _write_private(keystore, keystore_pem)
        _write_private(creds, json.dumps({"key_password": key_password,
                                          "passwords": passwords}, indent=2).encode())
    doc = json.loads(creds.read_text())
    return Security(directory, ca, keystore, doc["key_password"], doc["passwords"])


def _make_certificates(key_password: str) -> tuple[bytes, bytes]:
    """(CA certificate PEM, broker keystore: PKCS#12 with the key and certificate chain).

    PKCS#12 rather than an encrypted PEM key: Java's PEM reader cannot decrypt the PBES2
    keys `cryptography` writes, while PKCS#12 with the classic 3DES/SHA-1 PBE reads
    everywhere (it only guards a file that is 0600 anyway)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import rsa
    from cryptography.hazmat.primitives.serialization import pkcs12
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = dt.datetime.now(dt.UTC)
    ca_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "vigil-dev-ca")])
    ca_cert = (
        x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name)
        .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=3650))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True,
                                     crl_sign=True, content_commitment=False,
                                     key_encipherment=False, data_encipherment=False,
                                     key_agreement=False, encipher_only=False,
                                     decipher_only=False), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, BROKER_CN)]))
        .issuer_name(ca_name).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=825))
        .add_extension(x509.SubjectAlternativeName([
            x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH,
                                              ExtendedKeyUsageOID.CLIENT_AUTH]),
                       critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    encryption = (serialization.PrivateFormat.PKCS12.encryption_builder()
                  .kdf_rounds(50_000)
                  .key_cert_algorithm(pkcs12.PBES.PBESv1SHA1And3KeyTripleDESCBC)
                  .hmac_hash(hashes.SHA1()).build(key_password.encode()))
    p12 = pkcs12.serialize_key_and_certificates(BROKER_CN.encode(), key, cert, [ca_cert],
                                                encryption)
    return ca_cert.public_bytes(serialization.Encoding.PEM), p12


def broker_properties(sec: Security, kafka_port: int, controller_port: int) -> dict[str, str]:
    """server.properties entries of the secured node (replacing the plaintext listeners)."""
    jaas = ("org.apache.kafka.common.security.scram.ScramLoginModule required "
            f'username="{ADMIN}" password="{sec.passwords[ADMIN]}";')
    return {
        "listeners": f"SASL_SSL://127.0.0.1:{kafka_port},"
                     f"CONTROLLER://127.0.0.1:{controller_port}",
        "advertised.listeners": f"SASL_SSL://127.0.0.1:{kafka_port}",
        "listener.security.protocol.map": "CONTROLLER:SSL,SASL_SSL:SASL_SSL",
        "inter.broker.listener.name": "SASL_SSL",
        "sasl.enabled.mechanisms": MECHANISM,
        "sasl.mechanism.inter.broker.protocol": MECHANISM,
        f"listener.name.sasl_ssl.{MECHANISM.lower()}.sasl.jaas.config": jaas,
        "listener.name.controller.ssl.client.auth": "required",
        "ssl.keystore.type": "PKCS12",
        "ssl.keystore.location": str(sec.keystore),
        "ssl.keystore.password": sec.key_password,
        "ssl.key.password": sec.key_password,
        "ssl.truststore.type": "PEM",
        "ssl.truststore.location": str(sec.ca),
        "authorizer.class.name": "org.apache.kafka.metadata.authorizer.StandardAuthorizer",
        "allow.everyone.if.no.acl.found": "false",
        "super.users": f"User:{ADMIN};User:CN={BROKER_CN}",
        # a topic is created by tooling (admin), never by a client's metadata request
        "auto.create.topics.enable": "false",
    }


def scram_format_args(sec: Security) -> list[str]:
    """``kafka-storage format`` arguments that store every principal's SCRAM credential."""
    out: list[str] = []
    for name, password in sec.passwords.items():
        out += ["--add-scram", f"{MECHANISM}=[name={name},password={password}]"]
    return out


# ----------------------------------------------------------------------------- ACLs
READ, WRITE, DESCRIBE = "READ", "WRITE", "DESCRIBE"


def service_topics(prefix: str) -> dict[str, dict[str, tuple[str, ...]]]:
    """principal -> {"read", "write", "describe": topic suffixes}: what each needs.

    The edge writes what it captures and reads nothing; the API writes commands, config
    and the access record (and operators' RetryNotification on notifications), reads no
    topic, and may only describe the projected ones (their offsets: `/health/deep`
    compares them with the projector's to tell a stale read model); the projector reads
    every public topic and writes only dead letters; the notifier reads alerts, the
    evidence that names an alert's annotated snapshot, its routes on config and retry
    commands on notifications, and writes notification outcomes. The worker (Faust)
    reads and writes the processing topics (evidence and clips included: the clips agent
    reads recordings to cut a clip) and owns everything under its application id
    (changelogs, repartitions)."""
    from schemas.topics import CATALOG

    public = tuple(t.suffix for t in CATALOG if t.public)
    return {
        "edge": {"read": (), "write": ("frames", "heartbeats", "recordings", "health",
                                       "dlq"), "describe": ()},
        "api": {"read": (), "write": ("commands", "config", "access", "notifications",
                                      "dlq"), "describe": public},
        "projector": {"read": public, "write": ("dlq",), "describe": ()},
        "notifier": {"read": ("alerts", "evidence", "config", "notifications"),
                     "write": ("notifications", "dlq"), "describe": ()},
        "worker": {"read": ("frames", "heartbeats", "recordings", "detections",
                            "embeddings", "scene", "evidence", "clip-retry", "alerts",
                            "commands", "alert-ticks", "alert-input", "health-ticks",
                            "config", "health"),
                   "write": ("detections", "embeddings", "scene", "evidence", "clip-retry",
                             "alerts", "alert-ticks", "alert-input", "health-ticks",
                             "health", "dlq"), "describe": ()},
    }


#: The consumer group name prefix of each service that has a consumer (Faust's is its app
#: id). The API's and the worker's helper consumers are assigned, never subscribed, but
#: librdkafka still finds their group's coordinator, which needs the group ACL.
GROUPS = {"projector": "{prefix}.projector", "notifier": "{prefix}-notifier",
          "worker": "{prefix}-worker", "api": "{prefix}-api"}


def service_acls(prefix: str) -> list[Any]:
    """The ACL bindings of every service principal for topics under `prefix`."""
    from confluent_kafka.admin import (
        AclBinding,
        AclOperation,
        AclPermissionType,
        ResourcePatternType,
        ResourceType,
    )

    allow = AclPermissionType.ALLOW

    def bind(user: str, rtype: Any, name: str, op: str,
             pattern: Any = ResourcePatternType.LITERAL) -> Any:
        return AclBinding(rtype, name, pattern, f"User:{user}", "*",
                          getattr(AclOperation, op), allow)

    out: list[Any] = []
    for user, needs in service_topics(prefix).items():
        for suffix in needs["write"]:
            out.append(bind(user, ResourceType.TOPIC, f"{prefix}.{suffix}", WRITE))
        for suffix in {*needs["read"], *needs["write"], *needs["describe"]}:
            out.append(bind(user, ResourceType.TOPIC, f"{prefix}.{suffix}", DESCRIBE))
        for suffix in needs["read"]:
            out.append(bind(user, ResourceType.TOPIC, f"{prefix}.{suffix}", READ))
        if needs["write"]:  # idempotent producers
            out.append(bind(user, ResourceType.BROKER, "kafka-cluster", "IDEMPOTENT_WRITE"))
        group = GROUPS.get(user)
        if group is not None:  # each service's consumer groups, by their name prefix
            out.append(bind(user, ResourceType.GROUP, group.format(prefix=prefix), READ,
                            ResourcePatternType.PREFIXED))
    # Faust: its app id is "<prefix>-worker"; changelog and repartition topics and the
    # consumer group carry it as their prefix
    out.append(bind("worker", ResourceType.TOPIC, f"{prefix}-worker", "ALL",
                    ResourcePatternType.PREFIXED))
    out.append(bind("worker", ResourceType.BROKER, "kafka-cluster", "DESCRIBE_CONFIGS"))
    return out


def apply_acls(admin_config: dict[str, Any], prefix: str,
               extra: Iterable[Any] = ()) -> int:
    """Create the service ACLs for `prefix` (idempotent); returns how many bindings."""
    from confluent_kafka.admin import (
        AclBindingFilter,
        AclOperation,
        AclPermissionType,
        AdminClient,
        ResourcePatternType,
        ResourceType,
    )

    admin = AdminClient({**admin_config, "socket.timeout.ms": 10_000})
    bindings = [*service_acls(prefix), *extra]
    for fut in admin.create_acls(bindings, request_timeout=30).values():
        fut.result()
    # The controller has them; wait until the broker's authorizer does too, or a client
    # starting right now would be refused (and librdkafka keeps that error per message).
    every = AclBindingFilter(ResourceType.ANY, None, ResourcePatternType.ANY, None, None,
                             AclOperation.ANY, AclPermissionType.ANY)
    wanted = {str(b) for b in bindings}
    deadline = time.monotonic() + 30
    while True:
        have = {str(b) for b in admin.describe_acls(every, request_timeout=10).result()}
        if wanted <= have:
            return len(bindings)
        if time.monotonic() > deadline:
            raise RuntimeError(f"{len(wanted - have)} ACL(s) not in effect after 30 s")
        time.sleep(0.2)
