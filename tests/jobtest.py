"""The job-test harness: a moderation job on the MiniCluster with its own topics, Feast project and
image banks, known users, event builders, and reading back the outputs for a set of event ids."""
from __future__ import annotations

import base64
import io
import socket
import time
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator

from PIL import Image

from conftest import isolated_environ
from features.feast_store import apply_definitions, load_profiles, open_store
from lifeguard.profiles import UserProfile
from tools import kafka_io, local
from lifeguard.config import KafkaConfig, LifeguardConfig, load_config
from tools.demo import write_image_banks
from tools.jobrunner import running_job
from lifeguard.schemas import AgeBand

SEED = 11
READY_TIMEOUT_S = 300
WARM_UP_EVERY_S = 60
# A child whose parents let everyone write and send images (so what is said decides), and one who keeps the
# platform's default for the youngest band: friends only.
KID = UserProfile("kid", AgeBand.UNDER_13, friend_ids=("kid-friend",), parent_id="parent-of-kid",
                  dm_policy="everyone", image_policy="everyone")
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


def upload(user: str, image: bytes, room: str = "lobby", to: str | None = None) -> dict:
    return {"schema_version": 1, "event_id": f"u-{uuid.uuid4().hex[:12]}", "ts": int(time.time() * 1000),
            "user_id": user, "room_id": room if to is None else None, "recipient_id": to, "content_type": "image/png",
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
        producer = kafka_io.producer(self.cfg.kafka)
        sent = [producer.send(getattr(topics, topic), key=value.get("user_id", "x") if isinstance(value, dict) else "x",
                              value=value) for topic, value in records]
        producer.flush()
        for delivery in sent:  # a record the broker refused fails the test here, not as a missing decision
            delivery.get(timeout=30)
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

        received = kafka_io.read(self.cfg.kafka, list(names), done, timeout_s)
        by_kind: dict[str, list] = {kind: [] for kind in names.values()}
        for r in received:
            by_kind[names[r.topic]].append(r)
        return by_kind


def prepared_run(tmp_path: Path, **overrides: str) -> tuple[dict[str, str], LifeguardConfig]:
    """Config overrides for a moderation job with its own topics, Feast project (holding the known users)
    and image banks, and the config they give."""
    environ = isolated_environ(tmp_path, **overrides)
    cfg = load_config(environ=environ)
    local.create_topics(cfg)
    store = open_store(cfg.model_copy(update={"redis": load_config(environ={}).redis}))
    apply_definitions(cfg, store)
    load_profiles(cfg, store, [KID, KID_FRIEND, ADULT, TEEN])
    write_image_banks(cfg, SEED)
    return environ, cfg


@contextmanager
def started_job(tmp_path: Path, **overrides: str) -> Iterator["Job"]:
    """A moderation job on the MiniCluster (`prepared_run`), once it has decided a warm-up message
    (`wait_until_ready`)."""
    environ, cfg = prepared_run(tmp_path, **overrides)
    with running_job("moderation_job.py", environ, tmp_path / "job.log", free_port()) as running:
        job = Job(cfg, running)
        wait_until_ready(lambda: send_warm_up(job), cfg.kafka, cfg.kafka.topics.decisions, "event_id",
                         lambda: f"{running.diagnosis()}\n{running.log_tail()}")
        yield job


def send_warm_up(job: "Job") -> str:
    """A room message that any running moderation job decides; its event id."""
    warm_up = chat("adult", "warming up", room="lobby")
    job.produce([("chat", warm_up)])
    return warm_up["event_id"]


def wait_until_ready(send_warm_up: Callable[[], str], kafka: KafkaConfig, answer_topic: str, answer_field: str,
                     diagnosis: Callable[[], str]) -> set[str]:
    """Flink reports a job RUNNING before its Python operators are up, which on a busy two-core machine can
    take minutes, so tests time their own records from a job that has answered a warm-up record. One is
    sent (`send_warm_up` returns its id) every WARM_UP_EVERY_S until a record on `answer_topic` carries one
    of the ids in `answer_field`, so that readiness does not rest on a single record. Returns the ids sent;
    a job that answers none in READY_TIMEOUT_S fails with its `diagnosis`."""
    deadline = time.monotonic() + READY_TIMEOUT_S
    sent: set[str] = set()

    def answered(received) -> bool:
        return any(r.json()[answer_field] in sent for r in received)

    while True:
        sent.add(send_warm_up())
        if answered(kafka_io.read(kafka, [answer_topic], answered, WARM_UP_EVERY_S)):
            return sent
        if time.monotonic() > deadline:
            raise RuntimeError(f"the job answered none of {len(sent)} warm-up records within {READY_TIMEOUT_S}s:\n"
                               f"{diagnosis()}")


def decisions_by_id(outputs) -> dict[str, dict]:
    return {r.json()["event_id"]: r.json() for r in outputs["decisions"]}
