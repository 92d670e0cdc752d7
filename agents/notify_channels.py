"""Notification channels behind one interface: webhook, chat, HTTP provider, email, MQTT.

A channel sends one `Message` to one recipient and reports what happened (`Outcome`); it
never retries and never sleeps: the notifier owns retries, backoff, rate limits, dedup
and durability, so every channel gets the same policy (docs/notifications.md).

Channels are configured in the notifier's own settings (`ChannelConfig`, YAML file or
environment), never in the site configuration: their URLs, passwords and tokens are
secrets, and the site configuration is published on a Kafka topic. Routes in the site
configuration name a channel and the recipients on it.

- ``webhook``: JSON body signed ``X-Vigil-Signature: sha256=<hex HMAC-SHA256(secret, body)>``
  with ``X-Vigil-Event-Id`` (the alert event) and ``X-Vigil-Delivery-Id`` (dedup key);
- ``chat``: a Slack/Teams incoming-webhook body (``{"text": ...}``, plus a Teams
  ``MessageCard`` summary/title) instead of the raw event;
- ``http``: an SMS / push provider reached over HTTP; the body names the recipient (a
  phone number, a device token) and the text, authenticated with a bearer token;
- ``email``: see agents/notify_email.py; ``mqtt``: see agents/notify_mqtt.py.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from dataclasses import dataclass, field
from typing import Any, Literal

import aiohttp
from pydantic import BaseModel, ConfigDict, Field, SecretStr

from agents.notify_templates import Templates


@dataclass(frozen=True, slots=True)
class Message:
    """What one delivery sends: the alert event with its alert's context, to one recipient.

    `payload` is the alert event as JSON-ready fields merged over the alert's context
    (camera, site, severity, rule type from its AlertRaised), so an AlertEscalated or
    AlertAcknowledged still says which camera it is about.
    """

    delivery_id: str
    event_type: str
    alert_event_id: str
    payload: dict[str, Any]
    recipient: str = ""
    route_id: str = ""
    console_url: str = ""
    #: snapshot object ref (s3://bucket/key or bucket/key), fetched by channels that attach
    snapshot_ref: str | None = None
    #: `snapshot_ref` is the annotated rendering (boxes, zone, caption), not the raw frame
    annotated: bool = False
    #: > 0: the delivery was held up to this long for the annotated snapshot; if it is
    #: still not `annotated`, the message says it carries the raw frame instead
    evidence_wait_s: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Outcome:
    ok: bool
    status_code: int | None = None
    reason: str = ""
    #: False for errors a retry cannot fix (4xx other than 408/429, a refused recipient)
    retryable: bool = True


def sign(secret: str, body: bytes) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


class _Cfg(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1, pattern=r"^[A-Za-z0-9_.:-]+$")
    #: deliveries per minute per recipient on this channel (token bucket) ...
    rate_per_min: float = Field(60.0, gt=0)
    #: ... and how many may go at once (default max(1, rate/6)); "10 mails an hour,
    #: but a burst of 10" is rate_per_min 0.1667 with burst 10
    burst: int | None = Field(None, ge=1)
    timeout_s: float = Field(10.0, gt=0)


class WebhookConfig(_Cfg):
    kind: Literal["webhook"] = "webhook"
    url: str = Field(min_length=1)
    secret: SecretStr = SecretStr("")


class ChatConfig(_Cfg):
    kind: Literal["chat"] = "chat"
    url: str = Field(min_length=1)
    flavor: Literal["slack", "teams"] = "slack"


class HttpProviderConfig(_Cfg):
    kind: Literal["http"] = "http"
    url: str = Field(min_length=1)
    token: SecretStr = SecretStr("")


class EmailConfig(_Cfg):
    kind: Literal["email"] = "email"
    host: str = "127.0.0.1"
    port: int = Field(587, ge=1, le=65535)
    #: "starttls" upgrades a plain connection (port 587), "tls" is implicit TLS (465)
    security: Literal["starttls", "tls", "none"] = "starttls"
    username: str = ""
    password: SecretStr = SecretStr("")
    sender: str = "vigil@localhost"
    #: verify the server's certificate (off only for a lab server with a self-signed one)
    validate_certs: bool = True


class MqttConfig(_Cfg):
    kind: Literal["mqtt"] = "mqtt"
    host: str = "127.0.0.1"
    port: int = Field(1883, ge=1, le=65535)
    username: str = ""
    password: SecretStr = SecretStr("")
    topic_prefix: str = Field("vigil", min_length=1)
    client_id: str = ""
    qos: int = Field(1, ge=0, le=2)
    rate_per_min: float = Field(6000.0, gt=0)


ChannelConfig = WebhookConfig | ChatConfig | HttpProviderConfig | EmailConfig | MqttConfig


class Channel:
    """One configured channel. `send` must not raise for delivery problems: it returns an
    `Outcome` whose `reason` is safe to log and publish (no secrets)."""

    kind = "abstract"
    #: the channel carries the alert's picture: its first message of a rule alert is held
    #: (briefly) for the annotated snapshot (docs/notifications.md)
    attaches_snapshot = False

    def __init__(self, cfg: Any, templates: Templates):
        self.cfg = cfg
        self.name: str = cfg.name
        self.templates = templates

    async def send(self, msg: Message) -> Outcome:
        raise NotImplementedError

    async def close(self) -> None:
        return None


class _HttpChannel(Channel):
    def __init__(self, cfg: Any, templates: Templates):
        super().__init__(cfg, templates)
        self._timeout = aiohttp.ClientTimeout(total=cfg.timeout_s)
        self._session: aiohttp.ClientSession | None = None

    async def _post(self, url: str, body: bytes, headers: dict[str, str]) -> Outcome:
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=self._timeout)
        headers = {"Content-Type": "application/json", **headers}
        try:
            async with self._session.post(url, data=body, headers=headers) as resp:
                if 200 <= resp.status < 300:
                    return Outcome(True, resp.status)
                retryable = resp.status >= 500 or resp.status in (408, 429)
                return Outcome(False, resp.status, f"HTTP {resp.status}", retryable)
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            return Outcome(False, None, f"{type(exc).__name__}: {exc}")

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()


class WebhookChannel(_HttpChannel):
    """The raw alert event as JSON, HMAC-signed over the exact body bytes."""

    kind = "webhook"

    async def send(self, msg: Message) -> Outcome:
        body = json.dumps({**msg.payload, "delivery_id": msg.delivery_id,
                           "recipient": msg.recipient, "console_url": msg.console_url},
                          default=str, sort_keys=True).encode()
        headers = {"X-Vigil-Event-Id": msg.alert_event_id,
                   "X-Vigil-Delivery-Id": msg.delivery_id}
        secret = self.cfg.secret.get_secret_value()
        if secret:
            headers["X-Vigil-Signature"] = sign(secret, body)
        return await self._post(self.cfg.url, body, headers)


class ChatChannel(_HttpChannel):
    """Slack and Teams incoming webhooks both accept ``{"text": ...}``; Teams' legacy
    connector also reads the MessageCard fields, which Slack ignores."""

    kind = "chat"

    async def send(self, msg: Message) -> Outcome:
        subject, text = self.templates.render(msg)
        line = f"*{subject}*\n{text}" if self.cfg.flavor == "slack" else f"**{subject}**\n\n{text}"
        body: dict[str, Any] = {"text": line}
        if self.cfg.flavor == "teams":
            body.update({"@type": "MessageCard", "@context": "https://schema.org/extensions",
                         "summary": subject, "title": subject})
        return await self._post(self.cfg.url, json.dumps(body).encode(),
                                {"X-Vigil-Delivery-Id": msg.delivery_id})


class HttpProviderChannel(_HttpChannel):
    """SMS / push over a provider's HTTP API: ``{"to", "subject", "text", "delivery_id"}``
    with ``Authorization: Bearer <token>``; the provider (or a small adapter in front of
    it) maps that onto its own API."""

    kind = "http"

    async def send(self, msg: Message) -> Outcome:
        subject, text = self.templates.render(msg)
        body = json.dumps({"to": msg.recipient, "subject": subject, "text": text,
                           "delivery_id": msg.delivery_id, "url": msg.console_url}).encode()
        headers = {"X-Vigil-Delivery-Id": msg.delivery_id}
        token = self.cfg.token.get_secret_value()
        if token:
            headers["Authorization"] = f"Bearer {token}"
        return await self._post(self.cfg.url, body, headers)


def make_channel(cfg: ChannelConfig, templates: Templates, fetch_snapshot: Any = None
                 ) -> Channel:
    """The channel object for one configuration entry."""
    if isinstance(cfg, WebhookConfig):
        return WebhookChannel(cfg, templates)
    if isinstance(cfg, ChatConfig):
        return ChatChannel(cfg, templates)
    if isinstance(cfg, HttpProviderConfig):
        return HttpProviderChannel(cfg, templates)
    if isinstance(cfg, EmailConfig):
        from agents.notify_email import EmailChannel

        return EmailChannel(cfg, templates, fetch_snapshot)
    from agents.notify_mqtt import MqttChannel

    return MqttChannel(cfg, templates)
