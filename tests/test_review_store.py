"""The review store on a real PostgreSQL: migrations, idempotent intake, claims under leases with SKIP LOCKED,
verdicts through the outbox, the append-only audit log; and its consumer on the real broker."""
from __future__ import annotations

import json
import threading
import time

import psycopg
import pytest

from lifeguard.config import load_config
from lifeguard.schemas import EXAMPLES, Appeal, Decision, Engagement, ModeratorDecision, ParentAlert, ReviewItem
from review.consumer import ReviewConsumer
from review.schema import migrations, prepare_database
from review.store import Consumed, ReviewError, ReviewStore
from tools import kafka_io, local
from udfs.parse import Rejected


@pytest.fixture
def cfg(review_environ):
    return load_config(environ=review_environ)


def _store(cfg, lease_s: int | None = None) -> ReviewStore:
    store = ReviewStore.connect(cfg.review)
    if lease_s is not None:
        store.lease_s = lease_s
    return store


def _item(event_id: str, priority: float, created_ts: int = 1767225600000, **changes) -> Consumed[ReviewItem]:
    record = ReviewItem.model_validate(EXAMPLES["review-queue"] | {"event_id": event_id, "priority": priority,
                                                                   "created_ts": created_ts} | changes)
    return Consumed(record, f"review-queue:0:{event_id}")


def test_migrations_apply_once_and_are_recorded(cfg):
    created, applied = prepare_database(cfg.review)
    assert (created, applied) == (False, [])  # the fixture applied them
    with psycopg.connect(**cfg.review.connection_options()) as connection:
        versions = [row[0] for row in connection.execute("SELECT version FROM schema_migrations ORDER BY version")]
    assert versions == [m.version for m in migrations()] and versions[0] == 1


def test_a_stray_migration_file_is_an_error(tmp_path):
    (tmp_path / "0001_first.sql").write_text("SELECT 1")
    (tmp_path / "second.sql").write_text("SELECT 2")
    with pytest.raises(ValueError, match="NNNN_name.sql"):
        migrations(tmp_path)


def test_a_redelivered_item_changes_nothing(cfg):
    store = _store(cfg)
    assert store.enqueue([_item("c-1", 1.0), _item("c-2", 2.0)]) == 2
    assert store.enqueue([_item("c-1", 9.0), _item("c-2", 2.0), _item("c-2", 2.0)]) == 0
    assert store.claim_next("ana").event_id == "c-2"  # c-1 kept its first priority, 1.0
    assert [e.action for e in store.history("c-1")] == ["queued for review"]


def test_claims_take_the_most_urgent_item_and_skip_claimed_ones(cfg):
    store = _store(cfg)
    store.enqueue([_item("low", 0.5), _item("high-old", 3.0, 1), _item("high-new", 3.0, 2), _item("mid", 1.5)])
    claimed = [store.claim_next(name).event_id for name in ("ana", "ben", "cai", "dee")]
    assert claimed == ["high-old", "high-new", "mid", "low"]
    assert store.claim_next("eve") is None


