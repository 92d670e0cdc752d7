"""Scene agent settings (``VIGIL_SCENE_*``), validated at start-up: a misspelt or out of
range knob fails the worker naming the variable instead of silently doing nothing."""

from __future__ import annotations

from collections.abc import Mapping
from functools import cache

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from vigil.settings import load_component_settings


class SceneSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="VIGIL_SCENE_", extra="forbid", frozen=True)

    #: Frames handled per batch at most. Outputs go to the producer frame by frame and
    #: states are written behind (`state_write_s`), so a batch is mostly the unit of
    #: Faust's hand-over to the agent; larger batches gain little.
    batch_max: int = Field(100, ge=1, le=10_000)
    #: How long a batch waits to fill, seconds: the latency a batch can add at low load.
    batch_within_s: float = Field(0.02, gt=0.0, le=5.0)
    #: How long a camera's state may stay in memory before it is written (RocksDB and its
    #: changelog), seconds. Each write covers every frame since the last one, so at
    #: 1 fps a camera is written once per this many frames instead of once per frame;
    #: a crash or a rebalance re-processes at most this much of each camera from its
    #: written state (the outputs come out again with the same ids). 0 writes after
    #: every batch.
    state_write_s: float = Field(5.0, ge=0.0, le=60.0)
    #: Python's cyclic GC runs a young collection every this many net allocations (its
    #: default is 700). The engine allocates many small dicts per frame and the worker
    #: keeps every camera's decoded state: at the default, collections took about a
    #: tenth of the scene worker's CPU. 0 leaves the interpreter's setting alone.
    gc_threshold0: int = Field(50_000, ge=0)
    #: Every this many seconds every live object goes into the interpreter's permanent
    #: generation, which the collector does not scan (agents/gc_policy.py); 0 = off.
    gc_freeze_s: float = Field(1.0, ge=0.0, le=60.0)
    #: Every this many seconds the permanent generation is released and a full
    #: collection returns any cyclic garbage frozen meanwhile (a pause of a few hundred
    #: ms at 1000 cameras).
    gc_full_s: float = Field(600.0, gt=0.0)
    #: Read the configuration through a Faust GlobalTable (off: see agents/scene.py).
    config_globaltable: bool = False


def load_scene_settings(env: Mapping[str, str] | None = None) -> SceneSettings:
    return load_component_settings(SceneSettings, "VIGIL_SCENE_", env)


@cache
def get_scene_settings() -> SceneSettings:
    return load_scene_settings()
