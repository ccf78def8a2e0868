"""One child's day: screen time, stranger time and conversation minutes per local day, and the alerts
their thresholds raise (see ``features.screen_time`` and ``features.stranger_time`` for the definitions).

Bounded state: the two most recent local days are kept (a day's totals are final once the next has
begun plus the job's lateness); an update for an older day is dropped and counted.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field

from features.alerts import AlertCandidate, AlertGate
from lifeguard.profiles import UserProfile
from features.screen_time import MINUTE_MS, local_day, screen_time_crossings, split_by_local_day
from lifeguard.config import FeaturesConfig

DAYS_KEPT = 2


@dataclass(frozen=True)
class DayTotals:
    """A row of the Feast ``child_daily`` view."""

    user_id: str
    day: str
    screen_minutes: float
    stranger_minutes: float
    older_stranger_minutes: float
    stranger_dm_minutes: int
    event_ts: int  # event time of the latest update


@dataclass
class ChildDay:
    user_id: str
    settings: FeaturesConfig = field(default_factory=FeaturesConfig, repr=False)
    days: dict[str, dict] = field(default_factory=dict)
    gate: AlertGate | None = None
    dropped_late: int = 0

    def __post_init__(self):
        self.gate = self.gate or AlertGate(self.settings.alert_dedup_ms)

    # ---- inputs: each returns the alert candidates it raised ----

    def add_presence(self, start_ms: int, end_ms: int, profile: UserProfile) -> list[AlertCandidate]:
        candidates = []
        for day, ms in split_by_local_day(start_ms, end_ms, profile.timezone):
            totals = self._day(day)
            if totals is None:
                continue
            before = totals["screen_ms"]
            totals["screen_ms"] += ms
            totals["ts"] = max(totals["ts"], end_ms)
            for crossed in screen_time_crossings(before, totals["screen_ms"], profile.daily_limit_minutes,
                                                 self.settings.screen_warning_share):
                candidates.append(self._screen_alert(crossed, day, totals, profile, end_ms))
        return candidates

    def add_stranger_time(self, minute_ms: int, stranger_ms: int, older_ms: int,
                          profile: UserProfile) -> list[AlertCandidate]:
        day = local_day(minute_ms, profile.timezone)
        totals = self._day(day)
        if totals is None:
            return []
        before = totals["older_ms"]
        totals["stranger_ms"] += stranger_ms
        totals["older_ms"] += older_ms
        totals["ts"] = max(totals["ts"], minute_ms + MINUTE_MS)
        threshold = self.settings.older_stranger_alert_minutes * MINUTE_MS
        if before < threshold <= totals["older_ms"]:
            return [AlertCandidate(
                self.user_id, "stranger_time", "warning", day,
                f"Your child has spent {totals['older_ms'] / MINUTE_MS:.0f} minutes today in rooms with adults "
                f"or much older players who are not on their friend list.",
                (f"older-stranger minutes {totals['older_ms'] / MINUTE_MS:.1f} >= "
                 f"{self.settings.older_stranger_alert_minutes:g} on {day}",), minute_ms + MINUTE_MS)]
        return []

    def add_conversation_minute(self, minute_ms: int, profile: UserProfile) -> list[AlertCandidate]:
        day = local_day(minute_ms, profile.timezone)
        totals = self._day(day)
        if totals is None or minute_ms in totals["dm_minutes"]:
            return []
        totals["dm_minutes"].append(minute_ms)
        totals["ts"] = max(totals["ts"], minute_ms + MINUTE_MS)
        if len(totals["dm_minutes"]) == self.settings.stranger_dm_alert_minutes:
            return [AlertCandidate(
                self.user_id, "stranger_time", "urgent", day,
                "Your child has been messaging directly with someone who is not on their friend list.",
                (f"direct-message minutes with non-friends {len(totals['dm_minutes'])} >= "
                 f"{self.settings.stranger_dm_alert_minutes:g} on {day}",), minute_ms)]
        return []

    # ---- outputs ----

    def totals(self) -> list[DayTotals]:
        return [DayTotals(self.user_id, day, round(t["screen_ms"] / MINUTE_MS, 3), round(t["stranger_ms"] / MINUTE_MS, 3),
                          round(t["older_ms"] / MINUTE_MS, 3), len(t["dm_minutes"]), t["ts"])
                for day, t in sorted(self.days.items())]

    def _day(self, day: str) -> dict | None:
        if day not in self.days:
            if len(self.days) >= DAYS_KEPT and day < min(self.days):
                self.dropped_late += 1
                return None
            self.days[day] = {"screen_ms": 0, "stranger_ms": 0, "older_ms": 0, "dm_minutes": [], "ts": 0}
            for old in sorted(self.days)[:-DAYS_KEPT]:
                del self.days[old]
        return self.days[day]

    def _screen_alert(self, crossed: str, day: str, totals: dict, profile: UserProfile, ts: int) -> AlertCandidate:
        minutes, limit = totals["screen_ms"] / MINUTE_MS, profile.daily_limit_minutes
        if crossed == "limit":
            summary = f"Your child has reached today's screen-time limit of {limit} minutes."
        else:
            summary = f"Your child has used {minutes:.0f} of today's {limit} minutes of screen time."
        return AlertCandidate(self.user_id, "screen_time", "warning" if crossed == "limit" else "info", day, summary,
                              (f"screen time {minutes:.1f} min {'>=' if crossed == 'limit' else 'near'} "
                               f"daily limit {limit} min on {day}",), ts)

    # ---- state as JSON ----

    def to_json(self) -> str:
        return json.dumps({"days": self.days, "gate": self.gate.to_dict()})

    @classmethod
    def from_json(cls, user_id: str, settings: FeaturesConfig, text: str | None) -> "ChildDay":
        day = cls(user_id, settings)
        if text:
            state = json.loads(text)
            day.days = state["days"]
            day.gate = AlertGate(settings.alert_dedup_ms, **state["gate"])
        return day
