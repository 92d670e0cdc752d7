"""Worker settings (``VIGIL_WORKER_*``), validated at start-up like vigil.settings."""

from __future__ import annotations

import re
import socket
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


#: Kafka's rule for a group.instance.id (the same as for a topic name): 1-249 of these
#: characters, and neither "." nor "..". The worker id must pass it, since it is one.
_INSTANCE_ID = re.compile(r"[A-Za-z0-9._-]{1,249}")


class WorkerSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="VIGIL_WORKER_", extra="forbid", frozen=True)

    #: Stable name of this worker: its RocksDB folder (state_dir/worker/<prefix>/<id>) and,
    #: with static membership, its Kafka ``group.instance.id``, so it must be unique among
    #: the workers of a site and the same across restarts of one worker. ``{hostname}``
    #: is replaced by the host name: one id per container of a scaled compose service,
    #: kept when the container restarts.
    id: str = "worker-1"
    #: Static group membership (Kafka KIP-345; docs/operations.md, "Failover"): a worker
    #: restarted within the session timeout rejoins under its id and gets its partitions
    #: back at once, with no rebalance of the others; one that stays away is replaced
    #: after the session timeout, as always. Off: every start is a new member, and the
    #: group waits out the dead member's session timeout (15 s) before anyone resumes.
    static_membership: bool = True
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

    @field_validator("id")
    @classmethod
    def _id(cls, v: str) -> str:
        v = v.replace("{hostname}", socket.gethostname())
        if not _INSTANCE_ID.fullmatch(v) or v in (".", ".."):
            raise ValueError(
                f"{v!r} is not a usable worker id: 1-249 characters of A-Z a-z 0-9 . _ - "
                "(it names the RocksDB folder and is the Kafka group.instance.id)")
        return v

    @field_validator("agents")
    @classmethod
    def _agents(cls, v: str) -> str:
        names = [a.strip() for a in v.split(",") if a.strip()]
        unknown = [a for a in names if a not in AGENT_MODULES]
        if unknown or not names:
            raise ValueError(f"unknown agent group(s) {unknown}; choose from {list(AGENT_MODULES)}")
        return ",".join(names)

    @property
    def group_instance_id(self) -> str | None:
        """Kafka ``group.instance.id`` of this worker's consumer, None for dynamic
        membership. The group is per topic prefix (``<prefix>-worker``), so the worker id
        alone is unique where it has to be."""
        return self.id if self.static_membership else None

    @property
    def agent_modules(self) -> list[str]:
        return [AGENT_MODULES[a] for a in self.agents.split(",")]


@cache
def get_worker_settings() -> WorkerSettings:
    return load_component_settings(WorkerSettings, "VIGIL_WORKER_")
