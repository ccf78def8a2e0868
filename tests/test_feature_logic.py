"""Stranger time, screen time, the child's day and its alerts, age signals and behaviour features,
against hand-computed timelines."""
from __future__ import annotations

import json

import pytest

from features.age_signals import age_claims, contradiction
from features.alerts import AlertCandidate, AlertGate
from features.behaviour import UserActivity, decision_categories
from features.child_day import ChildDay
from lifeguard.profiles import UserProfile
from features.screen_time import local_day, previous_local_day, screen_time_crossings, split_by_local_day
from features.sessions import Presence
from lifeguard.config import FeaturesConfig
from features.stranger_time import minute_buckets, stranger_time, union
from lifeguard.schemas import Action, AgeBand, ChatMessage, Decision, Superseded

T0 = 1_767_225_600_000  # 2026-01-01T00:00:00Z
S, MIN = 1000, 60_000

KID = UserProfile("kid", AgeBand.UNDER_13, friend_ids=("pal",), parent_id="p-kid", daily_limit_minutes=60,
                  timezone="America/New_York")
PAL = UserProfile("pal", AgeBand.UNDER_13, friend_ids=("kid",))
TEEN = UserProfile("teen", AgeBand.TEEN_13_15)
OLDER_TEEN = UserProfile("older-teen", AgeBand.TEEN_16_17)
ADULT = UserProfile("adult", AgeBand.ADULT)
PROFILES = {p.user_id: p for p in (KID, PAL, TEEN, OLDER_TEEN, ADULT)}


def at(user, room, start_min, end_min) -> Presence:
    return Presence(user, room, T0 + int(start_min * MIN), T0 + int(end_min * MIN))


# ---- stranger time ----------------------------------------------------------------------------------

def test_stranger_minutes_hand_computed():
    # lobby: kid 0-30, pal (friend) 0-60, teen (stranger, not much older) 10-20, adult 25-40
    # obby:  kid 40-50, older teen 45-70 (two bands older than under_13)
    pieces = [at("kid", "lobby", 0, 30), at("pal", "lobby", 0, 60), at("teen", "lobby", 10, 20),
              at("adult", "lobby", 25, 40), at("kid", "obby", 40, 50), at("older-teen", "obby", 45, 70)]
    by_child = {s.child_id: s for s in stranger_time(pieces, PROFILES)}
    kid = by_child["kid"]
    assert kid.stranger_ms == (10 + 5 + 5) * MIN  # teen 10-20, adult 25-30, older teen 45-50
    assert kid.older_stranger_ms == (5 + 5) * MIN  # adult 25-30, older teen 45-50
    # pal is a child too: kid is a friend; teen, adult and nobody else are strangers in the lobby.
    assert by_child["pal"].stranger_ms == (10 + 15) * MIN and by_child["pal"].older_stranger_ms == 15 * MIN
    assert "adult" not in by_child  # only children have stranger time
    assert by_child["teen"].stranger_ms == 10 * MIN and by_child["teen"].older_stranger_ms == 0


def test_overlapping_strangers_count_once_and_unknown_users_are_strangers():
    pieces = [at("kid", "lobby", 0, 10), at("x", "lobby", 0, 8), at("y", "lobby", 4, 12), at("kid", "lobby", 10, 10)]
    kid = stranger_time(pieces, PROFILES)[0]
    assert kid.child_id == "kid" and kid.stranger_ms == 10 * MIN  # x and y overlap 4-8: counted once
    assert kid.older_stranger_ms == 0  # unknown age is never "older"


def test_no_time_with_friends_only_or_alone():
    assert stranger_time([at("kid", "lobby", 0, 30), at("pal", "lobby", 0, 30)], PROFILES)[0].stranger_ms == 0
    assert stranger_time([at("kid", "lobby", 0, 30), at("adult", "obby", 0, 30)], PROFILES)[0].stranger_ms == 0


