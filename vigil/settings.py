"""Process settings: environment first, typed, validated once at start-up.

Every service reads its addresses and knobs from here; a bad value stops the process
before it touches anything, with a message naming the variable. Unknown ``VIGIL_*``
variables are rejected too, because a misspelt knob that silently does nothing is worse
than a crash at start-up.

Defaults point at the local stack (`vigil dev up`), whose ports are deliberately
non-default so that nothing clashes with system services.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from functools import cache
from pathlib import Path
from typing import Any, TypeVar

from pydantic import (
    AliasChoices,
    BaseModel,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, SettingsConfigDict

from vigil.errors import ConfigError
from vigil.redact import register_secret

PROJECT_ROOT = Path(__file__).resolve().parent.parent


class Settings(BaseSettings):
    model_config = SettingsConfigDict(extra="ignore", frozen=True, populate_by_name=True)

    state_dir: Path = Field(PROJECT_ROOT / ".vigil", validation_alias="VIGIL_STATE_DIR")
    topic_prefix: str = Field("vigil", validation_alias="VIGIL_TOPIC_PREFIX")
    log_level: str = Field("INFO", validation_alias="VIGIL_LOG_LEVEL")
    log_format: str = Field("json", validation_alias="VIGIL_LOG_FORMAT")

    kafka_bootstrap: str = Field("127.0.0.1:19092", validation_alias="KAFKA_BOOTSTRAP")
    #: How every client talks to Kafka (docs/security.md): PLAINTEXT for the local stack,
    #: SASL_SSL (TLS + SCRAM-SHA-512) for anything else.
    kafka_security_protocol: str = Field("PLAINTEXT", validation_alias="KAFKA_SECURITY_PROTOCOL")
    kafka_sasl_mechanism: str = Field("SCRAM-SHA-512", validation_alias="KAFKA_SASL_MECHANISM")
    kafka_sasl_username: str | None = Field(None, validation_alias="KAFKA_SASL_USERNAME")
    kafka_sasl_password: SecretStr | None = Field(None, validation_alias="KAFKA_SASL_PASSWORD")
    #: PEM file of the CA that signed the brokers' certificates (default: system CAs)
    kafka_ssl_ca: Path | None = Field(None, validation_alias="KAFKA_SSL_CA")
    schema_registry_url: str | None = Field(None, validation_alias="SCHEMA_REGISTRY_URL")
    database_url: str = Field(
        "postgresql+psycopg://vigil@127.0.0.1:15432/vigil", validation_alias="DATABASE_URL"
    )
    triton_url: str = Field("127.0.0.1:18001", validation_alias="TRITON_URL")
    s3_endpoint: str = Field("http://127.0.0.1:19000", validation_alias="S3_ENDPOINT")
    s3_access_key: str = Field("vigil", validation_alias="S3_ACCESS_KEY")
    s3_secret_key: SecretStr = Field(SecretStr("vigil-secret"), validation_alias="S3_SECRET_KEY")
    s3_region: str = Field("us-east-1", validation_alias="S3_REGION")
    bucket_segments: str = Field("video-segments", validation_alias="VIGIL_BUCKET_SEGMENTS")
    bucket_snapshots: str = Field("snapshots", validation_alias="VIGIL_BUCKET_SNAPSHOTS")
    bucket_frames: str = Field("frames", validation_alias="VIGIL_BUCKET_FRAMES")

    api_host: str = Field("127.0.0.1", validation_alias="VIGIL_API_HOST")
    api_port: int = Field(18080, ge=1, le=65535, validation_alias="VIGIL_API_PORT")
    #: Interface every metrics/web listener binds (worker web, edge, projector, notifier,
    #: API default): loopback by default so a dev box exposes nothing; containers set
    #: 0.0.0.0 so Prometheus can scrape them over the compose network.
    metrics_host: str = Field("127.0.0.1", validation_alias="VIGIL_METRICS_HOST")
    worker_web_port: int = Field(
        16066, ge=1, le=65535, validation_alias=AliasChoices("VIGIL_WORKER_WEB_PORT")
    )

    @model_validator(mode="before")
    @classmethod
    def _api_host_follows_metrics_host(cls, data: Any) -> Any:
        """The API serves /metrics on its own port, so without an explicit VIGIL_API_HOST
        it binds where every other metrics endpoint does: one knob for a container."""
        if isinstance(data, dict) and "VIGIL_METRICS_HOST" in data and not (
                {"VIGIL_API_HOST", "api_host"} & data.keys()):
            data = {**data, "VIGIL_API_HOST": data["VIGIL_METRICS_HOST"]}
        return data

    @field_validator("topic_prefix")
    @classmethod
    def _prefix(cls, v: str) -> str:
        if not v or not all(c.isalnum() or c in "._-" for c in v):
            raise ValueError("must be non-empty and use only letters, digits, '.', '_', '-'")
        return v

    @field_validator("kafka_security_protocol")
    @classmethod
    def _protocol(cls, v: str) -> str:
        v = v.upper()
        if v not in ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"):
            raise ValueError("must be PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL")
        return v

    @field_validator("kafka_sasl_mechanism")
    @classmethod
    def _mechanism(cls, v: str) -> str:
        v = v.upper()
        if v not in ("SCRAM-SHA-512", "SCRAM-SHA-256", "PLAIN"):
            raise ValueError("must be SCRAM-SHA-512, SCRAM-SHA-256 or PLAIN")
        return v

    @model_validator(mode="after")
    def _kafka_security(self) -> Settings:
        if self.kafka_security_protocol.startswith("SASL_") and not (
                self.kafka_sasl_username and self.kafka_sasl_password):
            raise ValueError(f"KAFKA_SECURITY_PROTOCOL={self.kafka_security_protocol} needs "
                             "KAFKA_SASL_USERNAME and KAFKA_SASL_PASSWORD")
        if self.kafka_ssl_ca is not None and not self.kafka_ssl_ca.is_file():
            raise ValueError(f"KAFKA_SSL_CA {self.kafka_ssl_ca} is not a readable file")
        if self.kafka_sasl_password is not None:
            register_secret(self.kafka_sasl_password.get_secret_value())
        register_secret(self.s3_secret_key.get_secret_value())
        return self

    def kafka_client_config(self) -> dict[str, Any]:
        """librdkafka (confluent-kafka) settings: address and security, for every client."""
        cfg: dict[str, Any] = {"bootstrap.servers": self.kafka_bootstrap,
                               "security.protocol": self.kafka_security_protocol.lower()}
        if self.kafka_security_protocol.startswith("SASL_"):
            assert self.kafka_sasl_password is not None
            cfg.update({"sasl.mechanisms": self.kafka_sasl_mechanism,
                        "sasl.username": self.kafka_sasl_username,
                        "sasl.password": self.kafka_sasl_password.get_secret_value()})
        if self.kafka_security_protocol.endswith("SSL") and self.kafka_ssl_ca is not None:
            cfg["ssl.ca.location"] = str(self.kafka_ssl_ca)
        return cfg

    def aiokafka_security(self) -> dict[str, Any]:
        """The same for aiokafka (the notifier, Faust's transport): keyword arguments."""
        out: dict[str, Any] = {"security_protocol": self.kafka_security_protocol}
        if self.kafka_security_protocol.endswith("SSL"):
            from aiokafka.helpers import create_ssl_context

            out["ssl_context"] = create_ssl_context(
                cafile=str(self.kafka_ssl_ca) if self.kafka_ssl_ca else None)
        if self.kafka_security_protocol.startswith("SASL_"):
            assert self.kafka_sasl_password is not None
            out.update(sasl_mechanism=self.kafka_sasl_mechanism,
                       sasl_plain_username=self.kafka_sasl_username,
                       sasl_plain_password=self.kafka_sasl_password.get_secret_value())
        return out

    @field_validator("log_format")
    @classmethod
    def _log_format(cls, v: str) -> str:
        if v not in ("json", "text"):
            raise ValueError("must be 'json' or 'text'")
        return v

    @field_validator("database_url")
    @classmethod
    def _db(cls, v: str) -> str:
        if not v.startswith(("postgresql://", "postgresql+psycopg://", "postgres://")):
            raise ValueError("must be a postgresql:// URL")
        if v.startswith(("postgresql://", "postgres://")):
            v = "postgresql+psycopg://" + v.split("://", 1)[1]
        return v

    @property
    def buckets(self) -> tuple[str, ...]:
        return (self.bucket_segments, self.bucket_snapshots, self.bucket_frames)

    @property
    def database_dsn(self) -> str:
        """The URL in libpq form, for psycopg without SQLAlchemy."""
        return "postgresql://" + self.database_url.split("://", 1)[1]


def _known_env_names() -> set[str]:
    names: set[str] = set()
    for f in Settings.model_fields.values():
        alias = f.validation_alias
        if isinstance(alias, str):
            names.add(alias)
        elif isinstance(alias, AliasChoices):
            names.update(str(c) for c in alias.choices)
    return names


#: Prefixes of VIGIL_* variables owned by a component's own settings class (for example
#: ``agents.settings.InferenceSettings`` reads ``VIGIL_INFERENCE_*``); each validates its own.
COMPONENT_PREFIXES: tuple[str, ...] = (
    "VIGIL_EDGE_", "VIGIL_INFERENCE_", "VIGIL_SCENE_", "VIGIL_ALERTS_", "VIGIL_HEALTH_",
    "VIGIL_NOTIFY_", "VIGIL_PROJECTOR_", "VIGIL_API_", "VIGIL_DEV_", "VIGIL_BENCH_",
    "VIGIL_FAULTS_", "VIGIL_WORKER_", "VIGIL_TEST_", "VIGIL_DEMO_", "VIGIL_EVIDENCE_",
    "VIGIL_BACKUP_",
)


def load_settings(env: Mapping[str, str] | None = None) -> Settings:
    """Validate the environment (or `env`, and then nothing else) into Settings, or raise
    ConfigError naming the field.

    Given a mapping, the process environment stays out, as in `load_component_settings`:
    Settings is a BaseSettings and would otherwise fill every field `env` leaves out from
    the real environment (``tools/bench/e2e.py`` drops VIGIL_TOPIC_PREFIX to get the
    default prefix, and got the caller's instead)."""
    cls = Settings if env is None else _without_environment(Settings)
    env = dict(os.environ if env is None else env)
    known = _known_env_names()
    unknown = sorted(
        k
        for k in env
        if k.startswith("VIGIL_") and k not in known and not k.startswith(COMPONENT_PREFIXES)
    )
    if unknown:
        raise ConfigError(f"unknown setting(s) {', '.join(unknown)}; known: {sorted(known)}")
    try:
        return cls(**{k: v for k, v in env.items() if k in known})  # type: ignore[arg-type]
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in exc.errors()
        )
        raise ConfigError(f"invalid settings: {problems}") from None


