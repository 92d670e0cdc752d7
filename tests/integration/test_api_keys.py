"""API keys expire and rotate: an expired key answers 401 key_expired with a clear
message; `vigil api keys rotate` issues a successor and retires the old key after a grace
period. Real PostgreSQL key table, the real app."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from starlette.testclient import TestClient

from api.auth import KeyStore
from tests.integration.test_api import build
from tools.testkit.api import World, make_world
from vigil.settings import get_settings

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def world(stack: dict[str, str]) -> Iterator[World]:
    mp = pytest.MonkeyPatch()
    prefix = f"t{uuid.uuid4().hex[:10]}"
    mp.setenv("VIGIL_TOPIC_PREFIX", prefix)
    get_settings.cache_clear()
    try:
        with make_world(stack["KAFKA_BOOTSTRAP"], stack["DATABASE_URL"], prefix) as w:
            yield w
    finally:
        mp.undo()
        get_settings.cache_clear()


@pytest.fixture(scope="module")
def client(world: World) -> Iterator[TestClient]:
    # no key cache: each request sees the table as it is now
    with TestClient(build(world, key_cache_s=0, anon_rate_limit_burst=10_000),
                    raise_server_exceptions=False) as c:
        yield c


def _expire_now(world: World, key_id: str) -> None:
    t = KeyStore(world.engine, world.keys_schema).table
    with world.engine.begin() as conn:
        conn.execute(t.update().where(t.c.key_id == key_id)
                     .values(expires_at=sa.func.now() - timedelta(seconds=1)))


def _bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def test_an_expired_key_answers_401_key_expired(world: World, client: TestClient) -> None:
    store = KeyStore(world.engine, world.keys_schema)
    key_id, key = store.create("expiring", "viewer", expires_in=timedelta(days=1))
    assert client.get("/api/v1/cameras", headers=_bearer(key)).status_code == 200
    _expire_now(world, key_id)
    resp = client.get("/api/v1/cameras", headers=_bearer(key))
    assert resp.status_code == 401
    body: dict[str, Any] = resp.json()
    assert body["error"] == "key_expired"
    assert body["message"].startswith("this API key expired at ")
    assert f"vigil api keys rotate {key_id}" in body["message"]
    assert body["details"]["key_id"] == key_id and body["details"]["expired_at"]
    assert "invalid_token" in resp.headers["www-authenticate"]
    # an unknown key still says so, differently
    other = client.get("/api/v1/cameras", headers=_bearer("vgl_000000000000_nope"))
    assert other.status_code == 401 and other.json()["error"] != "key_expired"


def test_rotate_keeps_the_old_key_for_the_grace_period_only(world: World,
                                                           client: TestClient) -> None:
    store = KeyStore(world.engine, world.keys_schema)
    old_id, old = store.create("svc", "operator", ["site-x"], expires_in=timedelta(days=30))
    new_id, new = store.rotate(old_id, grace=timedelta(hours=1))
    assert new_id != old_id
    for key in (old, new):  # both work during the grace period
        assert client.get("/api/v1/cameras", headers=_bearer(key)).status_code == 200
    info = {k.key_id: k for k in store.list()}
    assert info[old_id].rotated_to == new_id
    assert (info[new_id].name, info[new_id].role, info[new_id].sites) == \
        ("svc", "operator", ["site-x"])
    lifetime = info[new_id].expires_at - info[new_id].created_at  # type: ignore[operator]
    assert abs(lifetime - timedelta(days=30)) < timedelta(minutes=1)
    with pytest.raises(LookupError, match="already rotated"):
        store.rotate(old_id)
    _expire_now(world, old_id)  # the grace period is over
    assert client.get("/api/v1/cameras", headers=_bearer(old)).json()["error"] == \
        "key_expired"
    assert client.get("/api/v1/cameras", headers=_bearer(new)).status_code == 200


def test_rotate_without_grace_retires_the_old_key_at_once(world: World,
                                                          client: TestClient) -> None:
    store = KeyStore(world.engine, world.keys_schema)
    old_id, old = store.create("now", "viewer")
    _, new = store.rotate(old_id)
    assert client.get("/api/v1/cameras", headers=_bearer(old)).status_code == 401
    assert client.get("/api/v1/cameras", headers=_bearer(new)).status_code == 200
    with pytest.raises(LookupError, match="no active key"):
        store.rotate("doesnotexist")


def test_the_cli_creates_lists_and_rotates(world: World) -> None:
    env = {**os.environ, "VIGIL_API_KEYS_SCHEMA": world.keys_schema}

    def vigil(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "vigil_cli", "api", "keys", *args],
                              env=env, capture_output=True, text=True, timeout=60)

    made = vigil("create", "--role", "auditor", "--name", "cli-key", "--expires-in", "90d")
    assert made.returncode == 0, made.stderr
    key_id = made.stderr.split("key id: ")[1].split()[0]
    assert made.stdout.strip().startswith(f"vgl_{key_id}_")
    rotated = vigil("rotate", key_id, "--grace", "2h")
    assert rotated.returncode == 0, rotated.stderr
    assert f"key {key_id} expires in 2:00:00" in rotated.stderr
    listed = vigil("list")
    assert listed.returncode == 0 and f"{key_id}  auditor" in listed.stdout
    assert "rotated_to=" in listed.stdout and "vgl_" not in listed.stdout
    bad = vigil("create", "--role", "viewer", "--expires-in", "soon")
    assert bad.returncode == 2 and "not a duration" in bad.stderr
    again = vigil("rotate", key_id)
    assert again.returncode == 1 and "already rotated" in again.stderr


# --------------------------------------------------------------------------- live streams
def _read_stream(base: str, headers: dict[str, str], on_open: Any = None,
                 limit_s: float = 60.0) -> list[str]:
    """Every SSE frame of an /alerts/stream opened without timeout_s or max_events, up
    to the server closing it. The client gives up after `limit_s` and the test then
    fails: a stream that outlives its credential is the defect."""
    import asyncio

    import httpx

    async def main() -> list[str]:
        frames: list[str] = []
        async with httpx.AsyncClient(base_url=base, timeout=limit_s) as c, c.stream(
                "GET", "/api/v1/alerts/stream", headers=headers) as resp:
            assert resp.status_code == 200, await resp.aread()
            buf = ""
            async for chunk in resp.aiter_text():
                buf += chunk
                while "\n\n" in buf:
                    frame, buf = buf.split("\n\n", 1)
                    frames.append(frame)
                    if on_open is not None and frame.startswith("id: ") and len(
                            [f for f in frames if f.startswith("id: ")]) == 1:
                        await asyncio.to_thread(on_open)
        return frames

    async def bounded() -> list[str]:
        try:
            return await asyncio.wait_for(main(), limit_s)
        except TimeoutError:
            pytest.fail(f"the stream was still open after {limit_s} s")

    return asyncio.run(bounded())


def test_a_stream_ends_when_its_key_expires(world: World) -> None:
    from tools.testkit.api import serve

    store = KeyStore(world.engine, world.keys_schema)
    _, key = store.create("short-lived", "viewer", expires_in=timedelta(seconds=4))
    # keep-alives well apart from the expiry: the end comes from the expiry deadline
    app = build(world, key_cache_s=60, stream_keepalive_s=30, stream_poll_s=0.2)
    with serve(app) as base:
        frames = _read_stream(base, _bearer(key))
        assert frames[-1].startswith("event: credential_expired"), frames
        assert '"expires_at"' in frames[-1]
        # and the key now answers 401 key_expired, so a reconnect is refused
        import httpx

        again = httpx.get(f"{base}/api/v1/alerts/stream", headers=_bearer(key), timeout=10)
        assert again.status_code == 401 and again.json()["error"] == "key_expired"


def test_a_stream_ends_when_its_key_is_revoked(world: World) -> None:
    from tools.testkit.api import serve

    store = KeyStore(world.engine, world.keys_schema)
    key_id, key = store.create("revoked-live", "viewer")  # never expires
    app = build(world, key_cache_s=0, stream_keepalive_s=0.5, stream_poll_s=0.2)
    with serve(app) as base:
        frames = _read_stream(base, _bearer(key), on_open=lambda: store.revoke(key_id))
    assert frames[-1].startswith("event: credential_expired"), frames
    assert "revoked" in frames[-1]


def test_a_console_session_stream_ends_with_the_session(world: World) -> None:
    """A console user's live queue lasts as long as the session: at its absolute end
    the server closes the stream; a logout or the idle timeout ends it at the next
    keep-alive."""
    from api.users import UserStore
    from tools.testkit.api import serve

    users = UserStore(world.engine, world.keys_schema, session_ttl_s=4)
    users.ensure_schema()
    name = f"stream-{uuid.uuid4().hex[:6]}"
    users.create(name, "correct horse battery", "viewer")
    token = users.login(name, "correct horse battery").token
    assert token
    app = build(world, session_ttl_s=4, stream_keepalive_s=30, stream_poll_s=0.2)
    with serve(app) as base:
        frames = _read_stream(base, {"Cookie": f"vigil_session={token}"})
        assert frames[-1].startswith("event: credential_expired"), frames
        # a second session of a normal lifetime, logged out while its stream runs
        token2 = UserStore(world.engine, world.keys_schema).login(
            name, "correct horse battery").token
        assert token2
        app2 = build(world, session_ttl_s=3600, stream_keepalive_s=0.5, stream_poll_s=0.2)
        with serve(app2) as base2:
            frames = _read_stream(base2, {"Cookie": f"vigil_session={token2}"},
                                  on_open=lambda: users.logout(token2))
        assert frames[-1].startswith("event: credential_expired"), frames
        assert "session has ended" in frames[-1]
        # a session left idle (the stream's own re-checks are no activity) ends it too
        token3 = UserStore(world.engine, world.keys_schema).login(
            name, "correct horse battery").token
        app3 = build(world, session_idle_s=3, stream_keepalive_s=0.5, stream_poll_s=0.2)
        with serve(app3) as base3:
            frames = _read_stream(base3, {"Cookie": f"vigil_session={token3}"})
        assert frames[-1].startswith("event: credential_expired"), frames
        assert "session has ended" in frames[-1]
