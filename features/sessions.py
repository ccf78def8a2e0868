"""Sessions in event time: one user's login/logout/join/leave/heartbeat events -> presence pieces.

A ``Presence`` piece says "this user was online (in this room, or in none) from start to end". Screen
time is the sum of a user's pieces; time with strangers comes from the room pieces of everyone in a room.

Rules, applied to each user's events in event-time order:
- Events wait in a small buffer until the watermark is ``allowed_lateness_ms`` past them, then apply in
  (ts, login < leave < join < heartbeat < logout, event_id) order, so out-of-order events within the
  allowed lateness are applied as if they had come in order. An event older than what has been applied
  (or than watermark - allowed lateness) is too late: refused with the reason, for the dead-letter topic.
- A repeated event_id is ignored (at-least-once delivery repeats records), and counted.
- An event whose ``ts`` is more than ``max_clock_ahead_ms`` ahead of its Kafka timestamp is refused.
- A session with no logout ends ``heartbeat_timeout_ms`` after its last event; so does its room presence.
- Anything that shows the user is online (join, heartbeat) while the tracker thinks they are not starts a
  session (an implicit login, counted); a heartbeat naming another room moves them there (a lost join,
  counted); a leave of a room they are not in changes nothing but is counted; a second login is a
  heartbeat. Pieces never have negative length: events apply in time order and a piece runs from the
  last applied event to the next.

The whole state is plain JSON (``to_json``/``from_json``), kept by the Flink job as one string per user.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from features.json_state import JsonState
from lifeguard.config import FeaturesConfig
from lifeguard.schemas import SessionEvent

# At equal times: a room switch is a leave then a join; a login comes first and a logout last.
_TYPE_ORDER = {"login": 0, "leave": 1, "join": 2, "heartbeat": 3, "logout": 4}


def clock_ahead(ts: int, received_ms: int, settings: FeaturesConfig) -> str | None:
    """Why an event time is not believable (too far ahead of when Kafka got the record), or None."""
    if ts > received_ms + settings.max_clock_ahead_ms:
        return (f"event time {ts} is {ts - received_ms} ms ahead of its Kafka timestamp "
                f"(more than {settings.max_clock_ahead_ms} ms)")
    return None


@dataclass(frozen=True)
class Presence:
    user_id: str
    room_id: str | None  # None: online but in no room
    start_ms: int
    end_ms: int

    @property
    def duration_ms(self) -> int:
        return self.end_ms - self.start_ms


@dataclass
class UserSessions(JsonState):
    """One user's session tracker: buffered events, where the user is, and what has been emitted."""

    STATE_FIELDS = ('pending', 'applied', 'applied_until_ms', 'online', 'room_id', 'mark_ms', 'last_seen_ms')

    user_id: str
    settings: FeaturesConfig = field(default_factory=FeaturesConfig, repr=False)
    pending: dict[str, dict] = field(default_factory=dict)  # event_id -> event (JSON), not yet applied
    applied: dict[str, int] = field(default_factory=dict)  # event_id -> ts, remembered to drop repeats
    applied_until_ms: int = -1  # every event at or before this time has been applied
    online: bool = False
    room_id: str | None = None
    mark_ms: int = 0  # presence up to here has been emitted as pieces
    last_seen_ms: int = 0
    anomalies: Counter = field(default_factory=Counter)

    # ---- input ----

    def offer(self, event: SessionEvent, received_ms: int, watermark_ms: int) -> str | None:
        """Buffers ``event``; returns None, or why it is refused (then it is a dead letter), or "duplicate"."""
        if event.event_id in self.pending or event.event_id in self.applied:
            self.anomalies["duplicate"] += 1
            return "duplicate"
        ahead = clock_ahead(event.ts, received_ms, self.settings)
        if ahead:
            self.anomalies["clock_ahead"] += 1
            return ahead
        horizon = max(self.applied_until_ms, watermark_ms - self.settings.allowed_lateness_ms)
        if event.ts < horizon:
            self.anomalies["too_late"] += 1
            return (f"late session event: time {event.ts} is {horizon - event.ts} ms before what has been applied "
                    f"(allowed lateness {self.settings.allowed_lateness_ms} ms)")
        self.pending[event.event_id] = event.model_dump(mode="json")
        return None

    def timers(self) -> list[int]:
        """Event times at which ``advance`` has work: each pending event's release, and the session's expiry."""
        lateness = self.settings.allowed_lateness_ms
        times = {e["ts"] + lateness for e in self.pending.values()}
        if self.online:
            times.add(self.last_seen_ms + self.settings.heartbeat_timeout_ms + lateness)
        return sorted(times)

    def advance(self, watermark_ms: int) -> list[Presence]:
        """Applies every buffered event now past the allowed lateness, and expires a timed-out session."""
        horizon = watermark_ms - self.settings.allowed_lateness_ms
        due = sorted((e for e in self.pending.values() if e["ts"] <= horizon),
                     key=lambda e: (e["ts"], _TYPE_ORDER[e["type"]], e["event_id"]))
        pieces: list[Presence] = []
        for event in due:
            del self.pending[event["event_id"]]
            self.applied[event["event_id"]] = event["ts"]
            pieces += self._apply(event["ts"], event["type"], event.get("room_id"))
        pieces += self._expire(horizon)
        self.applied_until_ms = max(self.applied_until_ms, horizon)
        # Remembered ids only matter while a repeat could still be applied; older repeats are too late anyway.
        forget_before = self.applied_until_ms - self.settings.allowed_lateness_ms
        self.applied = {i: ts for i, ts in self.applied.items() if ts >= forget_before}
        return pieces

    # ---- the state machine, one event at a time in time order ----

    def _apply(self, ts: int, kind: str, room_id: str | None) -> list[Presence]:
        pieces = self._expire(ts - 1)  # a gap longer than the timeout ended the previous session
        if not self.online:
            if kind in ("leave", "logout"):
                self.anomalies[f"{kind}_while_offline"] += 1
                self.last_seen_ms = max(self.last_seen_ms, ts)
                return pieces
            if kind != "login":
                self.anomalies["implicit_login"] += 1
            self.online, self.room_id, self.mark_ms = True, None, ts
        elif kind == "login":
            self.anomalies["login_while_online"] += 1
        self.last_seen_ms = ts
        if kind == "join" or (kind == "heartbeat" and room_id is not None and room_id != self.room_id):
            if kind == "heartbeat":
                self.anomalies["heartbeat_in_unjoined_room"] += 1
            pieces += self._move(ts, room_id)
        elif kind == "leave":
            if room_id != self.room_id:
                self.anomalies["leave_without_join"] += 1
                pieces += self._emit(ts)
            else:
                pieces += self._move(ts, None)
        elif kind == "logout":
            pieces += self._emit(ts)
            self.online, self.room_id = False, None
        else:
            pieces += self._emit(ts)
        return pieces

    def _expire(self, now_ms: int) -> list[Presence]:
        end = self.last_seen_ms + self.settings.heartbeat_timeout_ms
        if not self.online or end > now_ms:
            return []
        self.anomalies["timed_out"] += 1
        pieces = self._emit(end)
        self.online, self.room_id = False, None
        return pieces

    def _move(self, ts: int, room_id: str | None) -> list[Presence]:
        pieces = self._emit(ts)
        self.room_id = room_id
        return pieces

    def _emit(self, until_ms: int) -> list[Presence]:
        start, self.mark_ms = self.mark_ms, max(self.mark_ms, until_ms)
        return [Presence(self.user_id, self.room_id, start, until_ms)] if until_ms > start else []

    # ---- state as JSON ----

    @property
    def is_idle(self) -> bool:
        """Nothing buffered, offline, no repeats to watch for: the job may drop this user's state."""
        return not self.pending and not self.online and not self.applied
