"""The review loop end to end on the real broker, moderation job and PostgreSQL: an upload near a banned
image goes to review, a reviewer confirms it, and an edited re-upload is blocked by the hash the verdict
banked, with the decision in its reasons; a blocked message is appealed, a second reviewer overturns it
and a corrected decision follows. The audit log holds each history in order."""
from __future__ import annotations

import random
import time
import uuid

import pytest

from conftest import drop_review_database
from jobtest import SEED, Job, chat, started_job, upload
from review.consumer import ReviewConsumer
from review.schema import prepare_database
from review.store import ReviewStore
from tools.simulator import benign_images, edited_reupload
from udfs.images import decode_image, image_hashes


# An adult asking a child for their address in a direct message: blocked.
BLOCKED_TEXT = "what is your home address? i can come pick you up after school"


@pytest.fixture(scope="module")
def job(services, tmp_path_factory):
    database = f"lifeguard_test_{uuid.uuid4().hex[:8]}"
    with started_job(tmp_path_factory.mktemp("review-loop"), LIFEGUARD_REVIEW__DATABASE=database) as job:
        prepare_database(job.cfg.review)
        yield job
    drop_review_database(job.cfg)


@pytest.fixture
def consumer(job):
    """The review store's consumer; closed after the test, so the next test's joins the group at once."""
    consumer = ReviewConsumer(job.cfg)
    yield consumer
    consumer.close()


def decided(job: Job, event: dict, timeout_s: float = 90) -> dict:
    job.produce([("uploads", event)])
    found = [r.json() for r in job.outputs({event["event_id"]}, timeout_s=timeout_s)["decisions"]
             if r.json()["event_id"] == event["event_id"]]
    assert found, f"no decision for {event['event_id']} within {timeout_s}s"
    return found[0]


def consume_until(consumer: ReviewConsumer, done, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while not done():
        assert time.monotonic() < deadline, f"review consumer: {consumer.counts}"
        consumer.run_round(poll_ms=200)


def near_miss(phash: str, bits: int) -> str:
    """`phash` with its lowest `bits` bits flipped: that many bits away."""
    return f"{int(phash, 16) ^ ((1 << bits) - 1):016x}"


def test_a_confirmed_upload_blocks_its_edited_reupload_with_the_reviewers_decision(job, consumer):
    image = next(data for data, content_type in benign_images(SEED + 1) if content_type == "image/png")
    phash = image_hashes(decode_image(image, 10**6, 10**7), image).phash
    # A banned image 8 bits away: past the block bank's match distance (6), within its near miss (10).
    job.produce([("hash_bank_updates", {"schema_version": 1, "event_id": f"hb-{uuid.uuid4().hex[:8]}", "op": "add",
                                        "bank": "block", "signal_type": "phash", "hash": near_miss(phash, 8)})])
    first = upload("teen", image)
    deadline = time.monotonic() + 60
    while (decision := decided(job, first))["action"] != "review":  # until the bank update is in force
        assert time.monotonic() < deadline, decision
        first = upload("teen", image)
    assert any("near miss" in reason for reason in decision["reasons"])

    store = ReviewStore.connect(job.cfg.review)
    consume_until(consumer, lambda: store.history(first["event_id"]) != [])
    item = store.claim_next("ana")
    while item.event_id != first["event_id"]:  # an earlier probe's item, before the bank update took
        store.decide(item.event_id, "ana", "overturn")
        item = store.claim_next("ana")
    assert item.kind == "upload" and item.hashes["phash"] == phash
    verdict = store.decide(item.event_id, "ana", "confirm", "nudity")
    consume_until(consumer, lambda: not store.pending_publication())

    edited = edited_reupload(image, "jpeg", random.Random(3))[0]
    deadline = time.monotonic() + 60
    while (again := decided(job, upload("adult", edited)))["action"] != "block":
        assert time.monotonic() < deadline, again
    assert any("bank reviewer-confirmed" in r and f"reviewer decision {verdict.event_id}: confirmed nudity" in r
               for r in again["reasons"]), again["reasons"]

    consume_until(consumer, lambda: len(store.history(first["event_id"])) >= 4)
    history = store.history(first["event_id"])
    # The decision and the review item travel on two topics: either may be read first.
    assert {e.action for e in history[:2]} == {"decided review", "queued for review"}
    assert [e.action for e in history[2:]] == ["claimed", "confirm"]
    assert history[-1].actor == "ana" and history[-1].detail["decision_id"] == verdict.event_id
    assert job.job.alive()


def test_an_appealed_block_overturned_by_a_second_reviewer_is_corrected(job, consumer):
    store = ReviewStore.connect(job.cfg.review)
    message = chat("adult", BLOCKED_TEXT, to="kid")
    job.produce([("chat", message)])
    (blocked,) = [r.json() for r in job.outputs({message["event_id"]})["decisions"]
                  if r.json()["event_id"] == message["event_id"]]
    assert blocked["action"] == "block", blocked
    consume_until(consumer, lambda: any(e.action == "decided block" for e in store.history(message["event_id"])))

    appeal = {"schema_version": 1, "event_id": f"ap-{uuid.uuid4().hex[:8]}", "ts": int(time.time() * 1000),
              "user_id": "adult", "subject_event_id": message["event_id"], "statement": "my number, for my nephew"}
    job.produce([("appeals", appeal)])
    consume_until(consumer, lambda: consumer.counts.appeals_new == 1)
    item = store.claim_next("ben")
    while item.event_id != appeal["event_id"]:  # the other test's items, if any wait
        store.decide(item.event_id, "ben", "overturn")
        item = store.claim_next("ben")
    verdict = store.decide(item.event_id, "ben", "overturn")
    consume_until(consumer, lambda: not store.pending_publication())

    deadline = time.monotonic() + 30
    while not (corrections := [r.json() for r in job.outputs({message["event_id"]})["decisions"]
                               if r.json()["event_id"] == message["event_id"] and r.json().get("supersedes")]):
        assert time.monotonic() < deadline, "no corrected decision on decisions"
    assert [(c["action"], c["supersedes"]["decided_ts"], c["reasons"]) for c in corrections] == [
        ("allow", blocked["decided_ts"], [f"reviewer decision {verdict.event_id}: overturned"])]
    # The child's parent was alerted of the block, and hears that it was lifted.
    corrected = ("decided allow (correction)", "alerted parent parent-of-kid (correction, info)")
    consume_until(consumer, lambda: set(corrected) <= {e.action for e in store.history(message["event_id"])})
    actions = [e.action for e in store.history(message["event_id"])]
    assert actions[0] == "decided block" and "alerted parent parent-of-kid (harmful_content, urgent)" in actions
    assert [a for a in actions if not a.startswith("alerted")] == [
        "decided block", "appealed", "claimed", "overturn", "decided allow (correction)"]