def test_concurrent_reviewers_never_get_the_same_item(cfg):
    _store(cfg).enqueue([_item(f"c-{i}", float(i % 7)) for i in range(300)])
    claims: dict[str, list[str]] = {}

    def reviewer(name: str) -> None:
        store, mine = _store(cfg), []
        while (item := store.claim_next(name)) is not None:
            mine.append(item.event_id)
        claims[name] = mine
        store.close()

    threads = [threading.Thread(target=reviewer, args=(f"r{n}",)) for n in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    every = [event_id for mine in claims.values() for event_id in mine]
    assert len(every) == 300 and len(set(every)) == 300
    assert sum(1 for mine in claims.values() if mine) > 1  # the reviewers really did work side by side


def test_a_lapsed_lease_returns_the_item_and_the_old_claim_cannot_decide(cfg):
    walked_away, other = _store(cfg, lease_s=1), _store(cfg)
    walked_away.enqueue([_item("c-1", 1.0)])
    assert walked_away.claim_next("ana").event_id == "c-1"
    assert other.claim_next("ben") is None
    time.sleep(1.2)
    assert other.claim_next("ben").event_id == "c-1"
    with pytest.raises(ReviewError, match="no live claim"):
        walked_away.decide("c-1", "ana", "overturn")
    assert other.decide("c-1", "ben", "overturn").verdict == "overturn"


def test_a_verdict_needs_a_claim_and_a_confirmation_its_category(cfg):
    store = _store(cfg)
    store.enqueue([_item("c-1", 1.0)])
    with pytest.raises(ReviewError, match="no live claim"):
        store.decide("c-1", "ana", "overturn")
    with pytest.raises(ReviewError, match="no live claim"):
        store.decide("unknown-event", "ana", "overturn")
    store.claim_next("ana")
    with pytest.raises(ReviewError, match="category"):
        store.decide("c-1", "ana", "confirm")
    store.decide("c-1", "ana", "confirm", "pii")
    with pytest.raises(ReviewError, match="no live claim"):  # decided once: a second submit is refused
        store.decide("c-1", "ana", "confirm", "pii")


def test_an_escalated_item_waits_for_a_senior(cfg):
    store = _store(cfg)
    store.enqueue([_item("c-1", 1.0)])
    store.claim_next("ana")
    store.decide("c-1", "ana", "escalate", note="not sure this is a lure")
    assert store.claim_next("ben") is None
    assert store.claim_next("sam", senior=True).event_id == "c-1"
    store.decide("c-1", "sam", "confirm", "pii")
    assert [e.action for e in store.history("c-1")] == ["queued for review", "claimed", "escalate", "claimed", "confirm"]
    assert [e.actor for e in store.history("c-1")][-2:] == ["sam", "sam"]


def test_verdicts_wait_in_the_outbox_until_published(cfg):
    store = _store(cfg)
    store.enqueue([_item("c-1", 1.0), _item("c-2", 1.0)])
    first = (store.claim_next("ana"), store.decide("c-1", "ana", "confirm", "pii"))[1]
    store.claim_next("ana")
    second = store.decide("c-2", "ana", "overturn")
    assert [p.decision for p in store.pending_publication()] == [first, second]
    store.mark_published([first.event_id])
    assert [p.decision for p in store.pending_publication()] == [second]


UPLOAD_HASHES = {"sha256": "ab" * 32, "phash": "d1c4e0b0f0f8f8f0"}


def test_a_verdict_on_an_upload_sends_its_hashes_to_a_bank(cfg):
    store = _store(cfg)
    store.enqueue([_item("up-1", 2.0, kind="upload", hashes=UPLOAD_HASHES), _item("up-2", 1.0, kind="upload",
                                                                                   hashes=UPLOAD_HASHES),
                   _item("c-1", 0.5)])
    confirmed = (store.claim_next("ana"), store.decide("up-1", "ana", "confirm", "nudity"))[1]
    overturned = (store.claim_next("ana"), store.decide("up-2", "ana", "overturn"))[1]
    store.claim_next("ana")
    store.decide("c-1", "ana", "confirm", "pii")
    published = {p.decision.subject_event_id: [r for r in p.records if r["topic"] == "hash_bank_updates"]
                 for p in store.pending_publication()}
    assert [(r["value"]["bank"], r["value"]["signal_type"], r["value"]["hash"]) for r in published["up-1"]] == [
        ("reviewer-confirmed", "phash", UPLOAD_HASHES["phash"]), ("reviewer-confirmed", "sha256", UPLOAD_HASHES["sha256"])]
    assert {r["value"]["note"] for r in published["up-1"]} == {f"reviewer decision {confirmed.event_id}: confirmed nudity"}
    assert {(r["value"]["bank"], r["value"]["note"]) for r in published["up-2"]} == {
        ("reviewer-cleared", f"reviewer decision {overturned.event_id}: overturned")}
    assert published["c-1"] == []  # a chat message has no hashes to bank


def test_the_audit_log_refuses_updates_deletes_and_truncation(cfg):
    store = _store(cfg)
    store.enqueue([_item("c-1", 1.0)])
    with psycopg.connect(**cfg.review.connection_options(), autocommit=True) as connection:
        for statement in ("UPDATE audit_log SET action = 'nothing happened'", "DELETE FROM audit_log",
                          "TRUNCATE audit_log"):
            with pytest.raises(psycopg.errors.InsufficientPrivilege, match="append-only"):
                connection.execute(statement)
    assert [e.action for e in store.history("c-1")] == ["queued for review"]


DECISION = Decision.model_validate_json(json.dumps(EXAMPLES["decisions"]))
ALERT = ParentAlert.model_validate_json(json.dumps(EXAMPLES["parent-alerts"]))


def test_automated_decisions_and_alerts_are_audited_once(cfg):
    store = _store(cfg)
    store.record_outputs([Consumed(DECISION, "decisions:0:5")], [Consumed(ALERT, "parent-alerts:1:9")])
    store.record_outputs([Consumed(DECISION, "decisions:0:5")], [Consumed(ALERT, "parent-alerts:1:9")])  # again
    decided, alerted = store.history(DECISION.event_id)
    assert (decided.actor, decided.action) == ("policy 2026-11-23.1, model text-linear-2", "decided block")
    assert decided.detail["reasons"] == DECISION.reasons
    assert alerted.action == "alerted parent p-517 (harmful_content, urgent)"


def test_an_overturned_block_sends_its_correction_with_the_verdict(cfg):
    store = _store(cfg)
    store.record_outputs([Consumed(DECISION, "decisions:0:5")], [Consumed(ALERT, "parent-alerts:1:9")])
    store.enqueue([_item(DECISION.event_id, 1.0)])
    store.claim_next("ana")
    verdict = store.decide(DECISION.event_id, "ana", "overturn")
    (publication,) = store.pending_publication()
    assert publication.decision == verdict and verdict.user_id == "u-102"
    by_topic = {r["topic"]: r["value"] for r in publication.records}
    assert set(by_topic) == {"decisions", "parent_alerts", "labels"}
    assert (by_topic["decisions"]["action"], by_topic["decisions"]["supersedes"]["decided_ts"]) == ("allow", DECISION.decided_ts)
    assert by_topic["parent_alerts"]["kind"] == "correction"
    assert by_topic["labels"]["verdict"] == "overturn" and by_topic["labels"]["categories"] == ["pii"]
    assert store.labels() == [by_topic["labels"]]  # the offline copy, for retraining


def _send(cfg, topic: str, values: list[bytes]) -> None:
    producer = kafka_io.producer(cfg.kafka)
    for value in values:
        producer.send(topic, key="k", value=value)
    producer.flush()
    producer.close()


def _rounds(consumer: ReviewConsumer, until, limit_s: float = 30.0) -> None:
    deadline = time.monotonic() + limit_s
    while not until() and time.monotonic() < deadline:
        consumer.run_round(poll_ms=200)
    assert until(), f"not reached within {limit_s}s: {consumer.counts}"


def test_the_consumer_stores_items_audits_decisions_dead_letters_the_rest_and_publishes_verdicts(cfg, review_consumer):
    topics = cfg.kafka.topics
    local.create_topics(cfg)
    items = [ReviewItem.model_validate(EXAMPLES["review-queue"] | {"event_id": f"c-{i}", "priority": float(i)})
             for i in range(3)]
    _send(cfg, topics.review_queue, [i.model_dump_json().encode() for i in items] + [b"[" * 100_000])
    _send(cfg, topics.decisions, [json.dumps(EXAMPLES["decisions"]).encode(), b"not json"])
    consumer = review_consumer
    _rounds(consumer, lambda: consumer.counts.items_read == 3 and consumer.counts.decisions_read == 1
            and consumer.counts.dead_letters == 2)
    store = _store(cfg)
    claimed = store.claim_next("ana")
    assert claimed == items[2]
    store.decide(claimed.event_id, "ana", "confirm", "pii")
    _rounds(consumer, lambda: consumer.counts.verdicts_published == 1)
    assert kafka_io.read(cfg.kafka, [topics.hash_bank_updates], timeout_s=2) == []  # a chat item banks nothing
    (label,) = kafka_io.read(cfg.kafka, [topics.labels], until=lambda got: len(got) >= 1)
    assert (label.json()["event_id"], label.json()["categories"]) == ("c-2", ["pii"])
    letters = kafka_io.read(cfg.kafka, [topics.dead_letter], until=lambda got: len(got) >= 2)
    assert sorted(json.loads(r.value)["error_kind"] for r in letters) == ["not_json", "not_json"]
    (published,) = kafka_io.read(cfg.kafka, [topics.moderator_decisions], until=lambda got: len(got) >= 1)
    decision = ModeratorDecision.model_validate_json(published.value)
    assert (decision.subject_event_id, decision.verdict, decision.category) == ("c-2", "confirm", "pii")
    assert [e.action for e in store.history("c-2")] == ["queued for review", "claimed", "confirm"]


def test_a_database_outage_mid_stream_loses_no_item(cfg, review_consumer):
    local.create_topics(cfg)
    consumer = review_consumer
    consumer.run_round(poll_ms=200)  # connected to both, nothing to read yet
    item = ReviewItem.model_validate(EXAMPLES["review-queue"] | {"event_id": "c-kept"})
    _send(cfg, cfg.kafka.topics.review_queue, [item.model_dump_json().encode()])
    with psycopg.connect(**cfg.review.connection_options(), autocommit=True) as admin:
        (killed,) = admin.execute("SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                                  "WHERE datname = current_database() AND application_name = 'lifeguard-review' "
                                  "AND pid <> pg_backend_pid()").fetchone()
    assert killed == 1
    _rounds(consumer, lambda: consumer.counts.items_new == 1)
    assert consumer.counts.failed_rounds >= 1 and "terminating connection" in consumer.counts.errors[0]
    assert _store(cfg).claim_next("ana") == item


def _appeal(subject: str, user: str = "u-102", appeal_id: str = "ap-1") -> Consumed[Appeal]:
    record = Appeal.model_validate_json(json.dumps(EXAMPLES["appeals"] | {"event_id": appeal_id, "user_id": user,
                                                                          "subject_event_id": subject}))
    return Consumed(record, f"appeals:0:{appeal_id}")


def test_an_appeal_goes_first_to_someone_else_and_its_overturn_corrects_the_event(cfg):
    store = _store(cfg)
    store.record_outputs([Consumed(DECISION, "decisions:0:5")], [])
    store.enqueue([_item(DECISION.event_id, 1.0), _item("c-other", 3.0)])
    assert store.claim_next("ana").event_id == "c-other"
    store.decide("c-other", "ana", "overturn")
    store.claim_next("ana")
    store.decide(DECISION.event_id, "ana", "confirm", "pii")
    assert store.enqueue_appeal(_appeal(DECISION.event_id)) is True
    assert store.enqueue_appeal(_appeal(DECISION.event_id, appeal_id="ap-2")) is False  # appealed once only
    store.enqueue([_item("c-urgent", 3.0)])
    assert store.claim_next("ana").event_id == "c-urgent"  # not the appeal: ana decided that event
    appeal = store.claim_next("ben")
    assert (appeal.kind, appeal.subject_event_id, appeal.priority) == ("appeal", DECISION.event_id, 5.0)
    assert appeal.reasons[-1] == "appeal: it was a joke between friends"
    overturn = store.decide(appeal.event_id, "ben", "overturn")
    assert overturn.subject_event_id == DECISION.event_id
    publication = [p for p in store.pending_publication() if p.decision == overturn][0]
    (corrected,) = [r["value"] for r in publication.records if r["topic"] == "decisions"]
    assert (corrected["event_id"], corrected["action"]) == (DECISION.event_id, "allow")
    assert [(e.actor, e.action) for e in store.history(DECISION.event_id)] == [
        ("policy 2026-11-23.1, model text-linear-2", "decided block"), ("lifeguard", "queued for review"),
        ("ana", "claimed"), ("ana", "confirm"), ("lifeguard", "appealed"), ("ben", "claimed"), ("ben", "overturn")]


@pytest.mark.parametrize("subject, user, refused", [
    ("c-never-decided", "u-102", "no decision on that event is on record"),
    (DECISION.event_id, "u-999", "may appeal only decisions on their own content"),
])
def test_an_appeal_with_nothing_to_appeal_is_refused(cfg, subject, user, refused):
    store = _store(cfg)
    store.record_outputs([Consumed(DECISION, "decisions:0:5")], [])
    with pytest.raises(Rejected, match=refused):
        store.enqueue_appeal(_appeal(subject, user))
    assert store.claim_next("ana") is None


def _views(subject: str, views: int, ts: int, event_id: str, report: bool = False, user: str = "u-9") -> Consumed[Engagement]:
    record = Engagement.model_validate_json(json.dumps(EXAMPLES["engagement"] | {
        "event_id": event_id, "subject_event_id": subject, "views": views, "ts": ts, "report": report, "user_id": user}))
    return Consumed(record, f"engagement:0:{event_id}")


def test_views_raise_a_waiting_items_priority_and_it_falls_back_when_they_stop(cfg):
    store = _store(cfg)
    now = int(time.time() * 1000)
    store.enqueue([_item("c-1", 1.0), _item("c-2", 2.0)])
    store.record_engagement([_views("c-1", 4_950, now, "en-1")])
    store.record_engagement([_views("c-1", 4_950, now, "en-1")])  # re-delivered: counted once
    assert store.rerank(now) == ["c-1"]
    # 4,950 views over the 5-minute window: 990 a minute, log10(10 + 990) = 3.
    assert store.claim_next("ana").event_id == "c-1"
    assert store.undecided()[0][0].priority == pytest.approx(3.0)
    assert store.rerank(now + 10 * 60_000) == ["c-1"]  # the views left the window
    assert {i.event_id: i.priority for i, _ in store.undecided()} == {"c-1": 1.0, "c-2": 2.0}


def test_small_changes_are_not_written(cfg):
    store = _store(cfg)
    now = int(time.time() * 1000)
    store.enqueue([_item("c-1", 1.0)])
    store.record_engagement([_views("c-1", 5, now, "en-1")])  # 1 a minute: log10(11) = 1.04
    assert store.rerank(now) == []


def test_a_user_report_is_audited_once_per_record(cfg):
    store = _store(cfg)
    now = int(time.time() * 1000)
    store.record_engagement([_views("c-9", 0, now, "en-1", report=True, user="u-5")] * 2)
    assert [(e.actor, e.action) for e in store.history("c-9")] == [("u-5", "reported by a user")]


def test_with_10000_items_waiting_a_viral_one_is_claimed_before_higher_risk_unviewed_ones(cfg, review_consumer):
    local.create_topics(cfg)
    store = _store(cfg)
    old = int(time.time() * 1000) - 3_600_000
    for start in range(0, 10_000, 2000):
        store.enqueue([_item(f"c-{i}", 2.0 + (i % 100) / 100, old + i) for i in range(start, start + 2000)])
    store.enqueue([_item("c-viral", 0.8)])  # x log10(10 + 20,000 a minute) = 3.44, above every other
    assert store.claim_next("probe").event_id != "c-viral"
    now = int(time.time() * 1000)
    started = time.monotonic()
    # Views climbing: 100, 1,000, then 100,000 in the current minute (20,000 a minute over the window).
    _send(cfg, cfg.kafka.topics.engagement, [
        _views("c-viral", views, now, f"en-{i}").record.model_dump_json().encode()
        for i, views in enumerate((100, 1_000, 98_900))])
    _rounds(review_consumer, lambda: _store(cfg).undecided(limit=1)[0][0].event_id == "c-viral", limit_s=60)
    assert store.claim_next("ana").event_id == "c-viral"
    assert time.monotonic() - started < 60  # bounded: engagement to the head of the queue
