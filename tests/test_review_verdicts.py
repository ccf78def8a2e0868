"""What a reviewer's verdict sends out (review.verdicts), as pure functions."""
from __future__ import annotations

import json

import pytest

from lifeguard.config import ReviewConfig
from lifeguard.schemas import EXAMPLES, Action, Decision, ModeratorDecision, ParentAlert, ReviewItem
from review.verdicts import consequences, corrected_decision

CONFIG = ReviewConfig()
NOW = 1767226000000
AUTOMATED = Decision.model_validate_json(json.dumps(EXAMPLES["decisions"]))  # a block
ALERT = ParentAlert.model_validate_json(json.dumps(EXAMPLES["parent-alerts"]))
CHAT_ITEM = ReviewItem.model_validate_json(json.dumps(EXAMPLES["review-queue"]))
UPLOAD_ITEM = CHAT_ITEM.model_copy(update={"kind": "upload", "hashes": {"phash": "d1c4e0b0f0f8f8f0", "sha256": "ab" * 32}})


def verdict(kind: str, category: str | None = None) -> ModeratorDecision:
    return ModeratorDecision(schema_version=1, event_id="md-9", moderator_id="ana", subject_event_id="c-7f3a",
                             verdict=kind, category=category, user_id="u-102")


@pytest.mark.parametrize("automated_action, kind, corrected", [
    (Action.BLOCK, "overturn", Action.ALLOW), (Action.REVIEW, "overturn", Action.ALLOW), (Action.ALLOW, "overturn", None),
    (Action.REVIEW, "confirm", Action.BLOCK), (Action.WARN, "confirm", Action.BLOCK), (Action.BLOCK, "confirm", None),
])
def test_a_verdict_corrects_the_automated_decision_where_it_disagrees(automated_action, kind, corrected):
    automated = AUTOMATED.model_copy(update={"action": automated_action})
    correction = corrected_decision(verdict(kind, "pii"), automated, NOW)
    if corrected is None:
        assert correction is None
        return
    assert (correction.action, correction.decided_ts) == (corrected, NOW)
    assert correction.supersedes.model_dump() == {"decided_ts": automated.decided_ts, "action": automated_action,
                                                  "reasons": automated.reasons}
    assert correction.latency_ms == automated.latency_ms + NOW - automated.decided_ts
    assert correction.reasons == [f"reviewer decision md-9: {'overturned' if kind == 'overturn' else 'confirmed pii'}"]
    assert correction.event_id == automated.event_id and correction.scores == automated.scores


def test_an_overturned_message_is_lifted_its_parents_told_and_labelled():
    records = consequences(verdict("overturn"), CHAT_ITEM, AUTOMATED, [ALERT], CONFIG, NOW)
    assert [r.topic for r in records] == ["decisions", "parent_alerts", "labels"]
    alert = records[1].value
    assert (alert.kind, alert.severity, alert.alert_id, alert.parent_id) == ("correction", "info", "c-7f3a:u-517:correction", "p-517")
    label = records[2].value
    assert (label.verdict, label.categories, label.text, label.reviewers) == ("overturn", ["pii"], CHAT_ITEM.excerpt, ["ana"])


def test_a_confirmed_upload_banks_its_hashes_before_its_correction_and_is_not_a_text_label():
    records = consequences(verdict("confirm", "nudity"), UPLOAD_ITEM, AUTOMATED.model_copy(update={"action": Action.REVIEW}),
                           [ALERT], CONFIG, NOW)
    assert [r.topic for r in records] == ["hash_bank_updates", "hash_bank_updates", "decisions"]
    assert {(r.value.bank, r.value.note) for r in records[:2]} == {("reviewer-confirmed", "reviewer decision md-9: confirmed nudity")}
    assert records[2].value.action is Action.BLOCK  # the parents already heard of a harmful upload: nothing to withdraw


def test_an_escalation_sends_nothing_but_itself():
    assert consequences(verdict("escalate"), UPLOAD_ITEM, AUTOMATED, [ALERT], CONFIG, NOW) == []


def test_a_correction_alert_is_never_withdrawn_again():
    correction = ALERT.model_copy(update={"kind": "correction", "alert_id": "c-7f3a:u-517:correction"})
    records = consequences(verdict("overturn"), CHAT_ITEM, None, [ALERT, correction], CONFIG, NOW)
    assert [r.value.alert_id for r in records if r.topic == "parent_alerts"] == ["c-7f3a:u-517:correction"]
