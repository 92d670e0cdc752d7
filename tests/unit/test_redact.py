"""One redaction function: URL passwords and registered secrets never leave a process."""

from __future__ import annotations

import io
import json
import logging
from pathlib import Path

import pytest

from edge_producer.config import parse_edge_config
from edge_producer.sources import SourceError
from vigil.errors import ConfigError
from vigil.logs import JsonFormatter
from vigil.redact import install_log_redaction, redact, redact_value, register_secret


@pytest.mark.parametrize(("raw", "shown"), [
    ("rtsp://admin:hunter22@10.0.0.5:554/s1", "rtsp://admin:***@10.0.0.5:554/s1"),
    ("cannot open rtsp://u:p%40ss@cam/x: refused", "cannot open rtsp://u:***@cam/x: refused"),
    ("'rtsp://u:p@ss@cam/x'", "'rtsp://u:***@cam/x'"),  # unencoded '@' in the password
    ("http://:tok3n@h/", "http://:***@h/"),
    ("rtsp://user@cam/x and rtsp://cam/y", "rtsp://user@cam/x and rtsp://cam/y"),
    ("a=rtsp://a:b@h/1 b=https://c:d@h/2", "a=rtsp://a:***@h/1 b=https://c:***@h/2"),
    ("rtsp://admin:***@cam/x", "rtsp://admin:***@cam/x"),  # idempotent
    ("no url here", "no url here"),
])
def test_url_passwords_are_masked(raw: str, shown: str) -> None:
    assert redact(raw) == shown


def test_registered_secrets_are_masked_in_any_form() -> None:
    register_secret("Zq9/w@rd value")
    text = "ffmpeg: auth failed for Zq9/w@rd value (Zq9%2Fw%40rd%20value)"
    assert redact(text) == "ffmpeg: auth failed for *** (***)"
    register_secret("ab")  # too short to be a secret worth masking everywhere
    assert redact("abc") == "abc"
    assert redact_value({"k": ["x Zq9/w@rd value"], "n": 3}) == {"k": ["x ***"], "n": 3}


def test_source_errors_are_redacted_when_made() -> None:
    err = SourceError("cannot open rtsp://cam:S3cret!pw@127.0.0.1:1/x: Connection refused")
    assert "S3cret" not in str(err) and "rtsp://cam:***@127.0.0.1:1/x" in str(err)


def test_log_records_are_redacted_message_extra_and_traceback() -> None:
    buf = io.StringIO()
    handler = logging.StreamHandler(buf)
    handler.setFormatter(JsonFormatter())
    install_log_redaction(handler)
    log = logging.getLogger("test.redact")
    log.addHandler(handler)
    log.propagate = False
    try:
        try:
            raise RuntimeError("open rtsp://u:TopSecret1@h/x failed")
        except RuntimeError:
            log.exception("camera %s: %s", "c1", "rtsp://u:TopSecret1@h/x",
                          extra={"url": "rtsp://u:TopSecret1@h/x", "n": 1})
    finally:
        log.removeHandler(handler)
    line = buf.getvalue()
    assert "TopSecret1" not in line
    rec = json.loads(line)
    assert rec["message"] == "camera c1: rtsp://u:***@h/x"
    assert rec["url"] == "rtsp://u:***@h/x" and rec["n"] == 1
    assert "rtsp://u:***@h/x failed" in rec["exc"]


DOC = {"edge_id": "e1", "site_id": "s1"}


def test_camera_credentials_from_a_secret_file(tmp_path: Path) -> None:
    secret = tmp_path / "cam.pw"
    secret.write_text("Fi1e/Pass@word\n")
    cfg = parse_edge_config({**DOC, "cameras": [{
        "camera_id": "c", "url": "rtsp://10.0.0.9:554/stream",
        "credentials": {"username": "viewer", "password_file": str(secret)}}]}, env={})
    cam = cfg.cameras[0]
    assert cam.source_url() == "rtsp://viewer:Fi1e%2FPass%40word@10.0.0.9:554/stream"
    assert "Fi1e" not in repr(cfg) and cam.display_url == "rtsp://10.0.0.9:554/stream"
    # the password is now masked wherever it shows up, decoded or not
    assert redact(f"401 for {cam.source_url()} (Fi1e/Pass@word)") == \
        "401 for rtsp://viewer:***@10.0.0.9:554/stream (***)"


def test_camera_credentials_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CAM7_PASSWORD", "env-pass-77")
    cfg = parse_edge_config({**DOC, "cameras": [{
        "camera_id": "c", "url": "rtsp://cam7/live",
        "credentials": {"username": "u", "password_env": "CAM7_PASSWORD"}}]}, env={})
    assert cfg.cameras[0].source_url() == "rtsp://u:env-pass-77@cam7/live"


@pytest.mark.parametrize(("creds", "url", "message"), [
    ({"username": "u", "password_env": "NOT_SET_ANYWHERE_21"}, "rtsp://h/x",
     "cameras[0].credentials: Value error, password_env NOT_SET_ANYWHERE_21 is not set"),
    ({"username": "u", "password_file": "/nonexistent/pw"}, "rtsp://h/x",
     "password_file /nonexistent/pw: No such file or directory"),
    ({"username": "u"}, "rtsp://h/x", "set exactly one of password_file and password_env"),
    ({"username": "u", "password_env": "HOME"}, "rtsp://a:b@h/x", "keep one"),
    ({"username": "u", "password_env": "HOME"}, "sim://loiterer", "rtsp:// and http(s)://"),
])
def test_bad_credentials_fail_at_start_up_naming_the_field(
        creds: dict[str, str], url: str, message: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse_edge_config({**DOC, "cameras": [{"camera_id": "c", "url": url,
                                               "credentials": creds}]}, env={})
    assert message in str(err.value) and "cameras[0]" in str(err.value)
