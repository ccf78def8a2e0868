"""Conversation-level grooming detection (udfs.grooming): the pair window, the risk and its reasons, the
cool-down, and hand-written conversations through the real Screener (its second stage embeds them for the bank).

The bank is project-written and synthetic; the conversations below are written apart from it (a test
checks that none of their lines is in the bank), so a crossing here is not a verbatim look-up.
"""
from __future__ import annotations

import json
from dataclasses import replace

import pytest

from lifeguard.profiles import UserProfile
from lifeguard import PROJECT_ROOT
from lifeguard.config import load_config
from lifeguard.schemas import Action, AgeBand, ChatMessage, Decision, ParentAlert, ReviewItem
from tools.simulator import GROOMING_STAGES
from udfs.grooming.bank import load_bank
from udfs.grooming.pairs import add_meeting, add_message, step
from udfs.grooming.rooms import RoomMeeting, RoomSpeaker, RoomState, room_meetings
from udfs.grooming.settings import DAY_MS, GroomingSettings, HOUR_MS, STAGES
from udfs.grooming.turns import ConversationTurn, MessageSignals, grooming_flags, is_late_night, pair_key
from udfs.parse import SourceRef
from udfs.policy import Signal
from udfs.screening import ScreeningInput, Screener

SETTINGS = GroomingSettings()


def configured(**changes) -> GroomingSettings:
    """SETTINGS with some configured values changed (lifeguard.config.GroomingConfig)."""
    return replace(SETTINGS, configured=SETTINGS.configured.model_copy(update=changes))


BANK_FILE = PROJECT_ROOT / "models" / "grooming" / "bank.jsonl"
T0 = 1_767_261_600_000  # 2026-01-01 10:00 UTC

# Parents who let everyone write: these conversations are judged on what is said, not on the contact settings.
KID = UserProfile("kid", AgeBand.UNDER_13, friend_ids=("kid-friend", "cousin"), parent_id="parent-of-kid",
                  dm_policy="everyone")
KID_FRIEND = UserProfile("kid-friend", AgeBand.UNDER_13, friend_ids=("kid",), parent_id="parent-of-friend")
ADULT = UserProfile("adult", AgeBand.ADULT)
COUSIN = UserProfile("cousin", AgeBand.ADULT, friend_ids=("kid",))
TEEN = UserProfile("teen", AgeBand.TEEN_16_17, parent_id="parent-of-teen")

# An adult stranger and a child, written for these tests (none of these lines is in the bank): no single
# message is blocked; the pattern is friendship, risk assessment, secrecy, another app, a photo.
GROOMING = [
    (ADULT, "hi! you were amazing in that last round"),
    (ADULT, "i can show you how to get the golden armour if you want"),
    (KID, "ok thanks"),
    (ADULT, "you're way more grown up than most people your age"),
    (ADULT, "how old are you anyway?"),
    (KID, "11"),
    (ADULT, "is anyone else at home with you right now?"),
    (ADULT, "do your mum or dad ever look at your chats?"),
    (KID, "no"),
    (ADULT, "good, let's keep this just between us two"),
    (ADULT, "it's easier to talk on another app, what's your username there?"),
    (ADULT, "could you send me a selfie so i know who i'm talking to"),
    (ADULT, "nobody else needs to know about us"),
]
FRIENDS = [
    (KID, "gg that was fun"),
    (KID_FRIEND, "want to build a treehouse in creative tomorrow?"),
    (KID, "yes!! my mum says i can play after homework"),
    (KID_FRIEND, "don't tell anyone but i'm getting a puppy"),
    (KID, "omg what will you call it"),
    (KID_FRIEND, "send me a screenshot of your castle"),
    (KID, "ok here, i added a moat"),
    (KID_FRIEND, "you're the best at building"),
    (KID, "see you at school"),
    (KID_FRIEND, "bye!"),
]
COACH = [  # an adult the child does not know, talking only about the game
    (ADULT, "gg, nice moves in that match"),
    (KID, "thanks"),
    (ADULT, "the lava level is easier if you jump from the left side"),
    (ADULT, "good luck in the tournament this weekend"),
    (KID, "thank you!"),
]


