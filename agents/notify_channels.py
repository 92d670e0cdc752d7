"""Notification channels behind one interface; webhook implemented.

A channel delivers one JSON payload to one destination and reports what happened; it
never retries (the notifier owns retries, backoff, rate limits and cooldowns, so every
channel gets the same policy). Adding email, SMS or push means one more `Channel`
subclass with the same `deliver` contract, registered in `CHANNELS`:

- email: SMTP (aiosmtplib) to ``destination.url`` = ``mailto:ops@example.com``;
- SMS / push: a provider's HTTPS API (Twilio, FCM) — effectively a webhook with the
  provider's auth instead of the HMAC header.

Webhook requests are signed: ``X-Vigil-Signature: sha256=<hex HMAC-SHA256(secret, body)>``
over the exact body bytes, with ``X-Vigil-Event-Id`` so the receiver can dedup (delivery is
at-least-once).
"""

from __future__ import annotations

import hashlib
import hmac
import json
from dataclasses import dataclass
from typing import Any

import aiohttp


@dataclass(frozen=True, slots=True)
class Destination:
    name: str
    channel: str  # "webhook" (email/sms/push: see module docstring)
    url: str
    secret: str = ""
    #: deliveries per minute to this destination (token bucket)
    rate_per_min: float = 60.0


@dataclass(frozen=True, slots=True)
class Outcome:
    ok: bool
    status_code: int | None = None
    reason: str = ""
    #: False for errors a retry cannot fix (4xx other than 408/429)
    retryable: bool = True


def sign(secret: str, body: bytes) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


class Channel:
    name = "abstract"

    async def deliver(self, dest: Destination, event_id: str, payload: dict[str, Any]) -> Outcome:
        raise NotImplementedError

    async def close(self) -> None:
        return None


class WebhookChannel(Channel):
    name = "webhook"

    def __init__(self, timeout_s: float = 10.0):
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._session: aiohttp.ClientSession | None = None

    async def deliver(self, dest: Destination, event_id: str, payload: dict[str, Any]) -> Outcome:
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=self._timeout)
        body = json.dumps(payload, default=str, sort_keys=True).encode()
        headers = {"Content-Type": "application/json", "X-Vigil-Event-Id": event_id}
        if dest.secret:
            headers["X-Vigil-Signature"] = sign(dest.secret, body)
        try:
            async with self._session.post(dest.url, data=body, headers=headers) as resp:
                if 200 <= resp.status < 300:
                    return Outcome(True, resp.status)
                retryable = resp.status >= 500 or resp.status in (408, 429)
                return Outcome(False, resp.status, f"HTTP {resp.status}", retryable)
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            return Outcome(False, None, f"{type(exc).__name__}: {exc}")

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()


CHANNELS: dict[str, type[Channel]] = {"webhook": WebhookChannel}
