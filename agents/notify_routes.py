"""Which alert event goes to whom: routes, escalation levels, quiet hours, dedup keys.

Pure functions over plain data, so the whole policy is unit-tested without a broker.
Routes come from the site configuration (schemas/site_config.py `RouteModel`, published as
``RouteConfigured`` on vigil.config); docs/notifications.md describes the model.

Matching: every non-empty filter of a route must contain the event's value (site, camera,
rule type, severity, event type); an empty filter matches anything. Escalation levels:
an ``AlertEscalated`` has its own level; any other event counts at the alert's current
level (0 until the first escalation). A route with ``levels: [2]`` hears level-2
escalations and nothing below, so level N reaches its own recipients. The one exception:
an acknowledgement or resolution also reaches every route that was told about an earlier
level of the same alert, so whoever was paged learns that it is over.

Quiet hours (per route, in the camera's time zone unless the route names one) hold back
everything except critical alerts: a suppressed delivery is recorded, never sent later.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from schemas.schedule import in_daily_window, parse_hhmm, zone_info

CLOSING_EVENTS = ("AlertAcknowledged", "AlertResolved")


@dataclass(frozen=True, slots=True)
class Route:
    route_id: str
    channels: tuple[str, ...]
    recipients: tuple[str, ...] = ()
    site_id: str | None = None
    cameras: tuple[str, ...] = ()
    rule_types: tuple[str, ...] = ()
    severities: tuple[str, ...] = ()
    event_types: tuple[str, ...] = ()
    levels: tuple[int, ...] = ()
    quiet_start: str | None = None
    quiet_end: str | None = None
    timezone: str | None = None
    enabled: bool = True


@dataclass(frozen=True, slots=True)
class AlertContext:
    """What the notifier remembers of an alert (from its AlertRaised and escalations)."""

    alert_id: str
    camera_id: str = ""
    site_id: str | None = None
    rule_id: str = ""
    rule_type: str = ""
    severity: str = "warning"
    zone_id: str | None = None
    snapshot_ref: str | None = None
    #: the RuleTriggered the alert was raised from (its AlertRaised's causation id), whose
    #: EvidenceCaptured carries the annotated snapshot; None for health alerts
    rule_event_id: str | None = None
    level: int = 0
    #: levels that deliveries were already routed at (for closing events)
    told_levels: tuple[int, ...] = field(default_factory=tuple)


@dataclass(frozen=True, slots=True)
class Target:
    route_id: str
    channel: str
    recipient: str
    suppressed: bool = False


def event_level(event_type: str, ctx: AlertContext, escalation_level: int | None) -> int:
    if event_type == "AlertEscalated" and escalation_level is not None:
        return escalation_level
    return ctx.level


def in_quiet_hours(route: Route, at: datetime, camera_tz: str) -> bool:
    if not route.quiet_start or not route.quiet_end:
        return False
    local = at.astimezone(zone_info(route.timezone or camera_tz or "UTC")).time()
    return in_daily_window(local, parse_hhmm(route.quiet_start), parse_hhmm(route.quiet_end))


def _matches(route: Route, event_type: str, ctx: AlertContext, level: int) -> bool:
    if not route.enabled:
        return False
    checks: list[tuple[tuple[object, ...], object]] = [
        (route.cameras, ctx.camera_id), (route.rule_types, ctx.rule_type),
        (route.severities, ctx.severity), (route.event_types, event_type)]
    if route.site_id is not None and route.site_id != (ctx.site_id or "default"):
        return False
    if any(allowed and value not in allowed for allowed, value in checks):
        return False
    if not route.levels or level in route.levels:
        return True
    return event_type in CLOSING_EVENTS and any(lv in route.levels for lv in ctx.told_levels)


def targets(routes: list[Route], event_type: str, ctx: AlertContext, at: datetime,
            camera_tz: str = "UTC", escalation_level: int | None = None) -> list[Target]:
    """Every (route, channel, recipient) this event goes to; quiet-hour ones flagged.

    A route without recipients sends once per channel with an empty recipient (MQTT, a
    team webhook). Duplicates across routes are kept: each route is its own promise.
    """
    level = event_level(event_type, ctx, escalation_level)
    out: list[Target] = []
    for r in routes:
        if not _matches(r, event_type, ctx, level):
            continue
        quiet = ctx.severity != "critical" and in_quiet_hours(r, at, camera_tz)
        for ch in r.channels:
            for rcpt in r.recipients or ("",):
                out.append(Target(r.route_id, ch, rcpt, quiet))
    return out


def default_routes(channels: list[str]) -> list[Route]:
    """With no route configured, every alert event goes to every channel (the behaviour
    before routes existed), so a notifier with only VIGIL_NOTIFY_WEBHOOKS keeps working."""
    return [Route("default", tuple(channels))] if channels else []


def backoff_s(attempts: int, base_s: float, max_s: float) -> float:
    """Delay before the next attempt after `attempts` failures: base * 2^(n-1), capped."""
    return min(max_s, base_s * 2 ** max(0, attempts - 1))


def dedup_key(ctx: AlertContext, event_type: str, channel: str, recipient: str) -> str | None:
    """The raise and the repeats of one alert to one (channel, recipient) share a key: a
    repeat within the cooldown of the last message under that key produces none. Other
    state changes (escalate, ack, resolve) are never deduplicated (None)."""
    if event_type not in ("AlertRaised", "AlertRepeated"):
        return None
    return f"{ctx.alert_id}|{channel}|{recipient}"