# ---- pure: hand-built signals --------------------------------------------------------------------

def signals(i: int, contrast: float = 0.0, stage: str = "", flags: tuple[str, ...] = (), from_contact: bool = True,
            ts: int | None = None) -> MessageSignals:
    return MessageSignals(event_id=f"m{i}", ts=T0 + i * 10 * 60_000 if ts is None else ts, from_contact=from_contact,
                          contrast=contrast, stage=stage, synthetic_match=bool(stage), flags=flags, late_night=False)


def turn(message: MessageSignals, contact_band: AgeBand | None = AgeBand.ADULT, friends: bool = False,
         child_band: AgeBand = AgeBand.UNDER_13, parent: str | None = "parent-of-kid") -> ConversationTurn:
    return ConversationTurn(pair=pair_key("kid", "other"), child_id="kid", contact_id="other", child_band=child_band,
                            contact_band=contact_band, friends=friends, parent_to_alert=parent, timezone="UTC",
                            message=message, excerpt="...")


def run(messages: list[MessageSignals], **context) -> tuple[list, list[float]]:
    """The outputs over the conversation, and the pair risk after each message."""
    state, outputs, risks = None, [], []
    for message in messages:
        state, risk, emitted = step(state, turn(message, **context), SETTINGS, now_ms=message.ts + 5)
        outputs += emitted
        risks.append(risk)
    return outputs, [r.score for r in risks], risks[-1]


# Twelve mild messages: bank scores a little above the floor, a few stages, one lure and one secrecy hit.
MILD_ARC = [signals(i, contrast, stage, flags) for i, (contrast, stage, flags) in enumerate([
    (0.15, "friendship_forming", ()), (0.12, "friendship_forming", ()), (0.18, "relationship_forming", ()),
    (0.05, "", ()), (0.20, "risk_assessment", ()), (0.16, "risk_assessment", ()), (0.0, "", ()),
    (0.14, "exclusivity", ("rule:secrecy_and_photos",)), (0.22, "exclusivity", ()),
    (0.12, "isolation", ("rule:off_platform_lure",)), (0.19, "sexual", ()), (0.15, "exclusivity", ())])]


def test_mild_messages_from_an_adult_stranger_add_up_to_one_review_and_one_alert():
    outputs, scores, final = run(MILD_ARC)
    assert all(run([m])[1][0] < SETTINGS.configured.review_threshold for m in MILD_ARC)
    assert scores[2] < SETTINGS.configured.review_threshold <= scores[-1]
    reviews = [o for o in outputs if isinstance(o, ReviewItem)]
    alerts = [o for o in outputs if isinstance(o, ParentAlert)]
    assert len(reviews) == 1 and len(alerts) == 1  # once per pair per cool-down, not on every later message
    review, alert = reviews[0], alerts[0]
    assert review.kind == "conversation" and review.user_id == "other" and review.categories == ["sexual_minors"]
    assert alert.kind == "grooming_risk" and alert.parent_id == "parent-of-kid" and alert.child_role == "recipient"
    text = " | ".join(review.reasons)
    for words in ("age gap: adult contact, under_13 child", "not on the child's friend list", "first contact",
                  "risk assessment", "asks for secrecy or for photos", "project-written synthetic"):
        assert words in text
    assert any(r.startswith("asks to move to another app") for r in final.reasons)  # after the review
    assert review.reasons[0].startswith("conversation risk") and ">= review 0.50" in review.reasons[0]


def test_the_same_words_between_child_friends_stay_below_review():
    outputs, scores, _ = run(MILD_ARC, contact_band=AgeBand.UNDER_13, friends=True)
    assert outputs == [] and max(scores) < SETTINGS.context_floor