@cache
def get_settings() -> Settings:
    return load_settings()


S = TypeVar("S", bound=BaseModel)


def load_component_settings(
    cls: type[S],
    prefix: str,
    env: Mapping[str, str] | None = None,
    *,
    also_known: Iterable[str] = (),
    **overrides: object,
) -> S:
    """A component's settings from its ``PREFIX*`` variables, or ConfigError naming the
    variable.

    pydantic-settings ignores unknown environment keys even with ``extra="forbid"``, so
    they are rejected here: a misspelt knob must not silently do nothing. Values are read
    from `env` (the process environment by default) and validated with `model_validate`,
    so a test can pass its own mapping without the real environment leaking in.
    """
    environ = os.environ if env is None else env
    keys: dict[str, str] = {}  # environment variable -> field name or alias
    for name, f in cls.model_fields.items():
        alias = f.validation_alias
        if isinstance(alias, str):
            keys[alias] = alias
        else:
            keys[prefix + name.upper()] = name
    known = set(keys) | set(also_known)
    unknown = sorted(k for k in environ if k.startswith(prefix) and k not in known)
    if unknown:
        raise ConfigError(f"unknown setting(s) {', '.join(unknown)}; "
                          f"known: {', '.join(sorted(keys))}")
    values: dict[str, object] = {key: environ[var] for var, key in keys.items() if var in environ}
    values.update(overrides)
    try:
        return (cls if env is None else _without_environment(cls)).model_validate(values)
    except ValidationError as exc:
        var_of = {key: var for var, key in keys.items()}
        problems = "; ".join(f"{_variable(e['loc'], var_of, prefix)}: {e['msg']}"
                             for e in exc.errors())
        raise ConfigError(f"invalid {prefix}* settings: {problems}") from None


@cache
def _without_environment(cls: type[S]) -> type[S]:
    """`cls` reading nothing but its arguments: a BaseSettings also fills unset fields from
    the process environment (and .env/secret files), which must not leak into a call that
    passed its own `env` mapping. The subclass keeps the name, fields and validators."""
    if not issubclass(cls, BaseSettings):
        return cls

    def sources(_cls: type, settings_cls: type, init_settings: Any, *_args: Any,
                **_others: Any) -> tuple[Any, ...]:
        return (init_settings,)

    return type(cls.__name__, (cls,), {  # type: ignore[return-value]
        "__module__": cls.__module__, "__qualname__": cls.__qualname__,
        "settings_customise_sources": classmethod(sources)})


def _variable(loc: tuple[int | str, ...], var_of: Mapping[str, str], prefix: str) -> str:
    """The environment variable a validation error is about."""
    if not loc:
        return prefix + "*"
    return var_of.get(str(loc[0]), prefix + str(loc[0]).upper())
