"""The moderation job end to end: real broker, MiniCluster job, Redis-backed Feast and the ONNX model.

One job run per module (starting a MiniCluster takes ~30 s); each test produces its own events and
asserts on the outputs that carry its event ids.
"""
from __future__ import annotations

import base64
import io
import socket
import time
import uuid
from collections import Counter
from pathlib import Path

import pytest
from PIL import Image

from conftest import isolated_environ
from features.feast_store import apply_definitions, load_profiles, open_store
from features.profiles import UserProfile
from lifeguard import kafka_io, localrun
from lifeguard.config import load_config
from lifeguard.demo import write_image_banks
from lifeguard.jobrunner import running_job
from lifeguard.schemas import AgeBand
from lifeguard.simulator import blocklist_images, malformed_records

SEED = 11
KID = UserProfile("kid", AgeBand.UNDER_13, friend_ids=("kid-friend",), parent_id="parent-of-kid")
KID_FRIEND = UserProfile("kid-friend", AgeBand.UNDER_13, friend_ids=("kid",), parent_id="parent-of-kid-friend")
ADULT = UserProfile("adult", AgeBand.ADULT, age_verified=True, reputation=0.6)
TEEN = UserProfile("teen", AgeBand.TEEN_16_17, parent_id="parent-of-teen")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def chat(user: str, text: str, to: str | None = None, room: str | None = None, channel: str = "text") -> dict:
    return {"schema_version": 1, "event_id": f"c-{uuid.uuid4().hex[:12]}", "ts": int(time.time() * 1000),
            "user_id": user, "channel": channel, "room_id": room if to is None else None, "recipient_id": to,
            "text": text}


def upload(user: str, image: bytes, room: str = "lobby") -> dict:
    return {"schema_version": 1, "event_id": f"u-{uuid.uuid4().hex[:12]}", "ts": int(time.time() * 1000),
            "user_id": user, "room_id": room, "recipient_id": None, "content_type": "image/png",
            "image_b64": base64.b64encode(image).decode(), "uri": None, "caption": ""}


def png(color: tuple[int, int, int]) -> bytes:
    buffer = io.BytesIO()
    image = Image.new("RGB", (64, 64), color)
    for x in range(0, 64, 8):
        image.paste((255 - color[0], color[1], 255 - color[2]), (x, 0, x + 4, 64))
    image.save(buffer, "PNG")
    return buffer.getvalue()


class Job:
    """A running job with its own topics, and the outputs read back for a set of event ids."""

    def __init__(self, cfg, job):
        self.cfg, self.job = cfg, job

    def produce(self, records: list[tuple[str, bytes | dict]]) -> None:
        topics = self.cfg.kafka.topics
        producer = kafka_io.producer(self.cfg.kafka.bootstrap_servers)
        for topic, value in records:
            key = value.get("user_id", "x") if isinstance(value, dict) else "x"
            producer.send(getattr(topics, topic), key=key, value=value)
        producer.flush()
        producer.close()

    def outputs(self, decided_ids: set[str], dead_letters: int = 0, is_ours=lambda letter: True,
                timeout_s: float = 90) -> dict[str, list]:
        """Reads outputs until every id in ``decided_ids`` has a decision and ``dead_letters`` of the
        dead letters that ``is_ours`` accepts have arrived (other tests share the topics)."""
        topics = self.cfg.kafka.topics
        names = {topics.decisions: "decisions", topics.review_queue: "review", topics.parent_alerts: "alerts",
                 topics.dead_letter: "dead"}

        def done(received) -> bool:
            decided = {r.json()["event_id"] for r in received if r.topic == topics.decisions}
            ours = sum(r.topic == topics.dead_letter and is_ours(r.json()) for r in received)
            return decided_ids <= decided and ours >= dead_letters

        received = kafka_io.read(self.cfg.kafka.bootstrap_servers, list(names), done, timeout_s)
        by_kind: dict[str, list] = {kind: [] for kind in names.values()}
        for r in received:
            by_kind[names[r.topic]].append(r)
        return by_kind


def start_job(tmp_path: Path, **overrides: str):
    environ = isolated_environ(tmp_path, **overrides)
    cfg = load_config(environ=environ)
    localrun.create_topics(cfg)
    store = open_store(cfg.model_copy(update={"redis": load_config(environ={}).redis}))
    apply_definitions(cfg, store)
    load_profiles(cfg, store, [KID, KID_FRIEND, ADULT, TEEN])
    write_image_banks(cfg, SEED)
    return cfg, running_job("moderation_job.py", environ, tmp_path / "job.log", free_port())


@pytest.fixture(scope="module")
def job(services, tmp_path_factory):
    cfg, context = start_job(tmp_path_factory.mktemp("job"))
    with context as running:
        yield Job(cfg, running)


def decisions_by_id(outputs) -> dict[str, dict]:
    return {r.json()["event_id"]: r.json() for r in outputs["decisions"]}


