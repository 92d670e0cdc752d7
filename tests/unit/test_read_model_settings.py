"""The read-model settings the API shares with the projector (schemas.read_model)."""

from __future__ import annotations

import pytest

from projections.settings import ProjectorSettings
from schemas.read_model import ReadModelSettings, load_read_model_settings
from vigil.errors import ConfigError
from vigil.settings import load_component_settings


def test_the_api_reads_the_projector_variables_it_shares() -> None:
    s = load_read_model_settings({"VIGIL_PROJECTOR_SCHEMA": "Live_2",
                                  "VIGIL_PROJECTOR_CONSUMER": "proj-b",
                                  "VIGIL_PROJECTOR_READ_MODEL_STALE_S": "30",
                                  # the projector's own knob: not the API's to judge
                                  "VIGIL_PROJECTOR_MAX_BATCH": "100"})
    assert (s.schema_name, s.consumer, s.read_model_stale_s) == ("live_2", "proj-b", 30.0)


def test_a_bad_schema_name_fails_naming_the_variable() -> None:
    with pytest.raises(ConfigError, match="VIGIL_PROJECTOR_SCHEMA"):
        load_read_model_settings({"VIGIL_PROJECTOR_SCHEMA": "x; drop table"})


def test_the_projector_declares_the_same_fields() -> None:
    env = {"VIGIL_PROJECTOR_SCHEMA": "other", "VIGIL_PROJECTOR_READ_MODEL_STALE_S": "7"}
    p = load_component_settings(ProjectorSettings, "VIGIL_PROJECTOR_", env)
    r = load_read_model_settings(env)
    assert issubclass(ProjectorSettings, ReadModelSettings)
    assert {k: getattr(p, k) for k in ReadModelSettings.model_fields} == r.model_dump()
