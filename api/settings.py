"""API settings (``VIGIL_API_*``), validated once when the app is built.

Host and port stay in `vigil.settings.Settings` (``VIGIL_API_HOST``/``VIGIL_API_PORT``)
because the dev stack and other tools need them too; everything only the API cares about
lives here.
"""

from __future__ import annotations

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from vigil.settings import load_component_settings

#: VIGIL_API_* names read by vigil.settings, not by this class.
_SHARED = {"VIGIL_API_HOST", "VIGIL_API_PORT"}


class ApiSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="VIGIL_API_", extra="ignore", frozen=True)

    #: Origins allowed by CORS; empty = no CORS headers at all (same-origin only).
    cors_origins: list[str] = Field(default_factory=list)
    #: Largest request body accepted (uploads for appearance search included).
    max_body_bytes: int = Field(2_000_000, ge=1024)
    #: Sustained requests per second per API key, and the burst above it.
    rate_limit_per_s: float = Field(50.0, gt=0)
    rate_limit_burst: int = Field(200, ge=1)
    #: Requests without a valid key, per client address: enough for a login screen and
    #: a few mistakes, far too little to guess keys or to load the database.
    anon_rate_limit_per_s: float = Field(2.0, gt=0)
    anon_rate_limit_burst: int = Field(20, ge=1)
    default_page_size: int = Field(50, ge=1)
    max_page_size: int = Field(500, ge=1)
    #: Nearest neighbours returned by appearance search at most.
    max_k: int = Field(100, ge=1, le=1000)
    #: HNSW candidate list of appearance search (``hnsw.ef_search``, raised to k when k is
    #: larger): recall against time (docs/benchmarks.md has both at k = 20).
    search_ef: int = Field(64, ge=10, le=1000)
    #: Presigned snapshot URLs expire quickly: they are bearer credentials.
    presign_expiry_s: int = Field(300, ge=1, le=3600)
    #: Longest time range of one recordings listing and of one export (seconds).
    recordings_max_range_s: float = Field(86_400.0, gt=0)
    export_max_range_s: float = Field(3_600.0, gt=0)
    #: Per-dependency timeout of /health/ready.
    ready_timeout_s: float = Field(2.0, gt=0)
    #: Longest `?wait=` a client may ask for on a command.
    max_wait_s: float = Field(30.0, gt=0)
    #: Schema of the API's own tables (API keys); the read models are not ours.
    keys_schema: str = "vigil_api"
    #: Seconds an authenticated key stays cached (revocation takes at most this long).
    key_cache_s: float = Field(10.0, ge=0)
    #: How often the live stream looks for newly projected alert events.
    stream_poll_s: float = Field(0.2, gt=0)
    #: Seconds between SSE keep-alive comments.
    stream_keepalive_s: float = Field(15.0, gt=0)
    #: A reconnecting stream client (``Last-Event-ID``) is replayed at most this many
    #: missed events from the read model; further back it should reload the alert list.
    stream_replay_max: int = Field(1000, ge=1, le=100_000)
    #: Database connections per API process (plus as many again in overflow). Each
    #: request holds one for a single short query, so ~20 serve 50 concurrent clients.
    db_pool_size: int = Field(10, ge=1, le=200)
    #: uvicorn worker processes for `vigil api serve` (each has its own pool and cache).
    workers: int = Field(1, ge=1, le=64)
    triton_model: str = "appearance_embedder"
    #: Console sessions: absolute lifetime and idle timeout (an operator's shift fits).
    session_ttl_s: float = Field(12 * 3600, gt=0)
    session_idle_s: float = Field(3600, gt=0)
    #: Session cookies get ``Secure`` when the request came over https; set true behind
    #: a TLS-terminating proxy that forwards plain http, false only for local tests.
    cookie_secure: bool | None = None
    #: Failed logins per user name: answers slowed after `login_slow_after`, the name
    #: locked for `login_lockout_s` after `login_max_failures`.
    login_slow_after: int = Field(3, ge=0)
    login_max_failures: int = Field(10, ge=1)
    login_lockout_s: float = Field(900, gt=0)

    @field_validator("cors_origins", mode="before")
    @classmethod
    def _split(cls, v: object) -> object:
        if isinstance(v, str) and not v.strip().startswith("["):
            return [o.strip() for o in v.split(",") if o.strip()]
        return v

    @field_validator("keys_schema")
    @classmethod
    def _ident(cls, v: str) -> str:
        if not v.replace("_", "").isalnum() or not v[0].isalpha():
            raise ValueError("must be a plain SQL identifier")
        return v


def load_api_settings(env: dict[str, str] | None = None, **overrides: object) -> ApiSettings:
    """Validate ``VIGIL_API_*`` into ApiSettings; unknown names fail fast (a typo'd knob
    that silently does nothing is worse than a crash at start-up)."""
    return load_component_settings(ApiSettings, "VIGIL_API_", env, also_known=_SHARED,
                                   **overrides)
