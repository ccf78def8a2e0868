"""The sender's behaviour tightens its message's model thresholds: the pure rules (udfs.policy) and the real
Screener with profiles carrying the behaviour features."""
import dataclasses

import pytest
from pydantic import ValidationError

from lifeguard.profiles import UserProfile
from lifeguard import PROJECT_ROOT
from lifeguard.config import load_config
from lifeguard.schemas import Action, AgeBand, ChatMessage, Decision
from udfs.parse import SourceRef
from udfs.policy import Tightening, behaviour_tightening, decide, load_policy, model_signals
from udfs.screening import ScreeningInput, Screener

BEHAVIOUR = {"recent_violations": {"min_violations_7d": 2, "threshold_scale": 0.8},
             "no_history_contacting_minor": {"threshold_scale": 0.8}}
TOXICITY = {"under_13": {"warn": 0.2, "review": 0.5, "block": 0.9}, "13_15": {"review": 0.5},
            "16_17": {"review": 0.5}, "adult": {"warn": 0.6, "review": 0.9}}
POLICY = load_policy({"version": "t", "thresholds": {"toxicity": TOXICITY}, "behaviour": BEHAVIOUR})

FIRST_TIMER = UserProfile("first", AgeBand.ADULT, violations_7d=0)
OFFENDER = UserProfile("offender", AgeBand.ADULT, violations_7d=3)
ONE_SLIP = UserProfile("one-slip", AgeBand.ADULT, violations_7d=1)
NEWCOMER = UserProfile("newcomer", AgeBand.ADULT)  # no behaviour on record
KID = UserProfile("kid", AgeBand.UNDER_13, friend_ids=("uncle",), dm_policy="everyone")  # judged on content
UNCLE = UserProfile("uncle", AgeBand.ADULT)  # no history, but the kid's friend
ADULT = UserProfile("adult", AgeBand.ADULT)


def action_for(sender, recipient, score, band=AgeBand.ADULT, direct=True, policy=POLICY):
    tightening = behaviour_tightening(policy.behaviour, sender, recipient, direct)
    signals = model_signals(policy, {"toxicity": score}, band, voice=False,
                            scale=tightening.scale if tightening else 1.0)
    return decide(signals).action, tightening


def test_a_borderline_message_warned_for_a_first_timer_is_reviewed_for_a_repeat_offender():
    assert action_for(FIRST_TIMER, ADULT, 0.75) == (Action.WARN, None)
    action, tightening = action_for(OFFENDER, ADULT, 0.75)  # review at 0.9 x 0.8 = 0.72
    assert action is Action.REVIEW
    assert tightening == Tightening(0.8, "behaviour: 3 violations in 7 days: thresholds x0.8")


def test_a_message_that_passes_for_a_first_timer_is_warned_for_a_repeat_offender():
    assert action_for(FIRST_TIMER, ADULT, 0.55)[0] is Action.ALLOW
    assert action_for(OFFENDER, ADULT, 0.55)[0] is Action.WARN  # warn at 0.6 x 0.8 = 0.48


def test_one_violation_is_not_a_repeat_offender():
    assert action_for(ONE_SLIP, ADULT, 0.75) == (Action.WARN, None)


def test_an_adult_with_no_history_writing_to_a_child_is_held_to_tighter_thresholds():
    assert action_for(FIRST_TIMER, KID, 0.45, band=AgeBand.UNDER_13)[0] is Action.WARN
    action, tightening = action_for(NEWCOMER, KID, 0.45, band=AgeBand.UNDER_13)  # review at 0.5 x 0.8 = 0.40
    assert action is Action.REVIEW
    assert tightening.reason == "behaviour: no history, writing directly to a minor who is not a friend: thresholds x0.8"


@pytest.mark.parametrize("sender, recipient, direct", [
    (UNCLE, KID, True),  # on the child's friend list
    (dataclasses.replace(NEWCOMER, friend_ids=("kid",)), KID, True),  # the child is on the sender's list
    (NEWCOMER, KID, False),  # a room message is not "directly to a minor"
    (NEWCOMER, ADULT, True),  # no history, but an adult recipient
])
def test_no_history_is_not_tightened_for_friends_rooms_or_adults(sender, recipient, direct):
    assert behaviour_tightening(POLICY.behaviour, sender, recipient, direct) is None


def test_a_policy_without_the_section_tightens_nothing():
    plain = load_policy({"version": "t", "thresholds": {"toxicity": TOXICITY}})
    assert behaviour_tightening(plain.behaviour, OFFENDER, KID, True) is None
    assert behaviour_tightening(plain.behaviour, NEWCOMER, KID, True) is None


