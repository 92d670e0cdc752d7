"""Publishing commands and config events from async handlers.

The producer (`vigil.kafka.EventProducer`, confluent-kafka) is synchronous and reports
deliveries through callbacks served by `poll()`. A handler answers 202 only once the
broker has the command (acks=all), so the client's command id is never a promise the log
does not keep: each send registers a future resolved by the delivery callback, and one
background task serves the callbacks.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from confluent_kafka import KafkaError, Message

from api.errors import ApiError
from schemas.events import Event
from vigil.kafka import EventProducer

log = logging.getLogger(__name__)


class Publisher:
    def __init__(self, producer: EventProducer, timeout_s: float = 10.0):
        self.producer = producer
        self.timeout_s = timeout_s
        self._poller: asyncio.Task[None] | None = None
        self._pending = 0

    async def start(self) -> None:
        if self._poller is None:
            self._poller = asyncio.create_task(self._poll_loop(), name="api-producer-poll")

    async def stop(self) -> None:
        if self._poller is not None:
            self._poller.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._poller
            self._poller = None
        await asyncio.to_thread(self.producer.flush, 10.0)

    async def _poll_loop(self) -> None:
        while True:
            if self._pending:
                await asyncio.to_thread(self.producer.producer.poll, 0.05)
            else:
                await asyncio.sleep(0.01)

    async def publish(self, topic_suffix: str, key: str, event: Event) -> None:
        """Send and wait for the broker's acknowledgement; 503 if Kafka cannot take it."""
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[None] = loop.create_future()

        def delivered(err: KafkaError | None, msg: Message) -> None:
            def settle() -> None:
                if fut.done():
                    return
                if err is None:
                    fut.set_result(None)
                else:
                    fut.set_exception(RuntimeError(str(err)))

            loop.call_soon_threadsafe(settle)

        self._pending += 1
        try:
            self.producer.send(topic_suffix, key, event, on_delivery=delivered)
            await asyncio.wait_for(fut, self.timeout_s)
        except (TimeoutError, RuntimeError) as exc:
            log.warning("publish failed", extra={"topic": topic_suffix, "reason": str(exc)})
            raise ApiError(
                503, "the event log did not accept the command; retry later",
                details={"reason": type(exc).__name__},
            ) from None
        finally:
            self._pending -= 1
