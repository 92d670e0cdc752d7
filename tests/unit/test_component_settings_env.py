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


def _classes() -> list[tuple[type, str]]:
    from agents.escalation import AlertsSettings
    from agents.evidence import EvidenceSettings
    from agents.health_state import HealthSettings
    from agents.inference_settings import PREFIX, InferenceSettings
    from agents.notifier import NotifySettings
    from agents.scene_settings import SceneSettings
    from agents.settings import WorkerSettings
    from api.settings import ApiSettings

    return [(AlertsSettings, "VIGIL_ALERTS_"), (EvidenceSettings, "VIGIL_EVIDENCE_"),
            (HealthSettings, "VIGIL_HEALTH_"), (InferenceSettings, PREFIX),
            (NotifySettings, "VIGIL_NOTIFY_"), (SceneSettings, "VIGIL_SCENE_"),
            (WorkerSettings, "VIGIL_WORKER_"), (ApiSettings, "VIGIL_API_"),
            (ProjectorSettings, "VIGIL_PROJECTOR_")]


@pytest.mark.parametrize(("cls", "prefix"), _classes(), ids=lambda v: getattr(v, "__name__", v))
def test_every_component_shuts_out_the_environment_when_given_a_mapping(
        cls: type, prefix: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every field's variable set to a value it would not take by default (or cannot
    take at all): with a mapping, none of it may be read."""
    for var in [v for v in __import__("os").environ if v.startswith(prefix)]:
        monkeypatch.delenv(var)
    clean = load_component_settings(cls, prefix, {}).model_dump()
    for name, f in cls.model_fields.items():
        alias = f.validation_alias
        monkeypatch.setenv(alias if isinstance(alias, str) else prefix + name.upper(),
                           "leaked-1")
    assert load_component_settings(cls, prefix, {}).model_dump() == clean


def test_the_shared_settings_shut_out_the_environment_when_given_a_mapping(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from vigil.settings import load_settings

    monkeypatch.setenv("VIGIL_TOPIC_PREFIX", "leaked")
    monkeypatch.setenv("KAFKA_BOOTSTRAP", "leaked:1")
    s = load_settings({})
    assert (s.topic_prefix, s.kafka_bootstrap) == ("vigil", "127.0.0.1:19092")
    assert load_settings({"VIGIL_TOPIC_PREFIX": "given"}).topic_prefix == "given"
    assert load_settings().topic_prefix == "leaked"  # no mapping: the environment
