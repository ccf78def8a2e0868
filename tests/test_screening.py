"""The screening tiers together, through `Screener.screen` (the job's code path), without Flink."""
import base64
import io

import pytest
from PIL import Image

from lifeguard.profiles import UserProfile, fallback_profile
from lifeguard.config import load_config
from lifeguard.schemas import AgeBand, ChatMessage, DeadLetter, Decision, ParentAlert, ReviewItem, Upload
from udfs.parse import SourceRef
from udfs.screening import ScreeningInput, Screener

# Parents who allow direct messages and images from everyone: these tests judge content; the contact
# settings have tests of their own below.
KID = UserProfile("kid", AgeBand.UNDER_13, parent_id="parent-of-kid", dm_policy="everyone", image_policy="everyone")
ADULT = UserProfile("adult", AgeBand.ADULT)
SOURCE = SourceRef("chat", 0, 7, kafka_ts=1_000)


@pytest.fixture(scope="module")
def screener() -> Screener:
    return Screener.from_config(load_config(environ={}))


def direct(text: str, sender=ADULT, recipient=KID, channel="text") -> ScreeningInput:
    event = ChatMessage(schema_version=1, event_id=f"e-{abs(hash(text))}", ts=900, user_id=sender.user_id,
                        channel=channel, recipient_id=recipient.user_id, text=text)
    return ScreeningInput(event, SOURCE, b"{}", sender, recipient)


def outputs_of(screener, item, kind):
    return [o for o in screener.screen([item], now_ms=1_050).outputs if isinstance(o, kind)]


def test_self_harm_statement_is_reviewed_even_where_the_model_misses_it(screener):
    (decision,) = outputs_of(screener, direct("i want to kill myself", sender=KID, recipient=ADULT), Decision)
    assert decision.action == "review"
    assert any(r.startswith("rule:self_harm_intent") for r in decision.reasons)


def test_explicit_request_to_a_child_is_blocked_with_an_urgent_alert_to_the_parent(screener):
    item = direct("send nudes")
    (decision,) = outputs_of(screener, item, Decision)
    (alert,) = outputs_of(screener, item, ParentAlert)
    assert decision.action == "block" and decision.latency_ms == 50
    assert (alert.parent_id, alert.child_role, alert.severity) == ("parent-of-kid", "recipient", "urgent")


def test_the_same_lure_between_adults_is_allowed(screener):
    (decision,) = outputs_of(screener, direct("add me on snapchat", recipient=ADULT), Decision)
    assert decision.action == "allow" and decision.age_band == "adult"


def test_lure_to_a_child_goes_to_the_review_queue(screener):
    (item,) = outputs_of(screener, direct("add me on snapchat"), ReviewItem)
    # Another app, for the rules and the pii head; the child-directed sexual_minors head reads the lure too.
    assert item.categories[-1] == "pii" and set(item.categories) <= {"pii", "sexual_minors"} and item.priority > 0


def test_unknown_recipient_is_treated_as_youngest_and_the_reason_says_so(screener):
    stranger = fallback_profile("who", "unknown user")
    (decision,) = outputs_of(screener, direct("hello", recipient=stranger), Decision)
    assert decision.age_band == "under_13"
    assert "profile:who unknown user: acting as under_13" in decision.reasons


def test_huge_text_is_capped_and_the_decision_says_so(screener):
    (decision,) = outputs_of(screener, direct("la " * 5000), Decision)
    assert any(r.startswith("text truncated from 15000") for r in decision.reasons)


def test_a_model_failure_sends_the_batch_to_review(screener, monkeypatch):
    def broken(texts, minor_involved=None, embedding_wanted=None):
        raise RuntimeError("onnxruntime failed")

    monkeypatch.setattr(screener.text_model, "score_and_embed", broken)
    screened = screener.screen([direct("hi"), direct("gg")], now_ms=1_050)
    assert [o.action for o in screened.outputs if isinstance(o, Decision)] == ["review", "review"]
    assert screener.model_errors == 1
    # The conversation-risk step still hears of both messages, with no bank match.
    assert [t.message.contrast for t in screened.turns] == [0.0, 0.0]


def test_an_upload_that_is_not_an_image_becomes_a_dead_letter(screener):
    event = Upload(schema_version=1, event_id="u-1", ts=900, user_id="kid", room_id="lobby",
                   content_type="image/png", image_b64=base64.b64encode(b"not an image").decode())
    (letter,) = screener.screen([ScreeningInput(event, SOURCE, b"raw bytes", KID, None)], now_ms=1_050).outputs
    assert isinstance(letter, DeadLetter)
    assert letter.event_id == "u-1" and base64.b64decode(letter.original_b64) == b"raw bytes"


