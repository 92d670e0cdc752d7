"""When a rule is armed, decided on event time in the camera's own time zone.

Why event time: a replay next week must arm and disarm rules exactly as the live run
did, so the worker's clock never enters. Why the camera's zone (CameraConfigured.timezone)
and zoneinfo: "night" at a site is local night, including across DST changes.
"""

from __future__ import annotations

from datetime import datetime, time
from functools import cache
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

NIGHT_START = time(22, 0)
NIGHT_END = time(6, 0)


def parse_hhmm(value: str) -> time:
    """Parse "HH:MM" (24 h); raises ValueError naming the bad value."""
    try:
        hh, mm = value.split(":")
        return time(int(hh), int(mm))
    except (ValueError, AttributeError) as exc:
        raise ValueError(f"not a HH:MM time: {value!r}") from exc


@cache
def zone_info(name: str) -> ZoneInfo:
    """A cached ZoneInfo; raises ValueError for an unknown zone name."""
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ValueError(f"unknown time zone {name!r}") from exc


def in_daily_window(local: time, start: time, end: time) -> bool:
    """[start, end) on a 24 h clock; start > end wraps past midnight; start == end is
    the whole day (a zero-length schedule would be a rule that can never fire)."""
    if start == end:
        return True
    if start < end:
        return start <= local < end
    return local >= start or local < end


def is_armed(kind: str, start: str | None, end: str | None, at: datetime, tz: str) -> bool:
    """Whether a schedule ("always", "night", "custom") is armed at event time `at`."""
    if kind == "always":
        return True
    local = at.astimezone(zone_info(tz)).time()
    if kind == "night":
        return in_daily_window(local, NIGHT_START, NIGHT_END)
    if kind == "custom":
        if start is None or end is None:
            raise ValueError("custom schedule needs start and end")
        return in_daily_window(local, parse_hhmm(start), parse_hhmm(end))
    raise ValueError(f"unknown schedule kind {kind!r}")
