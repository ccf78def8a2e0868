"""The running job follows the control topics: policy and hash-bank updates change later decisions
without a restart, and malformed updates become dead letters while what is in force stays.

One MiniCluster job for the module. Control updates and messages travel on different topics, so a
message produced just after an update may still be decided under the old one: each test sends probes
until a decision shows the update in force (bounded), then asserts on that decision.
"""
from __future__ import annotations

import base64
import copy
import json
import time
import uuid
from typing import Callable

import pytest
import yaml

from lifeguard import PROJECT_ROOT
from tools.simulator import benign_images
from jobtest import SEED, Job, chat, started_job, upload
from udfs.images import decode_image, image_hashes

DOCUMENT = yaml.safe_load((PROJECT_ROOT / "flink-conf/policy.yaml").read_text())


@pytest.fixture(scope="module")
def job(services, tmp_path_factory):
    with started_job(tmp_path_factory.mktemp("control")) as job:
        yield job


def run_id() -> str:
    return uuid.uuid4().hex[:8]


def decide(job: Job, topic: str, event: dict, timeout_s: float = 60) -> dict:
    job.produce([(topic, event)])
    decided = [r.json() for r in job.outputs({event["event_id"]}, timeout_s=timeout_s)["decisions"]
               if r.json()["event_id"] == event["event_id"]]
    assert decided, f"no decision for {event['event_id']} within {timeout_s}s"
    return decided[0]


def decide_until(job: Job, topic: str, make_event: Callable[[], dict], done: Callable[[dict], bool],
                 timeout_s: float = 60) -> dict:
    """Sends fresh probes until one's decision satisfies ``done``; returns that decision."""
    deadline = time.monotonic() + timeout_s
    while True:
        decision = decide(job, topic, make_event())
        if done(decision):
            return decision
        assert time.monotonic() < deadline, f"no update in force after {timeout_s}s; last decision: {decision}"
        time.sleep(0.5)


def policy_update(doc: dict, event_id: str | None = None) -> dict:
    return {"schema_version": 1, "event_id": event_id or f"pol-{run_id()}", "policy": doc}


def bank_update(op: str, bank: str, phash: str | None = None) -> dict:
    update = {"schema_version": 1, "event_id": f"hb-{run_id()}", "op": op, "bank": bank}
    return {**update, "signal_type": "phash", "hash": phash} if phash else update


def put_policy(job: Job, doc: dict) -> dict:
    """Produces a policy update and waits until a decision is made under it."""
    job.produce([("policy_updates", policy_update(doc))])
    return decide_until(job, "chat", lambda: chat("adult", "hello everyone", room="lobby"),
                        lambda d: d["policy_version"] == doc["version"])


def dead_letters_for(job: Job, originals: list[bytes], timeout_s: float = 60) -> dict[bytes, dict]:
    ours = {base64.b64encode(value).decode(): value for value in originals}
    outputs = job.outputs(set(), dead_letters=len(ours), is_ours=lambda letter: letter["original_b64"] in ours,
                          timeout_s=timeout_s)
    return {ours[r.json()["original_b64"]]: r.json() for r in outputs["dead"] if r.json()["original_b64"] in ours}


def test_a_policy_update_changes_later_decisions_without_a_restart(job):
    word = "marmalade"
    before = decide(job, "chat", chat("adult", f"i love {word} on toast", room="lobby"))
    assert before["action"] != "block" and before["policy_version"] == DOCUMENT["version"]

    rule = {"id": "test_no_marmalade", "category": "spam", "action": "block", "keywords": [word]}
    doc = {**copy.deepcopy(DOCUMENT), "version": f"test-{run_id()}", "rules": DOCUMENT["rules"] + [rule]}
    job.produce([("policy_updates", policy_update(doc))])
    after = decide_until(job, "chat", lambda: chat("adult", f"i love {word} on toast", room="lobby"),
                         lambda d: d["policy_version"] == doc["version"])

    assert after["action"] == "block"
    assert f"rule:test_no_marmalade matched '{word}'" in after["reasons"]
    assert job.job.alive()


def test_a_malformed_policy_update_goes_to_dead_letter_and_the_policy_in_force_stays(job):
    in_force = {**copy.deepcopy(DOCUMENT), "version": f"test-{run_id()}"}
    put_policy(job, in_force)

    invalid = json.dumps(policy_update({"version": "broken", "rules": "none"})).encode()
    not_json = f"{{policy {run_id()}".encode()
    # Valid on its own, but reusing the version in force for other content: refused where it applies.
    same_version = json.dumps(policy_update({**in_force, "voice_margin": 0.5})).encode()
    # Valid, but blocking every message sent to a child: refused by the guard (udfs.control.unsafe_change).
    blocks_all = copy.deepcopy(in_force) | {"version": f"test-all-{run_id()}"}
    blocks_all["thresholds"]["toxicity"]["under_13"]["block"] = 0
    unsafe = json.dumps(policy_update(blocks_all)).encode()
    job.produce([("policy_updates", value) for value in (invalid, not_json, same_version, unsafe)])
    letters = dead_letters_for(job, [invalid, not_json, same_version, unsafe])

    assert {value: letter["error_kind"] for value, letter in letters.items()} == {
        invalid: "invalid", not_json: "not_json", same_version: "invalid", unsafe: "unprocessable"}
    assert "thresholds" in letters[invalid]["reason"]
    assert "in force with different content" in letters[same_version]["reason"]
    assert "thresholds.toxicity.under_13.block 0 is below the floor" in letters[unsafe]["reason"]
    assert {letter["source_topic"] for letter in letters.values()} == {job.cfg.kafka.topics.policy_updates}
    later = decide(job, "chat", chat("teen", "nice build!", room="lobby"))
    assert later["policy_version"] == in_force["version"]


def test_a_phash_added_through_hash_bank_updates_blocks_the_next_upload(job):
    image = next(data for data, content_type in benign_images(SEED) if content_type == "image/png")
    phash = image_hashes(decode_image(image, 10**6, 10**7), image).phash
    bank = f"test-bank-{run_id()}"
    assert decide(job, "uploads", upload("teen", image))["action"] == "allow"

    job.produce([("hash_bank_updates", bank_update("add", bank, phash))])
    blocked = decide_until(job, "uploads", lambda: upload("teen", image), lambda d: d["action"] == "block")
    assert any(f"within 0 bits of {phash} in bank {bank}" in r for r in blocked["reasons"])

    job.produce([("hash_bank_updates", bank_update("disable", bank))])
    decide_until(job, "uploads", lambda: upload("teen", image), lambda d: d["action"] == "allow")


def test_a_malformed_bank_update_goes_to_dead_letter(job):
    bad_hash = json.dumps(bank_update("add", f"test-bank-{run_id()}", "not-a-phash")).encode()
    no_hash = json.dumps({**bank_update("remove", "block"), "signal_type": "phash"}).encode()
    not_utf8 = b"\xff\xfe" + run_id().encode()
    job.produce([("hash_bank_updates", bad_hash), ("hash_bank_updates", no_hash), ("hash_bank_updates", not_utf8)])
    letters = dead_letters_for(job, [bad_hash, no_hash, not_utf8])

    assert {value: letter["error_kind"] for value, letter in letters.items()} == {
        bad_hash: "invalid", no_hash: "invalid", not_utf8: "not_utf8"}
    assert "16 hex characters" in letters[bad_hash]["reason"]
    assert "needs signal_type and hash" in letters[no_hash]["reason"]
    assert {letter["source_topic"] for letter in letters.values()} == {job.cfg.kafka.topics.hash_bank_updates}
    assert job.job.alive()
