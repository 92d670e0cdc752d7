"""Worker settings (``VIGIL_WORKER_*``), validated at start-up like vigil.settings."""

from __future__ import annotations

from functools import cache

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from vigil.settings import load_component_settings

AGENT_MODULES = {
    "inference": "agents.inference",
    "scene": "agents.scene",
    "alerts": "agents.alerts",
    "health": "agents.site_health",
    "evidence": "agents.evidence",
    "clips": "agents.clips",
}


class WorkerSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="VIGIL_WORKER_", extra="forbid", frozen=True)

    #: Stable name of this worker; its RocksDB folder is state_dir/worker/<id>.
    id: str = "worker-1"
    #: Which agent groups this worker runs (comma-separated subset of AGENT_MODULES).
    agents: str = Field("inference,scene,alerts,health,evidence,clips")
    #: Faust's web server (metrics and liveness) port on 127.0.0.1.
    web_port: int = Field(16066, ge=1, le=65535)
    #: Standby replicas of every table (>= 1 in production).
    standby_replicas: int = Field(0, ge=0, le=3)
    #: Per-table RocksDB block cache and write buffer, in bytes (rocksdict defaults are huge).
    rocksdb_block_cache: int = Field(8 << 20, ge=1 << 20)
    rocksdb_write_buffer: int = Field(4 << 20, ge=1 << 20)
    #: How long the broker may hold a fetch waiting for data, milliseconds (Faust
    #: hard-codes 1500; see agents/faust_fixes.py).
    fetch_max_wait_ms: int = Field(50, ge=1, le=30_000)

    @field_validator("agents")
    @classmethod
    def _agents(cls, v: str) -> str:
        names = [a.strip() for a in v.split(",") if a.strip()]
        unknown = [a for a in names if a not in AGENT_MODULES]
        if unknown or not names:
            raise ValueError(f"unknown agent group(s) {unknown}; choose from {list(AGENT_MODULES)}")
        return ",".join(names)

    @property
    def agent_modules(self) -> list[str]:
        return [AGENT_MODULES[a] for a in self.agents.split(",")]


@cache
def get_worker_settings() -> WorkerSettings:
    return load_component_settings(WorkerSettings, "VIGIL_WORKER_")
