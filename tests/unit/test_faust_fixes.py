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


def _worker_consumer(**conf: object) -> object:
    async def main() -> object:
        app = faust.App("t-static", broker="kafka://127.0.0.1:9", store="memory://", **conf)
        return app.consumer._thread._create_worker_consumer(app.transport)

    return asyncio.run(main())


def test_the_worker_id_reaches_aiokafka_as_the_group_instance_id() -> None:
    """Static membership depends on Faust passing consumer_group_instance_id through to
    AIOKafkaConsumer (faust/transport/drivers/aiokafka.py); None keeps it dynamic."""
    from agents.faust_fixes import VigilPartitionAssignor

    consumer = _worker_consumer(consumer_group_instance_id="w-7",
                                PartitionAssignor=VigilPartitionAssignor)
    assert consumer._group_instance_id == "w-7"  # type: ignore[attr-defined]
    assert _worker_consumer()._group_instance_id is None  # type: ignore[attr-defined]


def test_the_guard_names_another_member_holding_our_instance_id_and_only_that() -> None:
    from agents.faust_fixes import instance_holder

    members = [("wa-111", "wa"), ("wb-222", "wb"), ("x-3", None)]
    assert instance_holder(members, "wa", "wa-999") == "wa-111"  # taken by another process
    assert instance_holder(members, "wa", "wa-111") is None  # still ours
    assert instance_holder(members, "wc", "wc-1") is None  # expired: rejoin as before


def test_the_guard_wraps_aiokafkas_join_once() -> None:
    from aiokafka.consumer.group_coordinator import CoordinatorGroupRebalance

    from agents.faust_fixes import install_static_member_guard

    install_static_member_guard({"bootstrap.servers": "127.0.0.1:9"})
    first = CoordinatorGroupRebalance.perform_group_join
    install_static_member_guard({"bootstrap.servers": "127.0.0.1:9"})
    assert CoordinatorGroupRebalance.perform_group_join.__wrapped__ is first.__wrapped__
