"""features.sessions: presence pieces from session events, against hand-computed timelines.

Times are in seconds from T0 (a minute boundary); the allowed lateness is 30 s and the heartbeat
timeout 120 s unless a test says otherwise.
"""
from __future__ import annotations

import itertools

import pytest

from features.sessions import Presence, UserSessions
from lifeguard.config import FeaturesConfig
from lifeguard.schemas import SessionEvent

T0 = 1_767_225_600_000
S = 1000
SETTINGS = FeaturesConfig(heartbeat_timeout_ms=120 * S, allowed_lateness_ms=30 * S, max_clock_ahead_ms=300 * S)
_ids = itertools.count()


def ev(at_s: float, kind: str, room: str | None = None, event_id: str | None = None) -> SessionEvent:
    return SessionEvent(schema_version=1, event_id=event_id or f"s-{next(_ids)}", ts=T0 + int(at_s * S),
                        user_id="kid", type=kind, room_id=room)


def piece(room, start_s, end_s) -> Presence:
    return Presence("kid", room, T0 + int(start_s * S), T0 + int(end_s * S))


def run(events, until_s: float, arrival_watermarks=None) -> tuple[UserSessions, list[Presence], list[str]]:
    """Offers events in the given (arrival) order, each with the watermark it arrives at (default: none
    yet), then advances the watermark to ``until_s``; returns the tracker, pieces and refusals."""
    tracker = UserSessions("kid", SETTINGS)
    pieces, refusals = [], []
    for i, event in enumerate(events):
        watermark = T0 + int(arrival_watermarks[i] * S) if arrival_watermarks else -(2 ** 62)
        pieces += tracker.advance(watermark) if arrival_watermarks else []
        reason = tracker.offer(event, received_ms=event.ts, watermark_ms=watermark)
        if reason:
            refusals.append(reason)
    pieces += tracker.advance(T0 + int(until_s * S))
    return tracker, pieces, refusals


def total(pieces, room="any") -> int:
    return sum(p.duration_ms for p in pieces if room == "any" or p.room_id == room) // S


def test_a_session_in_order():
    # login 0, join lobby 10, heartbeat 70, leave 100, join obby 100, logout 400 (heartbeats in between)
    events = [ev(0, "login"), ev(10, "join", "lobby"), ev(70, "heartbeat", "lobby"), ev(100, "leave", "lobby"),
              ev(100, "join", "obby"), ev(200, "heartbeat", "obby"), ev(300, "heartbeat", "obby"),
              ev(400, "leave", "obby"), ev(400, "logout")]
    tracker, pieces, refusals = run(events, until_s=1000)
    assert refusals == []
    assert pieces == [piece(None, 0, 10), piece("lobby", 10, 70), piece("lobby", 70, 100), piece("obby", 100, 200),
                      piece("obby", 200, 300), piece("obby", 300, 400)]
    assert total(pieces) == 400 and total(pieces, "lobby") == 90 and total(pieces, "obby") == 300
    assert not tracker.online and not tracker.anomalies


def test_out_of_order_within_lateness_is_applied_as_if_in_order():
    in_order = [ev(0, "login"), ev(5, "join", "lobby"), ev(60, "heartbeat", "lobby"), ev(90, "logout")]
    shuffled = [in_order[2], in_order[0], in_order[3], in_order[1]]
    # They arrive while the watermark is still below the first event's time + lateness.
    _, expected, _ = run(in_order, until_s=500)
    _, pieces, refusals = run(shuffled, until_s=500, arrival_watermarks=[0, 20, 25, 29])
    assert refusals == [] and pieces == expected
    assert total(pieces) == 90 and total(pieces, "lobby") == 85


def test_event_beyond_the_allowed_lateness_is_refused_with_the_reason():
    events = [ev(0, "login"), ev(100, "heartbeat"), ev(10, "join", "lobby")]
    # The late join arrives when the watermark is at 100 s: 10 s < 100 - 30 s.
    tracker, pieces, refusals = run(events, until_s=500, arrival_watermarks=[0, 50, 100])
    assert len(refusals) == 1 and refusals[0].startswith("late session event")
    assert tracker.anomalies["too_late"] == 1
    assert total(pieces, "lobby") == 0


