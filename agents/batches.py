"""Batches of stream events that the *caller* acknowledges, when it has made them durable.

Faust's ``Stream.take_events`` acks every event of a batch as soon as the loop body
returns, and accepts no new event while the body runs. An agent that keeps state in
memory and writes it behind (once per camera every few seconds, as the scene agent does,
instead of once per frame) must not have an event committed before the state it changed
is written: `take_unacked` yields the same batches and leaves every ack to the caller
(``await stream.ack(event)``). An event never acked is never committed, so after a crash
or a rebalance it is delivered again (Faust seeks every assigned partition to its
committed offset after each rebalance), which is the at-least-once contract the agents
already keep with derived event ids.

It also yields an *empty* batch whenever `within` passes without an event, so the caller
gets a turn while the flow is stopped: during a rebalance Faust waits for every event
handed to a stream to be acked (``Consumer.wait_empty``) before it commits and gives
the partitions up, and a caller holding events must flush them then.

Modelled on faust-streaming 0.15.3 ``Stream.take_events`` (same processor and passive
drainer, same "never more than `max_` events" rule), minus the acks.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any, cast

from faust.streams import Stream
from faust.types import ChannelT, EventT, StreamT
from mode.utils.futures import notify


async def take_unacked(agent_stream: StreamT[Any], max_: int, within: float
                       ) -> AsyncIterator[list[EventT]]:
    """Up to `max_` events at a time, waiting at most `within` seconds for the batch to
    fill (an empty list when nothing came); none of them acked."""
    if not isinstance(agent_stream, Stream):  # the private parts used below are Stream's
        raise TypeError(f"take_unacked needs a faust Stream, not {type(agent_stream)!r}")
    stream = agent_stream
    events: list[EventT] = []
    full = asyncio.Event()
    consumed = asyncio.Event()
    consuming: asyncio.Future[Any] | None = None

    async def add_to_buffer(value: Any) -> Any:
        nonlocal consuming
        try:
            if consuming is not None:  # the caller is handling a batch: hold the event
                try:
                    await consuming
                finally:
                    consuming = None
            event = stream.current_event
            if event is None:
                raise RuntimeError("take_unacked: the stream has no current event")
            events.append(event)
            if len(events) >= max_:
                full.set()
                consumed.clear()
                await stream.wait(consumed.wait())
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            stream.log.exception("take_unacked: cannot buffer an event: %r", exc)
            await stream.crash(exc)
        return value

    enable_acks = stream.enable_acks
    stream.enable_acks = False  # acks are the caller's
    stream.add_processor(add_to_buffer)
    # the drainer only iterates what it is given; Stream.take_events casts the same way
    stream._enable_passive(cast(ChannelT, aiter(stream.channel)))
    try:
        while not stream.should_stop:
            await stream.wait_for_stopped(full.wait(), timeout=within)
            consuming = asyncio.get_running_loop().create_future()
            try:
                yield list(events)
            finally:
                events.clear()
                notify(consuming)
                full.clear()
                consumed.set()
    finally:
        stream.enable_acks = enable_acks
        stream._processors.remove(add_to_buffer)
