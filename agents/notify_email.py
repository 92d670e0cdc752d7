"""Email over SMTP (aiosmtplib): STARTTLS or implicit TLS, optional auth.

One connection per message: alert mail is low volume, and a fresh connection never
inherits a half-dead session from an SMTP server that restarted. The message carries
``Message-ID: <delivery_id@vigil>`` and ``X-Vigil-Delivery-Id`` so that a redelivery after
a crash (at-least-once) is recognisable as the same message by the receiving side.

The alert's annotated snapshot (boxes, zone, caption: the evidence agent's rendering), when
it has one, is attached from the object store; the notifier holds a rule alert's first
mail a few seconds for it (``VIGIL_NOTIFY_EVIDENCE_WAIT_S``) and otherwise attaches the raw
frame, saying so. A snapshot that cannot be read (gone, store down) does not hold the
alert back: the mail goes out without it and says so, because a late alert is worse than
one without a picture.
"""

from __future__ import annotations

import logging
import mimetypes
from collections.abc import Awaitable, Callable
from email.message import EmailMessage
from email.utils import formatdate

import aiosmtplib

from agents.notify_channels import Channel, EmailConfig, Message, Outcome
from agents.notify_templates import Templates

log = logging.getLogger(__name__)

#: ref -> (bytes, filename); raises on failure (the reason goes into the mail body)
SnapshotFetch = Callable[[str], Awaitable[tuple[bytes, str]]]


class EmailChannel(Channel):
    kind = "email"
    attaches_snapshot = True

    def __init__(self, cfg: EmailConfig, templates: Templates,
                 fetch_snapshot: SnapshotFetch | None = None):
        super().__init__(cfg, templates)
        self.fetch_snapshot = fetch_snapshot

    async def build(self, msg: Message) -> EmailMessage:
        subject, text = self.templates.render(msg)
        em = EmailMessage()
        em["Subject"] = subject
        em["From"] = self.cfg.sender
        em["To"] = msg.recipient
        em["Date"] = formatdate(localtime=False)
        em["Message-ID"] = f"<{msg.delivery_id}@vigil>"
        em["X-Vigil-Delivery-Id"] = msg.delivery_id
        em["X-Vigil-Event-Id"] = msg.alert_event_id
        em["X-Vigil-Event-Type"] = msg.event_type
        attachment: tuple[bytes, str] | None = None
        if msg.evidence_wait_s > 0 and not msg.annotated:
            what = ("the camera's frame is attached instead" if msg.snapshot_ref
                    else "no picture is attached")
            text += (f"\n(The annotated snapshot was not ready within "
                     f"{msg.evidence_wait_s:g} s of the alert; {what}. The console shows it "
                     "once it is.)\n")
        if msg.snapshot_ref and self.fetch_snapshot is not None:
            try:
                attachment = await self.fetch_snapshot(msg.snapshot_ref)
            except Exception as exc:  # any store failure: send without the picture
                log.warning("snapshot %s not attached: %s", msg.snapshot_ref, exc)
                text += f"\n(The snapshot could not be attached: {type(exc).__name__}.)\n"
        em.set_content(text)
        if attachment is not None:
            data, filename = attachment
            ctype = mimetypes.guess_type(filename)[0] or "application/octet-stream"
            maintype, _, subtype = ctype.partition("/")
            if msg.annotated:  # every rendering is "annotated.jpg": name it after the alert
                ext = filename.rpartition(".")[2] or "jpg"
                filename = f"{msg.payload.get('alert_id') or 'alert'}-annotated.{ext}"
            em.add_attachment(data, maintype=maintype, subtype=subtype, filename=filename)
        return em

    async def send(self, msg: Message) -> Outcome:
        if not msg.recipient or "@" not in msg.recipient:
            return Outcome(False, None, f"not an email address: {msg.recipient!r}", False)
        em = await self.build(msg)
        c = self.cfg
        try:
            await aiosmtplib.send(
                em, hostname=c.host, port=c.port, username=c.username or None,
                password=c.password.get_secret_value() or None, timeout=c.timeout_s,
                use_tls=c.security == "tls", start_tls=c.security == "starttls",
                validate_certs=c.validate_certs)
        except aiosmtplib.SMTPRecipientsRefused as exc:
            return Outcome(False, None, f"recipient refused: {exc}", False)
        except aiosmtplib.SMTPResponseException as exc:
            # 5xx is permanent (bad mailbox, auth refused); 4xx is "try again later"
            return Outcome(False, exc.code, f"SMTP {exc.code}: {exc.message}", exc.code < 500)
        except (aiosmtplib.SMTPException, OSError, TimeoutError) as exc:
            return Outcome(False, None, f"{type(exc).__name__}: {exc}")
        return Outcome(True, 250)