def test_an_adult_stranger_talking_only_about_the_game_stays_low():
    outputs, scores, _ = run([signals(i, contrast=0.08) for i in range(15)])
    assert outputs == [] and max(scores) == 0.0


def test_one_strong_message_alone_does_not_make_a_conversation_risk():
    _, scores, _ = run([signals(0, 0.5, "sexual", ("rule:secrecy_and_photos",))])
    assert scores[0] < SETTINGS.configured.review_threshold


def test_the_childs_own_replies_are_not_evidence_against_the_child():
    replies = [replace(m, from_contact=False) for m in MILD_ARC]
    outputs, scores, _ = run(replies)
    assert outputs == [] and max(scores) == 0.0


def test_a_sixteen_year_old_gets_a_review_but_no_parent_alert_outside_the_alert_bands():
    outputs, _, _ = run(MILD_ARC, child_band=AgeBand.TEEN_16_17, parent=None)
    assert [type(o) for o in outputs] == [ReviewItem]


def test_after_the_cool_down_a_pair_still_at_risk_is_reported_again():
    later = [replace(m, event_id=f"later-{m.event_id}", ts=m.ts + SETTINGS.configured.cooldown_ms) for m in MILD_ARC[-3:]]
    outputs, _, _ = run(MILD_ARC + later)
    assert sum(isinstance(o, ReviewItem) for o in outputs) == 2
    assert sum(isinstance(o, ParentAlert) for o in outputs) == 2


def test_the_window_keeps_at_most_n_messages_and_none_older_than_its_age():
    settings = configured(window_messages=5, window_ms=DAY_MS)
    state = None
    for i in range(8):
        state = add_message(state, signals(i), settings)
    assert [m.event_id for m in state.messages] == ["m3", "m4", "m5", "m6", "m7"]
    state = add_message(state, signals(99, ts=T0 + 2 * DAY_MS), settings)
    assert [m.event_id for m in state.messages] == ["m99"] and state.first_seen_ts == T0


def test_an_old_acquaintance_is_not_a_new_contact():
    messages = [signals(0), signals(1, ts=T0 + 5 * DAY_MS)]
    state = None
    for m in messages:
        state, risk, _ = step(state, turn(m), SETTINGS, m.ts)
    assert not any(r.startswith("first contact") for r in risk.reasons)


# ---- rooms: meetings and the move to direct messages ----------------------------------------------

def speaker(user: str, band: AgeBand, minutes: float) -> RoomSpeaker:
    return RoomSpeaker(user, band, T0 + int(minutes * 60_000))


def test_a_child_and_an_adult_writing_in_a_room_meet_once_per_window():
    state, meetings = room_meetings(None, "lobby", [speaker("kid", AgeBand.UNDER_13, 0),
                                                    speaker("adult", AgeBand.ADULT, 5)], SETTINGS)
    assert meetings == [RoomMeeting(pair_key("kid", "adult"), "lobby", T0 + 5 * 60_000)]
    state, again = room_meetings(state, "lobby", [speaker("kid", AgeBand.UNDER_13, 10)], SETTINGS)
    assert again == []  # already announced within the window
    later = SETTINGS.configured.room_meeting_window_ms / 60_000 + 12
    state, later_meetings = room_meetings(state, "lobby", [speaker("adult", AgeBand.ADULT, later - 1),
                                                           speaker("kid", AgeBand.UNDER_13, later)], SETTINGS)
    assert [m.ts for m in later_meetings] == [T0 + int(later * 60_000)]
    assert RoomState.from_json(state.to_json()) == state


@pytest.mark.parametrize("a, b", [(AgeBand.UNDER_13, AgeBand.TEEN_13_15), (AgeBand.ADULT, AgeBand.ADULT),
                                  (AgeBand.UNDER_13, AgeBand.UNDER_13)])
