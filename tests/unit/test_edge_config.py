"""Edge configuration errors name the bad field; env overrides apply."""

from __future__ import annotations

import pytest

from edge_producer.config import parse_edge_config
from vigil.errors import ConfigError

DOC = {"edge_id": "e1", "site_id": "s1",
       "cameras": [{"camera_id": "a", "url": "sim://loiterer"},
                   {"camera_id": "b", "url": "rtsp://127.0.0.1/x"}]}


def test_valid_and_env_override() -> None:
    cfg = parse_edge_config(DOC, env={"VIGIL_EDGE_HEARTBEAT_INTERVAL_S": "5"})
    assert cfg.heartbeat_interval_s == 5
    assert [c.kind for c in cfg.cameras] == ["sim", "stream"]


def test_errors_name_the_field() -> None:
    doc = {**DOC, "cameras": [DOC["cameras"][0], {"camera_id": "b", "url": "ftp://x", "fsp": 2}]}
    with pytest.raises(ConfigError) as err:
        parse_edge_config(doc, env={})
    assert "cameras[1].url" in str(err.value) and "cameras[1].fsp" in str(err.value)


def test_unknown_env_and_duplicates() -> None:
    with pytest.raises(ConfigError, match="VIGIL_EDGE_HEARTBEAT"):
        parse_edge_config(DOC, env={"VIGIL_EDGE_HEARTBEAT": "5"})
    with pytest.raises(ConfigError, match="duplicate"):
        parse_edge_config({**DOC, "cameras": [DOC["cameras"][0]] * 2}, env={})
