"""MQTT (aiomqtt): alert events as JSON on ``<prefix>/<site>/<camera>/alerts``, QoS 1.

The convention Home Assistant and Node-RED users expect: one topic per camera, JSON
payloads, and a retained availability topic ``<prefix>/notifier/availability`` holding
``online`` while the notifier is connected; the broker publishes ``offline`` (the
connection's will, also retained) when the notifier disappears without saying goodbye.

One long-lived connection; `send` waits for the broker's PUBACK (QoS 1), so a confirmed
delivery is one the broker holds. A dropped connection fails the send (the notifier
retries it) and the next send reconnects.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import uuid

import aiomqtt

from agents.notify_channels import Channel, Message, MqttConfig, Outcome
from agents.notify_templates import Templates

_UNSAFE = re.compile(r"[+#/\x00]")


def topic_part(value: object) -> str:
    """A topic level: MQTT wildcards and separators in ids would change the topic tree."""
    text = str(value or "").strip()
    return _UNSAFE.sub("_", text) or "unknown"


def alert_topic(prefix: str, site: object, camera: object) -> str:
    return f"{prefix}/{topic_part(site)}/{topic_part(camera)}/alerts"


def availability_topic(prefix: str) -> str:
    return f"{prefix}/notifier/availability"


class MqttChannel(Channel):
    kind = "mqtt"

    def __init__(self, cfg: MqttConfig, templates: Templates):
        super().__init__(cfg, templates)
        self._client: aiomqtt.Client | None = None
        self._lock = asyncio.Lock()

    async def _connect(self) -> aiomqtt.Client:
        c = self.cfg
        avail = availability_topic(c.topic_prefix)
        client = aiomqtt.Client(
            c.host, c.port, username=c.username or None,
            password=c.password.get_secret_value() or None,
            identifier=c.client_id or f"vigil-notifier-{uuid.uuid4().hex[:8]}",
            will=aiomqtt.Will(avail, b"offline", qos=1, retain=True), timeout=c.timeout_s)
        await client.__aenter__()
        await client.publish(avail, b"online", qos=1, retain=True, timeout=c.timeout_s)
        return client

    async def send(self, msg: Message) -> Outcome:
        c = self.cfg
        topic = alert_topic(c.topic_prefix, msg.payload.get("site_id") or "default",
                            msg.payload.get("camera_id"))
        body = json.dumps({**msg.payload, "event_type": msg.event_type,
                           "delivery_id": msg.delivery_id, "console_url": msg.console_url},
                          default=str, sort_keys=True).encode()
        try:
            async with self._lock:
                if self._client is None:
                    self._client = await self._connect()
                client = self._client
            await client.publish(topic, body, qos=c.qos, timeout=c.timeout_s)
        except (aiomqtt.MqttError, OSError, TimeoutError) as exc:
            await self._drop()
            return Outcome(False, None, f"MQTT: {type(exc).__name__}: {exc}")
        return Outcome(True)

    async def _drop(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            # already broken, so closing may fail too: nothing more to do then
            with contextlib.suppress(Exception):
                await client.__aexit__(None, None, None)

    async def close(self) -> None:
        """A clean goodbye: availability ``offline`` (the will only fires on a lost link)."""
        if self._client is not None:
            with contextlib.suppress(aiomqtt.MqttError, OSError, TimeoutError):
                await self._client.publish(availability_topic(self.cfg.topic_prefix),
                                           b"offline", qos=1, retain=True, timeout=2)
        await self._drop()
