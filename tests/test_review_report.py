"""`lifeguard report` over a real review store: actions by category from the latest decisions, the appeal
overturn and proactive rates, time to claim, and the chart."""
from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

from lifeguard.config import load_config
import pytest

from lifeguard.schemas import EXAMPLES, Appeal, Decision, Engagement, ReviewItem
from review.store import Consumed, ReviewStore
from tools.cli import main
from tools.report import build_report, render


def _decision(event_id: str, action: str, reasons: list[str]) -> Consumed[Decision]:
    record = Decision.model_validate_json(json.dumps(EXAMPLES["decisions"] | {
        "event_id": event_id, "action": action, "reasons": reasons, "user_id": "u-102"}))
    return Consumed(record, f"decisions:0:{event_id}")


def test_the_report_counts_what_happened(review_environ, tmp_path):
    cfg = load_config(environ=review_environ)
    store = ReviewStore.connect(cfg.review)
    store.record_outputs([_decision("c-1", "block", ["model:toxicity 0.93 >= block 0.85 for under_13"]),
                          _decision("c-2", "review", ["rule:off_platform_lure matched 'add me on'"]),
                          _decision("c-3", "allow", [])], [])
    for event_id in ("c-1", "c-2"):
        store.enqueue([Consumed(ReviewItem.model_validate_json(json.dumps(EXAMPLES["review-queue"] | {"event_id": event_id})),
                                f"review-queue:0:{event_id}")])
    store.claim_next("ana")
    store.decide("c-1", "ana", "confirm", "toxicity")
    store.claim_next("ana")
    store.decide("c-2", "ana", "overturn")
    appeal = Appeal.model_validate_json(json.dumps(EXAMPLES["appeals"] | {"subject_event_id": "c-1", "event_id": "ap-1"}))
    store.enqueue_appeal(Consumed(appeal, "appeals:0:1"))
    store.claim_next("ben")
    store.decide("ap-1", "ben", "overturn")
    # The correction the review store published for c-2's overturn, read back from decisions.
    (published,) = [p for p in store.pending_publication() if p.decision.subject_event_id == "c-2"]
    (correction,) = [r["value"] for r in published.records if r["topic"] == "decisions"]
    store.record_outputs([Consumed(Decision.model_validate_json(json.dumps(correction)), "decisions:0:99")], [])

    # Users report c-3, which the models allowed: one missed, against two detected.
    store.record_engagement([Consumed(Engagement.model_validate_json(json.dumps(EXAMPLES["engagement"] | {
        "event_id": f"en-{n}", "subject_event_id": "c-3", "report": True, "user_id": f"u-{n}"})), f"engagement:0:{n}")
        for n in range(2)])
    now = datetime.now(timezone.utc)
    report = build_report(store.audit_between(now - timedelta(hours=1), now + timedelta(minutes=1)),
                          now - timedelta(hours=1), now)
    assert report.actions == {("block", "toxicity"): 1, ("allow", "-"): 2}  # c-2's review was overturned
    assert report.detected == 2 and (report.appeals_decided, report.appeals_overturned) == (1, 1)
    assert report.appeal_overturn_rate == 0.5 and report.reported_by_users == 1
    assert report.proactive_rate == pytest.approx(2 / 3)
    assert len(report.claim_waits_s) == 3 and all(0 <= w < 60 for w in report.claim_waits_s)
    chart = tmp_path / "claims.png"
    text = render(report, chart)
    assert "appeal overturn rate (overturned appeals / detected): 50.0%" in text
    assert chart.read_bytes().startswith(b"\x89PNG")


def test_the_report_command_prints_for_a_range(review_environ, monkeypatch, capsys):
    for name, value in review_environ.items():
        monkeypatch.setenv(name, value)
    assert main(["report", "--since", "2026-01-01T00:00:00", "--until", "2026-01-02T00:00:00"]) == 0
    out = capsys.readouterr().out
    assert "Moderation report 2026-01-01T00:00:00+00:00" in out and "n/a (nothing detected)" in out