def test_near_ages_and_two_adults_do_not_meet(a, b):
    _, meetings = room_meetings(None, "lobby", [speaker("one", a, 0), speaker("two", b, 1)], SETTINGS)
    assert meetings == []


def test_speakers_further_apart_than_the_window_do_not_meet_and_the_room_keeps_only_recent_speakers():
    window_min = SETTINGS.configured.room_meeting_window_ms / 60_000
    state, meetings = room_meetings(None, "lobby", [speaker("kid", AgeBand.UNDER_13, 0),
                                                    speaker("adult", AgeBand.ADULT, window_min + 1)], SETTINGS)
    assert meetings == [] and [s.user_id for s in state.speakers] == ["adult"]
    crowd = [speaker(f"kid-{i}", AgeBand.UNDER_13, i / 100) for i in range(50)]
    state, _ = room_meetings(None, "lobby", crowd, configured(room_speakers_max=10))
    assert [s.user_id for s in state.speakers] == [f"kid-{i}" for i in range(40, 50)]


def test_a_stranger_who_moves_a_child_from_a_room_to_direct_messages_adds_context_and_says_so():
    met = add_meeting(None, RoomMeeting(pair_key("kid", "other"), "lobby", T0 - 10 * 60_000))
    first = signals(0, 0.15, "friendship_forming")
    state, moved, _ = step(met, turn(first), SETTINGS, first.ts)
    _, direct, _ = step(None, turn(first), SETTINGS, first.ts)
    assert moved.context > direct.context
    assert "moved to direct messages 10 min after meeting the child in room lobby" in moved.reasons
    assert (state.met_room, state.first_seen_ts) == ("lobby", first.ts)


def test_a_meeting_after_the_pair_began_writing_or_a_friend_is_no_move():
    first = signals(0)
    state, _, _ = step(None, turn(first), SETTINGS, first.ts)
    after = add_meeting(state, RoomMeeting(pair_key("kid", "other"), "lobby", first.ts + 60_000))
    assert after == state
    met = add_meeting(None, RoomMeeting(pair_key("kid", "other"), "lobby", T0 - 60_000))
    _, friend, _ = step(met, turn(first, friends=True), SETTINGS, first.ts)
    assert not any(r.startswith("moved to direct messages") for r in friend.reasons)


def test_late_night_is_judged_in_the_childs_time_zone():
    midnight_utc = T0 + 14 * HOUR_MS  # 2026-01-02 00:00 UTC
    assert is_late_night(midnight_utc, "UTC", SETTINGS.configured.late_night_hours)
    assert not is_late_night(midnight_utc, "Asia/Tokyo", SETTINGS.configured.late_night_hours)  # 09:00 there
    assert is_late_night(T0, "Pacific/Kiritimati", SETTINGS.configured.late_night_hours)  # 00:00 there (UTC+14)
    assert is_late_night(midnight_utc, "Not/AZone", SETTINGS.configured.late_night_hours)  # unknown zone: UTC


def test_grooming_flags_are_the_sources_of_the_signals_that_bear_on_grooming():
    signals = [Signal("pii", Action.REVIEW, "rule:off_platform_lure matched 'add me on'", "rule:off_platform_lure"),
               Signal("sexual_minors", Action.REVIEW, "model:sexual_minors 0.07 >= review 0.03 for under_13",
                      "model:sexual_minors"),
               Signal("toxicity", Action.REVIEW, "model:toxicity 0.40 >= review 0.30 for under_13", "model:toxicity")]
    assert grooming_flags(signals, SETTINGS) == ("rule:off_platform_lure", "model:sexual_minors")


def test_a_turn_survives_its_json_round_trip():
    original = turn(signals(3, 0.2, "isolation", ("rule:off_platform_lure",)), contact_band=None)
    assert ConversationTurn.from_json(original.to_json()) == original


# ---- the bank ------------------------------------------------------------------------------------