def test_an_image_upload_gets_a_nudity_score_and_says_which_categories_have_no_model(screener):
    buffer = io.BytesIO()
    Image.new("RGB", (32, 32), (200, 40, 40)).save(buffer, "PNG")
    event = Upload(schema_version=1, event_id="u-2", ts=900, user_id="kid", room_id="lobby",
                   content_type="image/png", image_b64=base64.b64encode(buffer.getvalue()).decode())
    (decision,) = [o for o in screener.screen([ScreeningInput(event, SOURCE, b"{}", KID, None)], now_ms=1_050).outputs
                   if isinstance(o, Decision)]
    assert decision.kind == "upload" and "nudity" in decision.scores
    assert "image:no model for weapons, gore, hate_symbols: caption and profile only" in decision.reasons


# ---- the parents' contact settings ----------------------------------------------------------------

FRIENDS_ONLY_KID = UserProfile("fkid", AgeBand.UNDER_13, parent_id="parent-of-fkid", friend_ids=("pal",))
PAL = UserProfile("pal", AgeBand.UNDER_13, friend_ids=("fkid",))
STRANGER = UserProfile("stranger", AgeBand.TEEN_16_17)


def png(colour=(30, 120, 200)) -> str:
    buffer = io.BytesIO()
    Image.new("RGB", (48, 48), colour).save(buffer, "PNG")
    return base64.b64encode(buffer.getvalue()).decode()


def image_to(sender: UserProfile, recipient: UserProfile) -> ScreeningInput:
    event = Upload(schema_version=1, event_id=f"img-{sender.user_id}-{recipient.user_id}", ts=900,
                   user_id=sender.user_id, recipient_id=recipient.user_id, content_type="image/png", image_b64=png())
    return ScreeningInput(event, SOURCE, b"{}", sender, recipient)


def test_a_strangers_direct_message_to_a_friends_only_child_is_blocked_with_the_setting_and_no_alert(screener):
    screened = screener.screen([direct("hi wanna play", sender=STRANGER, recipient=FRIENDS_ONLY_KID)], now_ms=1_050)
    (decision,) = [o for o in screened.outputs if isinstance(o, Decision)]
    assert decision.action == "block"
    assert "contact:fkid accepts direct messages from friends only (dm_policy friends); stranger is not allowed" \
        in decision.reasons
    # Counted, not alerted one by one: no alert, and nothing for reviewers.
    assert not [o for o in screened.outputs if isinstance(o, (ParentAlert, ReviewItem))]
    before = screener.contact_blocks
    screener.screen([direct("hi again", sender=STRANGER, recipient=FRIENDS_ONLY_KID)], now_ms=1_050)
    assert screener.contact_blocks == before + 1


def test_a_friends_direct_message_to_a_friends_only_child_is_not_blocked(screener):
    (decision,) = outputs_of(screener, direct("hi wanna play", sender=PAL, recipient=FRIENDS_ONLY_KID), Decision)
    assert decision.action == "allow" and not any(r.startswith("contact:") for r in decision.reasons)


def test_nobody_stops_friends_too_and_everyone_lets_strangers_through(screener):
    closed = UserProfile("fkid", AgeBand.UNDER_13, friend_ids=("pal",), dm_policy="nobody")
    (decision,) = outputs_of(screener, direct("hi wanna play", sender=PAL, recipient=closed), Decision)
    assert decision.action == "block" and any("from no one (dm_policy nobody)" in r for r in decision.reasons)
    open_ = UserProfile("fkid", AgeBand.UNDER_13, dm_policy="everyone")
    (decision,) = outputs_of(screener, direct("hi wanna play", sender=STRANGER, recipient=open_), Decision)
    assert decision.action == "allow"


def test_a_child_whose_profile_cannot_be_fetched_gets_friends_only_and_the_senders_friend_list_vouches(screener):
    unknown = fallback_profile("fkid", "profile store unavailable")
    (decision,) = outputs_of(screener, direct("hi wanna play", sender=STRANGER, recipient=unknown), Decision)
    assert decision.action == "block" and any(r.startswith("contact:fkid") for r in decision.reasons)
    (decision,) = outputs_of(screener, direct("hi wanna play", sender=PAL, recipient=unknown), Decision)
    assert decision.action == "allow"


