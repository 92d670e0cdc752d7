"""Edge configuration: a site YAML file (`vigil edge run --config site.yaml`) plus
``VIGIL_EDGE_*`` environment overrides for the scalar knobs.

Validated by pydantic with ``extra="forbid"`` so that a misspelt key stops the edge at
start-up, with errors that name the field the way a person reads the file
(``cameras[1].url: ...``).
"""

from __future__ import annotations

import os
from datetime import datetime
from pathlib import Path
from urllib.parse import quote, urlsplit, urlunsplit

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from edge_producer.sim.scenario import format_validation_error
from vigil.errors import ConfigError
from vigil.redact import redact, register_secret
from vigil.yamlfile import load_yaml

ENV_PREFIX = "VIGIL_EDGE_"


class CameraCredentials(BaseModel):
    """A camera's login kept out of the URL: the password comes from a file (a mounted
    secret) or an environment variable, is read when the stream is opened, and is
    registered with `vigil.redact` so that no message ever shows it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    username: str = Field(min_length=1)
    password_file: Path | None = Field(None, description="file holding the password")
    password_env: str | None = Field(None, description="environment variable holding it")

    @model_validator(mode="after")
    def _one_source(self) -> CameraCredentials:
        if (self.password_file is None) == (self.password_env is None):
            raise ValueError("set exactly one of password_file and password_env")
        self.password()  # unreadable or unset: fail at start-up, naming the field
        return self

    def password(self) -> str:
        """The password, read now (a rotated secret file is picked up on reconnect)."""
        if self.password_file is not None:
            try:
                value = self.password_file.read_text().strip()
            except OSError as exc:
                raise ValueError(f"password_file {self.password_file}: {exc.strerror}") from None
            if not value:
                raise ValueError(f"password_file {self.password_file} is empty")
        else:
            assert self.password_env is not None
            value = os.environ.get(self.password_env, "")
            if not value:
                raise ValueError(f"password_env {self.password_env} is not set")
        register_secret(value)
        return value


class CameraConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    camera_id: str = Field(min_length=1, pattern=r"^[A-Za-z0-9_.-]+$")
    url: str = Field(description="rtsp://..., a file path (file://...) or sim://scenario.yaml")
    fps: float = Field(1.0, gt=0, le=30, description="frames per second sent downstream")
    keyframe_fps: float = Field(0.2, gt=0, le=30, description="rate while spooling")
    jpeg_quality: int = Field(80, ge=10, le=100)
    max_side: int = Field(640, ge=64, le=4096)
    loop: bool = Field(False, description="restart a file/sim source at its end")
    realtime: bool = Field(False, description="pace file/sim sources at their own speed")
    start_at: datetime | None = Field(None, description="event time of a file's first frame")
    record: bool = Field(True, description="record the stream (false opts out)")
    enabled: bool = True
    credentials: CameraCredentials | None = Field(
        None, description="login for an rtsp/http source, instead of user:pass in the URL")

    @field_validator("url")
    @classmethod
    def _url(cls, v: str) -> str:
        if not v.strip():
            raise ValueError("must not be empty")
        if "://" in v and not v.startswith(("rtsp://", "rtsps://", "file://", "sim://",
                                            "http://", "https://")):
            raise ValueError("scheme must be rtsp://, file://, sim:// or http(s)://")
        register_secret(urlsplit(v).password)  # masked from now on, wherever it shows up
        return v

    @model_validator(mode="after")
    def _credentials_where_they_apply(self) -> CameraConfig:
        if self.credentials is None:
            return self
        if self.kind != "stream":
            raise ValueError("credentials apply to rtsp:// and http(s):// sources only")
        if urlsplit(self.url).password is not None:
            raise ValueError("the url carries a password as well as credentials; keep one")
        return self

    @property
    def display_url(self) -> str:
        """The URL as it may be shown: password masked (vigil.redact)."""
        return redact(self.url)

    def source_url(self) -> str:
        """The URL to open, with the credentials' login filled in (never log this)."""
        if self.credentials is None:
            register_secret(urlsplit(self.url).password)
            return self.url
        parts = urlsplit(self.url)
        host = parts.netloc.rpartition("@")[2]
        login = (f"{quote(self.credentials.username, safe='')}:"
                 f"{quote(self.credentials.password(), safe='')}@")
        return urlunsplit(parts._replace(netloc=login + host))

    @property
    def kind(self) -> str:
        if self.url.startswith("sim://"):
            return "sim"
        if self.url.startswith(("rtsp://", "rtsps://", "http://", "https://")):
            return "stream"
        return "file"


class EdgeConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    edge_id: str = Field(min_length=1)
    site_id: str = Field(min_length=1)
    state_dir: Path | None = Field(None, description="default: $VIGIL_STATE_DIR/edge/<edge_id>")
    heartbeat_interval_s: float = Field(30.0, gt=0)
    metrics_port: int = Field(0, ge=0, le=65535, description="0 = no metrics endpoint")
    inline_jpeg_max_bytes: int = Field(512_000, ge=1024, le=1_800_000)
    spool_max_bytes: int = Field(256 * 2**20, ge=4096)
    spool_segment_bytes: int = Field(8 * 2**20, ge=1024)
    spool_high_water: int = Field(
        20, ge=1, description="backlog (records) above which cameras drop to keyframes")
    message_timeout_s: float = Field(15.0, gt=0, description="Kafka delivery timeout")
    backoff_initial_s: float = Field(1.0, gt=0)
    backoff_max_s: float = Field(60.0, gt=0)
    segment_s: float = Field(10.0, gt=0)
    #: the local recording buffer: the oldest segments are deleted past either bound
    #: (whichever comes first), uploaded or not; a never-uploaded one is a counted loss
    record_max_bytes: int = Field(20 * 2**30, ge=2**20,
                                  description="bytes of recorded segments kept on disk")
    record_max_age_s: float = Field(7 * 86400.0, gt=0,
                                    description="age after which a recorded segment goes")
    cameras: list[CameraConfig] = Field(min_length=1)

    @model_validator(mode="after")
    def _unique(self) -> EdgeConfig:
        ids = [c.camera_id for c in self.cameras]
        dupes = sorted({i for i in ids if ids.count(i) > 1})
        if dupes:
            raise ValueError(f"duplicate camera_id {dupes}")
        return self


_SCALARS = {name for name, f in EdgeConfig.model_fields.items() if name != "cameras"}


def parse_edge_config(data: object, env: dict[str, str] | None = None,
                      source: str = "edge config") -> EdgeConfig:
    """Validate a config document, applying VIGIL_EDGE_<FIELD> overrides from `env`."""
    env = dict(os.environ if env is None else env)
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"invalid {source}: the top level must be a mapping")
    doc = dict(data)
    for key, value in env.items():
        if not key.startswith(ENV_PREFIX):
            continue
        name = key[len(ENV_PREFIX):].lower()
        if name not in _SCALARS:
            raise ConfigError(f"unknown setting {key}; known: "
                              f"{sorted(ENV_PREFIX + n.upper() for n in _SCALARS)}")
        doc[name] = value
    try:
        return EdgeConfig.model_validate(doc)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, source)) from None


def load_edge_config(path: str | Path, env: dict[str, str] | None = None) -> EdgeConfig:
    return parse_edge_config(load_yaml(path, "edge config"), env, str(path))
