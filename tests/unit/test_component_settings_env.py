"""load_component_settings(cls, prefix, env) reads `env` and nothing else."""

from __future__ import annotations

import pytest

from projections.settings import ProjectorSettings
from schemas.read_model import load_read_model_settings
from vigil.settings import load_component_settings


def test_a_given_mapping_shuts_the_process_environment_out(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VIGIL_PROJECTOR_MAX_BATCH", "77")
    monkeypatch.setenv("VIGIL_PROJECTOR_SCHEMA", "leaked")
    s = load_component_settings(ProjectorSettings, "VIGIL_PROJECTOR_", {})
    assert (s.max_batch, s.schema_name) == (5000, "vigil")
    assert isinstance(s, ProjectorSettings)
    assert load_read_model_settings({}).schema_name == "vigil"
    given = load_component_settings(ProjectorSettings, "VIGIL_PROJECTOR_",
                                    {"VIGIL_PROJECTOR_MAX_BATCH": "9"})
    assert given.max_batch == 9


def test_without_a_mapping_the_process_environment_is_read(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VIGIL_PROJECTOR_MAX_BATCH", "77")
    assert load_component_settings(ProjectorSettings, "VIGIL_PROJECTOR_").max_batch == 77
