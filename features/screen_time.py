"""Screen time per local day, and where it crosses the parental daily limit.

Screen time is the time a user is online (``features.sessions`` presence, in a room or not), summed per
day in the user's own time zone (the profile's ``timezone``; an unknown zone counts as UTC). A warning
goes to the parent at ``screen_warning_share`` of the daily limit and an alert at the limit; a limit of 0
means the parent set none, and then nothing is sent.
"""
from __future__ import annotations

from datetime import datetime, timedelta, timezone
from functools import lru_cache
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

MINUTE_MS = 60_000


@lru_cache(maxsize=512)
def zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return ZoneInfo("UTC")


def local_day(ts_ms: int, tz: str) -> str:
    """The calendar date (ISO) at ``ts_ms`` in time zone ``tz``."""
    return datetime.fromtimestamp(ts_ms / 1000, zone(tz)).date().isoformat()


def previous_local_day(ts_ms: int, tz: str) -> str:
    """The local day before the one at ``ts_ms``: the latest day that has certainly ended."""
    return (datetime.fromisoformat(local_day(ts_ms, tz)) - timedelta(days=1)).date().isoformat()


def local_day_end_ms(day: str, tz: str) -> int:
    """The first millisecond of the local day after ``day``."""
    start = datetime.fromisoformat(day).replace(tzinfo=zone(tz)) + timedelta(days=1)
    return int(start.astimezone(timezone.utc).timestamp() * 1000)


def split_by_local_day(start_ms: int, end_ms: int, tz: str) -> list[tuple[str, int]]:
    """(local day, milliseconds) for the span [start_ms, end_ms), cut at local midnights."""
    parts = []
    while start_ms < end_ms:
        day = local_day(start_ms, tz)
        cut = min(end_ms, local_day_end_ms(day, tz))
        parts.append((day, cut - start_ms))
        start_ms = cut
    return parts


def screen_time_crossings(before_ms: int, after_ms: int, limit_minutes: int,
                          warning_share: float) -> list[str]:
    """Which thresholds the day's screen time crossed going from ``before_ms`` to ``after_ms``:
    "warning" (at ``warning_share`` of the limit) and/or "limit"; none without a limit."""
    if limit_minutes <= 0:
        return []
    limit_ms = limit_minutes * MINUTE_MS
    thresholds = (("warning", warning_share * limit_ms), ("limit", limit_ms))
    return [name for name, at in thresholds if before_ms < at <= after_ms]
