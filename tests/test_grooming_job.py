"""Conversation-level grooming detection in the real moderation job: real broker, MiniCluster, Redis-backed
Feast, the ONNX text model, the sentence encoder and the (synthetic) grooming bank.

An adult stranger meets a child in a game room, then writes to them over a dozen direct messages; the job
must publish exactly one conversation review item and one grooming-risk parent alert
for the pair, its reasons naming the move from the room. A friendly conversation between two children must
publish neither.
"""
from __future__ import annotations

import time
import uuid

import pytest

from jobtest import chat, started_job
from tools import kafka_io

# Written apart from the bank (tests/test_grooming.py checks that no line of it is in the bank).
GROOMING = [
    ("adult", "kid", "hey, you were really fast in that race"),
    ("adult", "kid", "i could help you unlock the hidden car if you like"),
    ("kid", "adult", "cool thanks"),
    ("adult", "kid", "you talk like someone much older, i like that"),
    ("adult", "kid", "what grade are you in?"),
    ("kid", "adult", "6th"),
    ("adult", "kid", "are your parents home or are you on your own?"),
    ("adult", "kid", "does your mum read your messages on here?"),
    ("kid", "adult", "not really"),
    ("adult", "kid", "cool, then this can be just our thing"),
    ("adult", "kid", "there's a better app for chatting, what's your name on it?"),
    ("adult", "kid", "send me a selfie so i can see you"),
    ("adult", "kid", "no need to tell anyone about me ok"),
]
FRIENDLY = [
    ("kid", "kid-friend", "that boss fight was so hard"),
    ("kid-friend", "kid", "i know!! let's try again after dinner"),
    ("kid", "kid-friend", "my sister wants to play too"),
    ("kid-friend", "kid", "ok she can join our team"),
    ("kid", "kid-friend", "don't tell anyone our secret base location haha"),
    ("kid-friend", "kid", "i won't, see you at school"),
]


@pytest.fixture(scope="module")
def job(services, tmp_path_factory):
    with started_job(tmp_path_factory.mktemp("grooming-job")) as job:
        yield job


def test_a_grooming_conversation_gives_one_review_item_and_one_parent_alert_and_a_friendly_one_none(job):
    room = f"race-track-{uuid.uuid4().hex[:6]}"
    in_room = [chat("kid", "anyone want to race?", room=room), chat("adult", "me! i saw you win last time", room=room)]
    job.produce([("chat", e) for e in in_room])
    job.outputs({e["event_id"] for e in in_room})
    grooming = [chat(sender, text, to=recipient) for sender, recipient, text in GROOMING]
    friendly = [chat(sender, text, to=recipient) for sender, recipient, text in FRIENDLY]
    grooming_ids = {e["event_id"] for e in grooming}
    friendly_ids = {e["event_id"] for e in friendly}
    job.produce([("chat", e) for e in grooming + friendly])
    topics = job.cfg.kafka.topics
    names = [topics.decisions, topics.review_queue, topics.parent_alerts]

    def ours(received, topic, ids):
        return [r.json() for r in received if r.topic == topic and r.json()["event_id"] in ids]

    def done(received) -> bool:
        decided = {d["event_id"] for d in ours(received, topics.decisions, grooming_ids | friendly_ids)}
        alerted = [a for a in ours(received, topics.parent_alerts, grooming_ids) if a["kind"] == "grooming_risk"]
        return decided == grooming_ids | friendly_ids and bool(alerted)

    assert kafka_io.read(job.cfg.kafka, names, done, timeout_s=120)
    time.sleep(3)  # the later messages' turns have had time to (wrongly) emit again
    received = kafka_io.read(job.cfg.kafka, names, timeout_s=5)

    # Each message is also judged alone (the photo request may be blocked by itself); the pair's risk is
    # what the conversation item and the grooming alert are about.
    assert len(ours(received, topics.decisions, grooming_ids)) == len(GROOMING)

    conversation = [r for r in ours(received, topics.review_queue, grooming_ids | friendly_ids)
                    if r["kind"] == "conversation"]
    alerts = [a for a in ours(received, topics.parent_alerts, grooming_ids | friendly_ids)
              if a["kind"] == "grooming_risk"]
    assert len(conversation) == 1 and len(alerts) == 1
    review, alert = conversation[0], alerts[0]
    assert review["event_id"] in grooming_ids and review["user_id"] == "adult"
    assert review["categories"] == ["sexual_minors"]
    assert any(r.startswith("moved to direct messages") and r.endswith(f"in room {room}") for r in review["reasons"])
    assert review["reasons"][0].startswith("conversation risk") and ">= review" in review["reasons"][0]
    assert "age gap: adult contact, under_13 child" in review["reasons"]
    assert "the contact is not on the child's friend list" in review["reasons"]
    assert any(r.startswith("grooming stages seen") for r in review["reasons"])
    assert (alert["parent_id"], alert["child_id"], alert["child_role"]) == ("parent-of-kid", "kid", "recipient")
    assert alert["event_id"] in grooming_ids and alert["reasons"]
    assert all(r.key == "parent-of-kid" for r in received
               if r.topic == topics.parent_alerts and r.json()["kind"] == "grooming_risk")