def test_the_seed_bank_is_labelled_synthetic_and_covers_every_stage_and_benign_chat():
    examples = load_bank([BANK_FILE])
    assert all(e.synthetic and "synthetic" in e.source for e in examples)
    assert {e.stage for e in examples if e.label == "grooming"} == set(STAGES)
    assert sum(e.label == "benign" for e in examples) >= 40
    assert len({e.id for e in examples}) == len(examples)


def test_no_test_or_simulator_line_is_in_the_bank():
    bank_texts = {e.text.lower() for e in load_bank([BANK_FILE])}
    held_out = [text for _, text in GROOMING + FRIENDS + COACH]
    held_out += [line for stage in GROOMING_STAGES for line in stage.lines + stage.replies]
    assert not bank_texts & {t.lower() for t in held_out}


def test_a_platform_bank_of_confirmed_cases_loads_after_the_seed_and_a_bad_line_names_its_file(tmp_path):
    confirmed = tmp_path / "confirmed.jsonl"
    confirmed.write_text(json.dumps({"id": "case-1", "label": "grooming", "stage": "isolation", "synthetic": False,
                                     "text": "text from a confirmed case", "source": "moderator case 1"}) + "\n")
    examples = load_bank([BANK_FILE, confirmed])
    assert examples[-1].id == "case-1" and not examples[-1].synthetic
    confirmed.write_text(json.dumps({"id": "case-2", "label": "grooming", "stage": "not-a-stage", "text": "x",
                                     "synthetic": False}) + "\n")
    with pytest.raises(ValueError, match="confirmed.jsonl:1"):
        load_bank([confirmed])


# ---- hand-written conversations through the real Screener and bank -------------------------------

@pytest.fixture(scope="module")
def screener():
    return Screener.from_config(load_config(environ={}))


def converse(screener, lines: list[tuple[UserProfile, str]], other: UserProfile):
    """Screens the messages as the job does and feeds their conversation turns to the pair state."""
    items = []
    for i, (sender, text) in enumerate(lines):
        recipient = other if sender.user_id == KID.user_id else KID
        event = ChatMessage(schema_version=1, event_id=f"e{i}", ts=T0 + i * 3 * 60_000, user_id=sender.user_id,
                            channel="text", recipient_id=recipient.user_id, text=text)
        items.append(ScreeningInput(event, SourceRef("chat", 0, i, event.ts), b"{}", sender, recipient))
    screened = screener.screen(items, T0)
    decisions = [o for o in screened.outputs if isinstance(o, Decision)]
    assert [t.message.event_id for t in screened.turns] == [i.event.event_id for i in items]
    state, outputs, scores = None, [], []
    for turn in screened.turns:
        state, risk, emitted = step(state, turn, SETTINGS, T0)
        outputs += emitted
        scores.append(risk.score)
    return decisions, outputs, scores


def test_a_grooming_conversation_is_reviewed_and_alerted_once_as_a_conversation(screener):
    # Each message is also judged alone (a photo request may be blocked by itself); the pair's risk is
    # what makes the one conversation item and the one grooming alert.
    decisions, outputs, scores = converse(screener, GROOMING, ADULT)
    assert len(decisions) == len(GROOMING)
    assert [type(o) for o in outputs] == [ReviewItem, ParentAlert]
    assert scores[-1] >= SETTINGS.configured.alert_threshold
    assert any(r.startswith("grooming stages seen") for r in outputs[0].reasons)


@pytest.mark.parametrize("lines,other", [(FRIENDS, KID_FRIEND), (COACH, ADULT), (FRIENDS, COUSIN)],
                         ids=["child friends", "adult stranger about the game", "adult friend (family)"])
def test_benign_conversations_stay_below_review(screener, lines, other):
    lines = [(other if sender is KID_FRIEND else sender, text) for sender, text in lines]
    _, outputs, scores = converse(screener, lines, other)
    assert outputs == [] and max(scores) < SETTINGS.configured.review_threshold
