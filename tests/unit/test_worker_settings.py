"""The worker id is the Kafka group.instance.id of static membership: checked at start-up
against Kafka's rule, `{hostname}` expanded, and static membership can be turned off."""

from __future__ import annotations

import socket

import pytest

from agents.settings import WorkerSettings
from vigil.errors import ConfigError
from vigil.settings import load_component_settings


def _load(**env: str) -> WorkerSettings:
    return load_component_settings(WorkerSettings, "VIGIL_WORKER_",
                                   {f"VIGIL_WORKER_{k}": v for k, v in env.items()})


def test_the_worker_id_is_the_group_instance_id() -> None:
    assert _load(ID="edge-site.w_2").group_instance_id == "edge-site.w_2"
    assert _load(ID="worker-{hostname}").id == f"worker-{socket.gethostname()}"
    assert _load(ID="w1", STATIC_MEMBERSHIP="false").group_instance_id is None


@pytest.mark.parametrize("bad", ["", "a b", "w/1", "..", "x" * 250, "wörker"])
def test_an_id_kafka_would_refuse_fails_at_start_up_naming_the_variable(bad: str) -> None:
    with pytest.raises(ConfigError, match=r"VIGIL_WORKER_ID.*group\.instance\.id"):
        _load(ID=bad)
