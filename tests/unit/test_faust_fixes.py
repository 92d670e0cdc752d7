"""The Faust work-arounds that patch Faust itself still reach the objects they target in
the pinned faust-streaming (a Faust upgrade that renames them must fail here, not make
the fix a silent no-op)."""

from __future__ import annotations

import asyncio

import faust

from agents.faust_fixes import install_fetch_max_wait


def _worker_consumer_fetch_wait(ms: int) -> int:
    async def main() -> int:
        install_fetch_max_wait(ms)
        app = faust.App("t-fetch-wait", broker="kafka://127.0.0.1:9", store="memory://")
        consumer = app.consumer._thread._create_worker_consumer(app.transport)
        return int(consumer._fetch_max_wait_ms)

    return asyncio.run(main())


def test_worker_consumers_get_the_configured_fetch_wait_not_fausts_1500() -> None:
    assert _worker_consumer_fetch_wait(123) == 123


def test_installing_again_replaces_the_value_instead_of_stacking_wrappers() -> None:
    assert _worker_consumer_fetch_wait(77) == 77
    assert _worker_consumer_fetch_wait(50) == 50
