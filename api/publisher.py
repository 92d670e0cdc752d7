"""Publishing commands and config events from async handlers.

The producer (`schemas.producer.EventProducer`, confluent-kafka) is synchronous and reports
deliveries through callbacks served by `poll()`. A handler answers 202 only once the
broker has the command (acks=all), so the client's command id is never a promise the log
does not keep: each send registers a future resolved by the delivery callback, and one
background task serves the callbacks.
"""

from __future__ import annotations

import asyncio
import logging

from confluent_kafka import KafkaError, Message

from api.errors import ApiError
from schemas.events import Event
from schemas.producer import EventProducer

log = logging.getLogger(__name__)


class Publisher:
    """Each `publish` serves delivery callbacks (``poll``) off the event loop until its own
    delivery is confirmed. No background task: the publisher works in whatever event loop
    calls it (uvicorn's, or a test client's per-request loop)."""

    def __init__(self, producer: EventProducer, timeout_s: float = 10.0):
        self.producer = producer
        self.timeout_s = timeout_s

    async def start(self) -> None:
        """Nothing to start; kept so the app's lifespan reads symmetrically."""

    async def stop(self) -> None:
        await asyncio.to_thread(self.producer.flush, 10.0)

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

        deadline = loop.time() + self.timeout_s
        try:
            self.producer.send(topic_suffix, key, event, on_delivery=delivered)
            while not fut.done():
                if loop.time() >= deadline:
                    raise TimeoutError("no delivery report in time")
                await asyncio.to_thread(self.producer.producer.poll, 0.02)
                await asyncio.sleep(0)  # let call_soon_threadsafe callbacks run
            fut.result()
        except (TimeoutError, RuntimeError) as exc:
            log.warning("publish failed", extra={"topic": topic_suffix, "reason": str(exc)})
            raise ApiError(
                503, "the event log did not accept the event; retry later",
                details={"reason": type(exc).__name__},
            ) from None