def test_known_events_get_exactly_the_expected_decisions_and_alerts(job):
    banked = blocklist_images(SEED)[0]
    # A real host from the URLhaus blocklist, written the way users dodge link filters.
    entries = job.cfg.path(Path("models/build/urlhaus_entries.csv")).read_text().splitlines()[1:]
    host = next(line.split(",")[2] for line in entries if ",domain," in line)
    events = {
        "friendly": chat("kid", "gg that was fun, want to play again tomorrow?", to="kid-friend"),
        "lure": chat("adult", "add me on snapchat so we can talk more", to="kid"),
        "explicit": chat("adult", "send nudes", to="kid"),
        "malware_link": chat("teen", f"free robux at {host.replace('.', ' dot ')} hurry", room="lobby"),
        "self_harm": chat("teen", "i want to die, nobody would even notice", room="lobby"),
        "unknown_user": chat("ghost-user", "hi everyone", room="lobby"),
        "banked_image": upload("teen", banked),
        "fresh_image": upload("teen", png((30, 160, 90))),
    }
    job.produce([("chat" if e["event_id"].startswith("c-") else "uploads", e) for e in events.values()])
    ids = {e["event_id"] for e in events.values()}
    outputs = job.outputs(ids)
    decided = decisions_by_id(outputs)
    action = {name: decided[e["event_id"]]["action"] for name, e in events.items()}

    assert action == {"friendly": "allow", "lure": "review", "explicit": "block", "malware_link": "block",
                      "self_harm": "review", "unknown_user": "allow", "banked_image": "block",
                      "fresh_image": "allow"}
    assert Counter(r.json()["event_id"] for r in outputs["decisions"] if r.json()["event_id"] in ids) == \
        Counter({i: 1 for i in ids})
    assert any("off_platform_lure" in reason for reason in decided[events["lure"]["event_id"]]["reasons"])
    assert any("unknown user" in reason for reason in decided[events["unknown_user"]["event_id"]]["reasons"])
    assert decided[events["unknown_user"]["event_id"]]["age_band"] == "under_13"
    assert decided[events["banked_image"]["event_id"]]["scores"]["image_bank_distance"] <= 6

    reviews = {r.json()["event_id"] for r in outputs["review"]}
    assert {events["lure"]["event_id"], events["self_harm"]["event_id"]} <= reviews

    alerts = [r.json() for r in outputs["alerts"] if r.json()["event_id"] in ids]
    # The child received the explicit message; the teen (16-17) is outside the alerting bands.
    assert [(a["event_id"], a["parent_id"], a["child_role"], a["severity"]) for a in alerts] == [
        (events["explicit"]["event_id"], "parent-of-kid", "recipient", "urgent")]
    assert all(r.key == "parent-of-kid" for r in outputs["alerts"] if r.json()["event_id"] in ids)


def test_a_thousand_malformed_records_all_reach_dead_letter_and_the_job_keeps_going(job):
    bad = malformed_records(1000, seed=3, oversize_bytes=job.cfg.limits.max_record_bytes + 1)
    valid = [chat("kid", f"message number {i}", to="kid-friend") for i in range(200)]
    mixed: list[tuple[str, bytes | dict]] = []
    for i, (topic, value) in enumerate(bad):
        mixed.append((topic, value))
        if i % 5 == 0:
            mixed.append(("chat", valid[i // 5]))
    # The dead letters of this test are those whose original bytes are among ours.
    ours = Counter(base64.b64encode(value).decode() for _, value in bad)
    job.produce(mixed)
    outputs = job.outputs({v["event_id"] for v in valid}, dead_letters=1000,
                          is_ours=lambda letter: letter["original_b64"] in ours, timeout_s=150)

    decided = Counter(r.json()["event_id"] for r in outputs["decisions"])
    assert all(decided[v["event_id"]] == 1 for v in valid)
    letters = [r.json() for r in outputs["dead"] if r.json()["original_b64"] in ours]
    assert len(letters) == 1000
    assert Counter(letter["original_b64"] for letter in letters) == ours
    assert all(letter["reason"] and letter["source_offset"] >= 0 for letter in letters)
    assert {letter["error_kind"] for letter in letters} >= {"not_json", "not_utf8", "invalid", "unknown_version",
                                                            "oversize"}
    assert job.job.alive()


def test_an_undecodable_upload_goes_to_dead_letter(job):
    broken = upload("teen", b"\x89PNG\r\n\x1a\n" + b"\x00" * 40)
    job.produce([("uploads", broken)])
    outputs = job.outputs(set(), dead_letters=1, is_ours=lambda letter: letter["event_id"] == broken["event_id"],
                          timeout_s=60)
    letters = [r.json() for r in outputs["dead"] if r.json().get("event_id") == broken["event_id"]]
    assert len(letters) == 1 and "image rejected" in letters[0]["reason"]
    assert broken["event_id"] not in decisions_by_id(outputs)


def test_with_redis_dead_decisions_still_flow_as_for_the_youngest(services, tmp_path):
    cfg, context = start_job(tmp_path, LIFEGUARD_REDIS__PORT="1")
    with context as running:
        dead_redis = Job(cfg, running)
        events = [chat("adult", "hello there", room="lobby"), chat("teen", "nice build!", to="adult")]
        started = time.monotonic()
        dead_redis.produce([("chat", e) for e in events])
        outputs = dead_redis.outputs({e["event_id"] for e in events}, timeout_s=90)
        elapsed = time.monotonic() - started
        decided = decisions_by_id(outputs)
        for event in events:
            decision = decided[event["event_id"]]
            assert decision["age_band"] == "under_13"
            assert any("feature store unavailable" in reason for reason in decision["reasons"])
        assert running.alive() and elapsed < 60
