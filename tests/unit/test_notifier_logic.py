"""Notifier pieces that need no broker: signatures, destinations, pacing, partitioning."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import time

import pytest
from aiokafka.partitioner import DefaultPartitioner

from agents.alert_state import home_partition
from agents.notifier import NotifySettings, TokenBucket
from agents.notify_channels import sign
from vigil.errors import ConfigError


def test_signature_is_hmac_sha256_of_body() -> None:
    body = b'{"a":1}'
    assert sign("k", body) == "sha256=" + hmac.new(b"k", body, hashlib.sha256).hexdigest()


def test_destinations_from_env_and_yaml(tmp_path) -> None:
    f = tmp_path / "d.yaml"
    f.write_text("- {name: pager, url: 'http://x/y', secret: s, rate_per_min: 5}\n")
    s = NotifySettings(webhooks="ops=http://127.0.0.1:1/h", secret="z", file=f)
    ops, pager = s.destinations()
    assert (ops.name, ops.url, ops.secret) == ("ops", "http://127.0.0.1:1/h", "z")
    assert (pager.channel, pager.rate_per_min) == ("webhook", 5)
    with pytest.raises(ConfigError):
        NotifySettings(webhooks="nourl").destinations()


def test_token_bucket_paces_after_burst() -> None:
    async def go() -> float:
        bucket = TokenBucket(rate_per_min=600)  # 10/s, burst 100
        bucket.tokens = 1
        t0 = time.monotonic()
        await bucket.take()
        await bucket.take()  # must wait ~0.1 s for a token
        return time.monotonic() - t0

    assert 0.05 <= asyncio.run(go()) < 1.0


def test_home_partition_matches_faust_partitioner() -> None:
    parts = list(range(8))
    for key in (b"cam-1|z1|r1", b"edge|e1|offline", b"x"):
        assert home_partition(key, 8) == DefaultPartitioner()(key, parts, parts)