def test_missing_logout_ends_heartbeat_timeout_after_the_last_event():
    events = [ev(0, "login"), ev(0, "join", "lobby"), ev(50, "heartbeat", "lobby")]
    tracker, pieces, _ = run(events, until_s=1000)
    # 50 s of heartbeats, then 120 s of timeout: presence ends at 170 s.
    assert pieces[-1].end_ms == T0 + 170 * S and total(pieces, "lobby") == 170
    assert not tracker.online and tracker.anomalies["timed_out"] == 1


def test_timeout_waits_for_the_watermark():
    tracker, pieces, _ = run([ev(0, "login"), ev(50, "heartbeat")], until_s=170)
    assert tracker.online and total(pieces) == 50  # 170 s - 30 s lateness has not reached the 170 s end
    assert tracker.timers()[-1] == T0 + 200 * S


def test_a_gap_longer_than_the_timeout_splits_the_session():
    # heartbeat at 0, then nothing until 600: the first session ends at 120, a new one starts at 600.
    events = [ev(0, "login"), ev(600, "heartbeat"), ev(660, "logout")]
    tracker, pieces, _ = run(events, until_s=2000)
    assert pieces == [piece(None, 0, 120), piece(None, 600, 660)]
    assert tracker.anomalies["implicit_login"] == 1


def test_duplicates_are_ignored():
    login, join = ev(0, "login"), ev(5, "join", "lobby")
    events = [login, join, ev(0, "login", event_id=login.event_id), join, ev(65, "logout")]
    tracker, pieces, refusals = run(events, until_s=500)
    assert refusals == ["duplicate", "duplicate"]
    assert total(pieces) == 65 and tracker.anomalies["duplicate"] == 2


def test_leave_without_join_and_unknown_rooms_never_go_negative():
    events = [ev(0, "leave", "nowhere"), ev(10, "login"), ev(20, "leave", "never-joined"),
              ev(30, "heartbeat", "ghost-room"), ev(40, "logout"), ev(50, "logout")]
    tracker, pieces, _ = run(events, until_s=500)
    assert all(p.duration_ms > 0 for p in pieces)
    assert pieces == [piece(None, 10, 20), piece(None, 20, 30), piece("ghost-room", 30, 40)]
    assert tracker.anomalies["leave_while_offline"] == 1
    assert tracker.anomalies["leave_without_join"] == 1
    assert tracker.anomalies["heartbeat_in_unjoined_room"] == 1
    assert tracker.anomalies["logout_while_offline"] == 1


def test_clock_far_in_the_future_is_refused():
    tracker = UserSessions("kid", SETTINGS)
    future = ev(3600, "login")
    reason = tracker.offer(future, received_ms=T0, watermark_ms=T0)
    assert reason and "ahead of its Kafka timestamp" in reason
    assert tracker.advance(T0 + 10_000 * S) == []


def test_state_round_trips_through_json_and_ends_idle():
    events = [ev(0, "login"), ev(10, "join", "lobby")]
    tracker, _, _ = run(events, until_s=40)
    restored = UserSessions.from_json("kid", SETTINGS, tracker.to_json())
    assert restored.online and restored.room_id == "lobby"
    pieces = restored.advance(T0 + 1000 * S)
    assert total(pieces, "lobby") == 120  # from 10 s to the timeout at 130 s
    assert restored.advance(T0 + 2000 * S) == [] and restored.is_idle


@pytest.mark.parametrize("seed", range(5))
def test_any_arrival_order_within_lateness_gives_the_same_pieces(seed):
    import random

    rng = random.Random(seed)
    events = [ev(0, "login"), ev(3, "join", "a"), ev(9, "heartbeat", "a"), ev(15, "leave", "a"),
              ev(15, "join", "b"), ev(25, "heartbeat", "b"), ev(28, "logout")]
    _, expected, _ = run(events, until_s=400)
    shuffled = events[:]
    rng.shuffle(shuffled)
    _, pieces, refusals = run(shuffled, until_s=400, arrival_watermarks=[0] * len(events))
    assert refusals == [] and pieces == expected