def test_an_unknown_setting_value_acts_as_friends_only(screener):
    odd = UserProfile("fkid", AgeBand.UNDER_13, dm_policy="strangers-welcome")
    (decision,) = outputs_of(screener, direct("hi wanna play", sender=STRANGER, recipient=odd), Decision)
    assert decision.action == "block" and any("(dm_policy friends)" in r for r in decision.reasons)


def test_images_follow_their_own_setting(screener):
    (decision,) = outputs_of(screener, image_to(STRANGER, FRIENDS_ONLY_KID), Decision)
    assert decision.action == "block" and any("accepts images from friends only (image_policy friends)" in r
                                              for r in decision.reasons)
    (decision,) = outputs_of(screener, image_to(PAL, FRIENDS_ONLY_KID), Decision)
    assert decision.action == "allow"


def test_a_childs_own_image_to_an_adult_who_is_not_a_friend_goes_to_review_and_alerts_the_parent(screener):
    screened = screener.screen([image_to(FRIENDS_ONLY_KID, ADULT)], now_ms=1_050)
    (decision,) = [o for o in screened.outputs if isinstance(o, Decision)]
    (alert,) = [o for o in screened.outputs if isinstance(o, ParentAlert)]
    assert decision.action == "review" and [o for o in screened.outputs if isinstance(o, ReviewItem)]
    assert (alert.kind, alert.child_role, alert.parent_id) == ("image_shared", "sender", "parent-of-fkid")
    friendly_adult = UserProfile("adult", AgeBand.ADULT, friend_ids=("fkid",))
    (decision,) = outputs_of(screener, image_to(FRIENDS_ONLY_KID, friendly_adult), Decision)
    assert decision.action == "allow"


def test_a_message_that_fails_screening_is_its_own_dead_letter_and_the_batch_is_decided(screener, monkeypatch):
    broken, fine = direct("this one breaks a tier"), direct("gg wp")
    signals = screener.text_tier.signals

    def failing(text, *args, **kwargs):
        if text == "this one breaks a tier":
            raise ValueError("a tier failed on this text")
        return signals(text, *args, **kwargs)

    monkeypatch.setattr(screener.text_tier, "signals", failing)
    outputs = screener.screen([broken, fine], now_ms=1_050).outputs
    (letter,) = [o for o in outputs if isinstance(o, DeadLetter)]
    assert letter.event_id == broken.event.event_id and letter.error_kind == "unprocessable"
    assert letter.reason == "screening failed: ValueError: a tier failed on this text"
    assert [o.event_id for o in outputs if isinstance(o, Decision)] == [fine.event.event_id]


def test_a_lone_surrogate_is_replaced_for_screening_and_the_batch_keeps_its_model_scores(screener):
    odd, fine = direct("hi \ud800 there"), direct("gg wp")
    decisions = [o for o in screener.screen([odd, fine], now_ms=1_050).outputs if isinstance(o, Decision)]
    assert "characters that are not text (lone surrogates) replaced for screening" in decisions[0].reasons
    assert all(not any(r.startswith("model:error") for r in d.reasons) for d in decisions)


def test_personal_information_is_masked_in_what_reviewers_and_parents_read(screener):
    shared = direct("my number is 555-123-4567 and my email is kid123@example.com, snap: coolkid12",
                    sender=KID, recipient=ADULT)
    outputs = screener.screen([shared], now_ms=1_050).outputs
    (decision,) = [o for o in outputs if isinstance(o, Decision)]
    readable = list(decision.reasons)
    readable += [text for o in outputs if isinstance(o, ReviewItem) for text in (o.excerpt, *o.reasons)]
    readable += [r for o in outputs if isinstance(o, ParentAlert) for r in o.reasons]
    assert decision.action == "block" and any("'[phone]'" in r for r in decision.reasons)
    assert not [t for t in readable if "555" in t or "kid123" in t or "coolkid12" in t]


def test_only_typed_chat_joins_the_sample_a_policy_update_is_tried_on(screener):
    # The share check judges every sampled score as typed chat: a voice transcript (its own margin) or a
    # caption would be judged by thresholds that are not theirs.
    before = len(screener.recent_scores)
    screener.screen([direct("gg that was fun"), direct("gg that was fun", channel="voice"), image_to(ADULT, KID)],
                    now_ms=1_050)
    assert len(screener.recent_scores) == before + 1
