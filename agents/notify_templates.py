"""Subject and text of a notification, from one template pair per alert event type.

Plain-text Jinja2 templates (sandboxed: a template is configuration, not code). The
defaults below cover every alert event; a directory given as ``VIGIL_NOTIFY_TEMPLATES_DIR``
may override any of them with ``<EventType>.subject`` / ``<EventType>.txt`` files. Every
template sees the message payload's fields (``camera_id``, ``severity``, ``rule_type``,
``level``, ``operator`` …) plus ``event_type``, ``console_url``, ``recipient`` and
``delivery_id``. Unknown fields render empty rather than failing a delivery.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from jinja2 import TemplateError
from jinja2.sandbox import SandboxedEnvironment

from vigil.errors import ConfigError

if TYPE_CHECKING:
    from agents.notify_channels import Message

_WHERE = "{{ camera_id }}{% if zone_id %} / {{ zone_id }}{% endif %}"
_BODY_TAIL = ("\n\nSite: {{ site_id or '-' }}\nCamera: {{ camera_id }}\nRule: {{ rule_id }}"
              " ({{ rule_type }})\nSeverity: {{ severity }}\nAlert: {{ alert_id }}\n"
              "{% if console_url %}\nOpen in the console: {{ console_url }}\n{% endif %}")

DEFAULTS: dict[str, tuple[str, str]] = {
    "AlertRaised": (
        "[{{ severity|upper }}] {{ rule_type }} at " + _WHERE,
        "A {{ severity }} {{ rule_type }} alert was raised at " + _WHERE
        + " (first evidence {{ first_evidence_at }})." + _BODY_TAIL),
    "AlertRepeated": (
        "[{{ severity|upper }}] {{ rule_type }} at " + _WHERE + " again"
        " ({{ occurrences }}x)",
        "The {{ rule_type }} alert at " + _WHERE + " fired again: {{ occurrences }}"
        " occurrences, last at {{ last_evidence_at }}." + _BODY_TAIL),
    "AlertEscalated": (
        "[ESCALATED L{{ level }}] {{ rule_type }} at " + _WHERE + " unacknowledged",
        "Nobody acknowledged the {{ severity }} {{ rule_type }} alert at " + _WHERE
        + " by {{ deadline_at }}: escalated to level {{ level }}." + _BODY_TAIL),
    "AlertAcknowledged": (
        "[ACK] {{ rule_type }} at " + _WHERE + " by {{ operator }}",
        "{{ operator }} acknowledged the {{ rule_type }} alert at " + _WHERE + "."
        "{% if note %}\nNote: {{ note }}{% endif %}" + _BODY_TAIL),
    "AlertResolved": (
        "[RESOLVED] {{ rule_type }} at " + _WHERE,
        "The {{ rule_type }} alert at " + _WHERE + " is resolved"
        "{% if operator %} by {{ operator }}{% endif %}"
        "{% if reason %} ({{ reason }}){% endif %}." + _BODY_TAIL),
}
_FALLBACK = ("[{{ event_type }}] " + _WHERE, "{{ event_type }} for alert {{ alert_id }}."
             + _BODY_TAIL)


class Templates:
    """Compiled templates; rendering never raises (a broken override was caught at start)."""

    def __init__(self, directory: Path | None = None):
        self._env = SandboxedEnvironment(autoescape=False, keep_trailing_newline=False)
        sources = dict(DEFAULTS)
        if directory is not None:
            if not directory.is_dir():
                raise ConfigError(f"VIGIL_NOTIFY_TEMPLATES_DIR: {directory} is not a directory")
            for name in set(sources) | {p.stem for p in directory.iterdir()}:
                subject, body = sources.get(name, _FALLBACK)
                sf, bf = directory / f"{name}.subject", directory / f"{name}.txt"
                sources[name] = (sf.read_text().strip() if sf.exists() else subject,
                                 bf.read_text() if bf.exists() else body)
        try:
            self._compiled = {k: (self._env.from_string(s), self._env.from_string(b))
                              for k, (s, b) in sources.items()}
            self._fallback = tuple(self._env.from_string(t) for t in _FALLBACK)
        except TemplateError as exc:
            raise ConfigError(f"notification template: {exc}") from None

    def render(self, msg: Message) -> tuple[str, str]:
        ctx: dict[str, Any] = {**msg.payload, "event_type": msg.event_type,
                               "console_url": msg.console_url, "recipient": msg.recipient,
                               "delivery_id": msg.delivery_id}
        subject_t, body_t = self._compiled.get(msg.event_type, self._fallback)
        try:
            subject = " ".join(subject_t.render(ctx).split())  # one header line
            return subject, body_t.render(ctx)
        except TemplateError as exc:  # e.g. a filter applied to the wrong type
            return f"[{msg.event_type}] alert {msg.payload.get('alert_id', '')}", (
                f"(template error: {exc})\n{msg.payload}")