def test_minute_buckets_cut_at_minute_boundaries_and_add_up():
    parts = minute_buckets(at("kid", "lobby", 0.5, 2.25))
    assert [(m - T0) // MIN for m, _ in parts] == [0, 1, 2]
    assert [p.duration_ms for _, p in parts] == [30 * S, 60 * S, 15 * S]
    assert union([(0, 5), (3, 9), (12, 12), (10, 11)]) == [(0, 9), (10, 11)]


# ---- screen time and the child's day -------------------------------------------------------------------

def test_local_days_follow_the_profile_time_zone():
    # 2026-01-01T04:30Z is still 2025-12-31 in New York (UTC-5).
    start, end = T0 + 4 * 60 * MIN + 30 * MIN, T0 + 5 * 60 * MIN + 30 * MIN
    assert local_day(start, "America/New_York") == "2025-12-31"
    assert split_by_local_day(start, end, "America/New_York") == [("2025-12-31", 30 * MIN), ("2026-01-01", 30 * MIN)]
    assert split_by_local_day(start, end, "Not/AZone") == [("2026-01-01", 60 * MIN)]
    assert previous_local_day(end, "America/New_York") == "2025-12-31"


def test_screen_time_thresholds():
    assert screen_time_crossings(0, 47 * MIN, 60, 0.8) == []
    assert screen_time_crossings(47 * MIN, 48 * MIN, 60, 0.8) == ["warning"]
    assert screen_time_crossings(47 * MIN, 61 * MIN, 60, 0.8) == ["warning", "limit"]
    assert screen_time_crossings(61 * MIN, 90 * MIN, 60, 0.8) == []
    assert screen_time_crossings(0, 10_000 * MIN, 0, 0.8) == []  # no limit set


def test_child_day_screen_time_warning_then_limit():
    day = ChildDay("kid", FeaturesConfig())
    noon = T0 + 17 * 60 * MIN  # 12:00 in New York
    candidates = []
    for i in range(0, 70, 10):  # online 70 minutes in 10-minute pieces
        candidates += day.add_presence(noon + i * MIN, noon + (i + 10) * MIN, KID)
    assert [(c.kind, c.severity) for c in candidates] == [("screen_time", "info"), ("screen_time", "warning")]
    assert candidates[0].event_ts == noon + 50 * MIN and candidates[1].event_ts == noon + 60 * MIN
    (totals,) = day.totals()
    assert totals.day == "2026-01-01" and totals.screen_minutes == 70


def test_child_day_stranger_alerts_and_conversation_minutes():
    settings = FeaturesConfig(older_stranger_alert_minutes=2, stranger_dm_alert_minutes=2)
    day = ChildDay("kid", settings)
    noon = T0 + 17 * 60 * MIN
    first = day.add_stranger_time(noon, 60 * S, 60 * S, KID)
    second = day.add_stranger_time(noon + MIN, 60 * S, 60 * S, KID)
    assert first == [] and [(c.kind, c.severity) for c in second] == [("stranger_time", "warning")]
    dms = [day.add_conversation_minute(noon + m * MIN, KID) for m in (0, 0, 1, 5)]
    assert [len(d) for d in dms] == [0, 0, 1, 0]  # the same minute counts once; the second minute alerts
    (totals,) = day.totals()
    assert (totals.stranger_minutes, totals.older_stranger_minutes, totals.stranger_dm_minutes) == (2, 2, 3)


def test_child_day_keeps_two_days_and_drops_older_updates():
    day = ChildDay("kid", FeaturesConfig())
    for d in range(3):
        day.add_presence(T0 + d * 1440 * MIN + 17 * 60 * MIN, T0 + d * 1440 * MIN + 18 * 60 * MIN, KID)
    assert [t.day for t in day.totals()] == ["2026-01-02", "2026-01-03"]
    assert day.add_presence(T0 + 17 * 60 * MIN, T0 + 18 * 60 * MIN, KID) == [] and day.dropped_late == 1
    restored = ChildDay.from_json("kid", FeaturesConfig(), day.to_json())
    assert restored.totals() == day.totals()


# ---- alerts -----------------------------------------------------------------------------------------

def candidate(kind="screen_time", severity="warning", ts=T0, day="2026-01-01") -> AlertCandidate:
    return AlertCandidate("kid", kind, severity, day, "summary", ("reason",), ts)


def test_alert_names_the_parent_and_is_deduplicated_within_the_window():
    gate = AlertGate(dedup_ms=60 * MIN)
    (alert,) = gate.admit(candidate(), KID, now_ms=T0 + 5)
    assert alert.parent_id == "p-kid" and alert.child_id == "kid" and alert.kind == "screen_time"
    assert alert.alert_id == "screen_time:kid:2026-01-01:warning" and alert.reasons == ["reason"]
    assert gate.admit(candidate(ts=T0 + 30 * MIN), KID, T0) == [] and gate.suppressed == 1
    assert len(gate.admit(candidate(severity="info", ts=T0 + 30 * MIN), KID, T0)) == 1  # another severity
    assert len(gate.admit(candidate(ts=T0 + 61 * MIN), KID, T0)) == 1  # the window has passed


def test_no_parent_no_alert_but_counted():
    gate = AlertGate(dedup_ms=60 * MIN)
    assert gate.admit(candidate(), PAL, T0) == [] and gate.no_parent == 1


def test_daily_digest_holds_alerts_until_the_day_ends():
    digest_kid = UserProfile("kid", AgeBand.UNDER_13, parent_id="p-kid", alert_delivery="daily_digest")
    gate = AlertGate(dedup_ms=60 * MIN)
    assert gate.admit(candidate("screen_time", "info"), digest_kid, T0) == []
    assert gate.admit(candidate("screen_time", "warning", T0 + MIN), digest_kid, T0) == []
    assert gate.admit(candidate("stranger_time", "urgent", T0 + 2 * MIN), digest_kid, T0) == []
    assert gate.admit(candidate("stranger_time", "urgent", T0 + 120 * MIN, day="2026-01-02"), digest_kid, T0) == []
    alerts = gate.flush_digest(digest_kid, "2026-01-01", T0)
    assert [(a.kind, a.severity) for a in alerts] == [("screen_time", "warning"), ("stranger_time", "urgent")]
    assert alerts[0].summary.startswith("Daily digest for 2026-01-01: 2 notice(s).")
    assert len(gate.digest) == 1  # the next day's stays held


# ---- age signals ------------------------------------------------------------------------------------

@pytest.mark.parametrize("text, ages", [
    ("I'm 11", [11]), ("im 12 years old lol", [12]), ("i just turned 9!", [9]), ("I'm in 6th grade", [11]),
    ("im in year 7", [11]), ("i am 34 and my wife plays too", [34, None]),
    ("im level 11 now", []), ("i'm 100% sure", []), ("im 2 kills behind", []), ("I'm 5 minutes late", []),
    ("gg wp", []), ("i have 12k cash", []),
])
def test_age_claims(text, ages):
    assert [c.age for c in age_claims(text)] == ages


def test_contradictions():
    (child_claim,) = age_claims("I'm 11")
    assert "declared adult" in contradiction(AgeBand.ADULT, False, child_claim)
    assert contradiction(AgeBand.UNDER_13, False, child_claim) is None
    assert contradiction(AgeBand.TEEN_13_15, False, child_claim) is None  # one band apart: not flagged
    assert contradiction(None, False, child_claim) is None  # nothing declared to contradict
    (adult_claim,) = age_claims("at work today, so tired")
    assert "(an adult, adult)" in contradiction(AgeBand.UNDER_13, False, adult_claim)


# ---- behaviour features ----------------------------------------------------------------------------

def chat(user, text, ts, to=None, room=None, event_id=None) -> ChatMessage:
    return ChatMessage(schema_version=1, event_id=event_id or f"c-{user}-{ts}", ts=ts, user_id=user,
                       channel="text", room_id=None if to else (room or "lobby"), recipient_id=to, text=text)


def decision(user, action, ts, reasons=()) -> Decision:
    return Decision(event_id=f"d-{user}-{ts}", user_id=user, kind="chat", action=Action(action), scores={},
                    reasons=list(reasons), age_band=AgeBand.UNDER_13, policy_version="p", model_version="m",
                    event_ts=ts, decided_ts=ts, latency_ms=0)


def test_behaviour_windows_hand_computed():
    activity = UserActivity("adult", FeaturesConfig())
    # 7 d ago + 1 h: one block (toxicity); 2 h ago: a review; 30 min ago: a block (rule) and an allow.
    now = T0 + 8 * 1440 * MIN
    activity.on_decision(decision("adult", "block", now - 7 * 1440 * MIN + 60 * MIN, ["model:toxicity 0.9 >= 0.8"]))
    activity.on_decision(decision("adult", "review", now - 120 * MIN))
    activity.on_decision(decision("adult", "block", now - 30 * MIN, ["rule:off_platform_lure matched 'add me'"]))
    activity.on_decision(decision("adult", "allow", now - 30 * MIN))
    for i in range(6):
        activity.on_chat(chat("adult", "hi", now - i * MIN, room="lobby"), ADULT, None, now)
    row = activity.row()
    assert (row.violations_1h, row.violations_24h, row.violations_7d) == (1, 1, 2)
    assert (row.decisions_24h, row.flagged_24h) == (3, 1)
    assert row.violation_rate_24h == round(1 / 3, 4) and row.violation_rate_7d == 0.5
    assert json.loads(row.violations_by_category_7d) == {"off_platform_lure": 1, "toxicity": 1}
    assert row.messages_1h == 6 and row.messages_per_minute_1h == 0.1


def test_a_reviewers_correction_replaces_what_the_superseded_decision_counted():
    activity = UserActivity("adult", FeaturesConfig())
    now = T0 + 1440 * MIN
    blocked = decision("adult", "block", now - 30 * MIN, ["model:toxicity 0.9 >= 0.8"])
    reviewed = decision("adult", "review", now - 20 * MIN, ["model:threat 0.5 >= 0.4"])
    for d in (blocked, reviewed):
        activity.on_decision(d)
    assert (activity.row().violations_24h, activity.row().flagged_24h) == (1, 1)
    for d, action, reason in ((blocked, "allow", "reviewer decision md-1: overturned"),
                              (reviewed, "block", "reviewer decision md-2: confirmed threat")):
        activity.on_decision(d.model_copy(update={
            "action": Action(action), "reasons": [reason], "decided_ts": now,
            "supersedes": Superseded(decided_ts=d.decided_ts, action=d.action, reasons=d.reasons)}))
    row = activity.row()
    assert (row.decisions_24h, row.violations_24h, row.flagged_24h) == (2, 1, 0)  # the same two events
    assert json.loads(row.violations_by_category_7d) == {"threat": 1}


def test_contacts_minors_share_and_conversation_minutes():
    activity = UserActivity("adult", FeaturesConfig(many_minors_24h=3))
    children = [UserProfile(f"c{i}", AgeBand.UNDER_13) for i in range(3)]
    effects = [activity.on_chat(chat("adult", "hey", T0 + i * MIN, to=c.user_id), ADULT, c, T0) for i, c in
               enumerate(children)]
    activity.on_chat(chat("adult", "hey again", T0 + 5 * MIN, to="c0"), ADULT, children[0], T0)
    activity.on_chat(chat("adult", "yo", T0 + 6 * MIN, to="teen"), ADULT, TEEN, T0)
    activity.on_chat(chat("adult", "yo", T0 + 7 * MIN, to="adult2"), ADULT, UserProfile("adult2", AgeBand.ADULT), T0)
    row = activity.row()
    assert row.new_contacts_24h == 5 and row.minors_contacted_24h == 4  # c0, c1, c2, teen
    assert row.minor_dm_share_24h == round(5 / 6, 4)
    assert effects[0].conversation_minutes == [("c0", T0)]
    assert [r.categories for r in effects[2].review_items] == [["many_minors"]]  # the third distinct minor


def test_age_mismatch_goes_to_review_once_and_flags_later_messages_to_children():
    activity = UserActivity("adult", FeaturesConfig())
    first = activity.on_chat(chat("adult", "lol im 12 too", T0, room="lobby"), ADULT, None, T0)
    again = activity.on_chat(chat("adult", "i'm 12", T0 + MIN, room="lobby"), ADULT, None, T0)
    (review,) = first.review_items
    assert review.kind == "account" and review.categories == ["age_mismatch"] and again.review_items == []
    dm = activity.on_chat(chat("adult", "wanna play", T0 + 2 * MIN, to="kid"), ADULT, KID, T0)
    (alert,) = dm.alert_candidates
    assert alert.child_id == "kid" and alert.kind == "age_mismatch" and "declared adult" in alert.reasons[0]
    restored = UserActivity.from_json("adult", FeaturesConfig(), activity.to_json())
    assert restored.row() == activity.row()


def test_decision_categories():
    assert decision_categories(["model:toxicity 0.93 >= block 0.85", "link:blocklisted evil.example"]) == [
        "link", "toxicity"]
    assert decision_categories([]) == ["other"]
