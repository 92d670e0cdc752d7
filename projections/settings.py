"""Projector settings (``VIGIL_PROJECTOR_*``), validated at start-up like vigil.settings.

The read model's location and staleness limit, which the API needs too, are declared in
`schemas.read_model.ReadModelSettings`; this class extends them."""

from __future__ import annotations

from functools import cache
from typing import Literal

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from schemas.read_model import ReadModelSettings
from vigil.settings import load_component_settings


class ProjectorSettings(ReadModelSettings):
    model_config = SettingsConfigDict(env_prefix="VIGIL_PROJECTOR_", extra="forbid", frozen=True,
                                      populate_by_name=True)

    #: Dimension of the appearance embeddings column (the embedder's output size); an
    #: HNSW index on halfvec takes at most 4,000 dimensions.
    embedding_dim: int = Field(192, ge=1, le=4000)  # appearance_embedder output
    #: Recorded video segments are deleted this many days after they were stored
    #: (projections/recording_retention.py, one policy of retention_policies.py).
    recording_retention_days: float = Field(30.0, gt=0)
    #: Detections older than this many days are aggregated into daily counts and dropped.
    detection_retention_days: int = Field(365, ge=31)
    #: Frame metadata (frames, frame_analyses) and stored frame images: as raw video.
    frame_retention_days: int = Field(90, ge=1)
    #: Alert snapshots (the alert's evidence image) in the object store: as event clips.
    snapshot_retention_days: int = Field(365, ge=1)
    #: Resolved alerts (alert history) in the read model.
    alert_retention_days: int = Field(730, ge=30)
    #: Health events (edge/stream/inference transitions, retention runs) in the read
    #: model: the operations plan keeps system health logs 90 days.
    health_retention_days: int = Field(90, ge=1)
    #: The projector runs every retention policy itself this often (s); 0 = never (run
    #: `vigil db retention` from cron instead). The first run is one interval after start.
    retention_interval_s: float = Field(3600.0, ge=0)
    #: Adaptive batching bounds: a batch is flushed after max_batch events or max_wait_ms.
    min_batch: int = Field(50, ge=1)
    max_batch: int = Field(5000, ge=1)
    max_wait_ms: int = Field(200, ge=1)
    #: Monthly detection partitions are created this many months ahead.
    partitions_ahead: int = Field(2, ge=0, le=24)
    #: How often (s) the live projector re-reads topic metadata to pick up partitions
    #: added at run time (it starts them at their stored offset, else offset 0).
    metadata_refresh_s: float = Field(30.0, gt=0, le=3600)
    #: Parallel consumers of a replay / verify rebuild, each owning a disjoint set of
    #: partitions (0 = one per CPU core).
    replay_workers: int = Field(0, ge=0, le=64)
    #: maintenance_work_mem (MB) for building the indexes once after a replay's bulk load;
    #: the HNSW graph of the embeddings is built much faster when it fits in memory.
    replay_index_mem_mb: int = Field(1024, ge=64, le=65536)
    #: Parallel maintenance workers of those index builds (0 = one fewer than the cores:
    #: the leader process builds too).
    replay_index_workers: int = Field(0, ge=0, le=64)
    #: Build each finished day's HNSW graph while the next days load: "auto" does when a
    #: core is left over by the load's consumers, "on" always, "off" never (all graphs
    #: then after the load, docs/architecture.md "Appearance embeddings").
    replay_index_overlap: Literal["auto", "on", "off"] = "auto"
    #: The synthetic end-to-end probe (projections/probe.py): one test frame through the
    #: pipeline to the read model this often (s); 0 = off. Exported on the metrics port.
    probe_interval_s: float = Field(300.0, ge=0)
    #: A probe frame not in the read model after this long (s) counts as failed.
    probe_timeout_s: float = Field(60.0, gt=0)
    #: Prometheus metrics port on 127.0.0.1 (0 = no HTTP server).
    metrics_port: int = Field(0, ge=0, le=65535)


@cache
def get_projector_settings() -> ProjectorSettings:
    """Validated settings; a misspelt VIGIL_PROJECTOR_* variable is an error, not a no-op."""
    return load_component_settings(ProjectorSettings, "VIGIL_PROJECTOR_")