@pytest.mark.parametrize("section", [
    {"recent_violations": {"threshold_scale": 1.5}},  # behaviour never loosens a threshold
    {"recent_violations": {"threshold_scale": -0.1}},
    {"recent_violations": {"min_violations_7d": 0}},
    {"no_history_contacting_minor": {"threshold_scale": 2}},
    {"recent_violation": {}},  # a misspelt key is an error, not a silent default
])
def test_the_section_is_validated(section):
    with pytest.raises(ValidationError):
        load_policy({"version": "t", "thresholds": {"toxicity": TOXICITY}, "behaviour": section})


def test_a_zero_scale_reaches_every_score_but_never_goes_below_zero():
    (signal,) = model_signals(POLICY, {"toxicity": 0.0}, AgeBand.UNDER_13, voice=False, scale=0.0)
    assert signal.action is Action.BLOCK and signal.reason == "model:toxicity 0.00 >= block 0.00 for under_13"


def test_the_shipped_policy_tightens_for_both():
    shipped = load_policy(PROJECT_ROOT / "flink-conf/policy.yaml").behaviour
    assert shipped.recent_violations.threshold_scale < 1 and shipped.no_history_contacting_minor.threshold_scale < 1


# ---- through the real Screener ----------------------------------------------------------------------------

SOURCE = SourceRef("chat", 0, 7, kafka_ts=1_000)
TEXT = "you are such a loser lol"  # no rule matches it: only the model speaks


@pytest.fixture(scope="module")
def screener() -> Screener:
    return Screener.from_config(load_config(environ={}))


def message(sender, recipient) -> ScreeningInput:
    event = ChatMessage(schema_version=1, event_id=f"e-{sender.user_id}", ts=900, user_id=sender.user_id,
                        channel="text", recipient_id=recipient.user_id, text=TEXT)
    return ScreeningInput(event, SOURCE, b"{}", sender, recipient)


def with_review_just_above(screener, score: float):
    """The shipped policy with toxicity reviewed (in every band) just above ``score``: within reach of x0.8."""
    review = round(min(score / 0.9, 1.0), 4)
    bands = {band: {"review": review} for band in AgeBand}
    return screener.policy.model_copy(update={"thresholds": load_policy(
        {"version": "t", "thresholds": {"toxicity": bands}}).thresholds})


@pytest.mark.parametrize("recipient", [ADULT, KID])
def test_screener_reviews_a_repeat_offenders_borderline_message(screener, recipient):
    minor = recipient.effective_age_band.is_minor
    (score,) = [s["toxicity"] for s in screener.text_model.score_batch([TEXT], [minor])]
    screener.set_policy(with_review_just_above(screener, score))
    first, offender = (o for o in screener.screen([message(FIRST_TIMER, recipient), message(OFFENDER, recipient)],
                                                  now_ms=1_050).outputs if isinstance(o, Decision))
    assert first.action is not Action.REVIEW and not any(r.startswith("behaviour:") for r in first.reasons)
    assert offender.action is Action.REVIEW
    assert "behaviour: 3 violations in 7 days: thresholds x0.8" in offender.reasons
    assert any(r.startswith("model:toxicity") for r in offender.reasons)


def test_screener_tightens_a_stranger_with_no_history_writing_to_a_child_but_not_a_friend(screener):
    (score,) = [s["toxicity"] for s in screener.text_model.score_batch([TEXT], [True])]
    screener.set_policy(with_review_just_above(screener, score))
    newcomer, uncle = (o for o in screener.screen([message(NEWCOMER, KID), message(UNCLE, KID)], now_ms=1_050).outputs
                       if isinstance(o, Decision))
    assert newcomer.action is Action.REVIEW
    assert any(r.startswith("behaviour: no history") for r in newcomer.reasons)
    assert uncle.action is not Action.REVIEW and not any(r.startswith("behaviour:") for r in uncle.reasons)


def test_an_allowed_message_from_a_repeat_offender_does_not_carry_the_tightening_as_a_reason(screener):
    screener.set_policy(load_policy(PROJECT_ROOT / "flink-conf/policy.yaml"))
    event = ChatMessage(schema_version=1, event_id="e-gg", ts=900, user_id=OFFENDER.user_id, channel="text",
                        recipient_id=ADULT.user_id, text="gg, see you tomorrow")
    (decision,) = [o for o in screener.screen([ScreeningInput(event, SOURCE, b"{}", OFFENDER, ADULT)],
                                              now_ms=1_050).outputs if isinstance(o, Decision)]
    assert decision.action is Action.ALLOW
    assert not any(r.startswith("behaviour:") for r in decision.reasons)
