"""Kafka clients for Lifeguard's tools (simulator, demo, bench, tail, tests), built on kafka-python.

Readers assign every partition and start from the beginning rather than joining a consumer group:
they are observers, and this avoids depending on group-join timing or on a broker's ``latest`` offset.
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Callable, Iterator

from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.serializer import Serializer

from lifeguard.config import KafkaConfig


class KeySerializer(Serializer):
    def serialize(self, topic, headers, key):
        return key.encode("utf-8") if isinstance(key, str) else key


class JsonSerializer(Serializer):
    """Dicts become JSON; bytes pass as they are (for replaying or injecting raw records)."""

    def serialize(self, topic, headers, value):
        return value if isinstance(value, bytes) else json.dumps(value).encode("utf-8")


def producer(kafka: KafkaConfig, **overrides) -> KafkaProducer:
    options = dict(bootstrap_servers=kafka.bootstrap_servers, acks="all", linger_ms=5, retries=5,
                   key_serializer=KeySerializer(), value_serializer=JsonSerializer(),
                   **kafka.security.python_client_options())
    options.update(overrides)
    return KafkaProducer(**options)


@dataclass(frozen=True)
class Received:
    topic: str
    key: str | None
    value: bytes
    timestamp: int
    received_ms: int  # wall clock when this reader got it, for end-to-end latency

    def json(self) -> dict:
        return json.loads(self.value)


def _received(record, now_ms: int) -> Received:
    key = record.key.decode("utf-8", "replace") if record.key else None
    return Received(record.topic, key, record.value, record.timestamp, now_ms)


def partitions_of(consumer: KafkaConsumer, topics: list[str], timeout_s: float = 10.0) -> list[TopicPartition]:
    """Every partition of `topics`. A topic created a moment ago may not be in the broker's metadata yet:
    asked again until `timeout_s`, then LookupError, rather than reading a topic with no partitions
    assigned and waiting out the caller's timeout on records that can never come."""
    deadline = time.monotonic() + timeout_s
    while True:
        known = {t: consumer.partitions_for_topic(t) for t in topics}
        missing = [t for t, partitions in known.items() if not partitions]
        if not missing:
            return [TopicPartition(t, p) for t in topics for p in sorted(known[t])]
        if time.monotonic() > deadline:
            raise LookupError(f"no such topic: {', '.join(missing)}")
        time.sleep(0.2)


def read(kafka: KafkaConfig, topics: list[str], until: Callable[[list[Received]], bool] = lambda _: False,
         timeout_s: float = 30.0, from_beginning: bool = True) -> list[Received]:
    """Reads the topics until ``until(received)`` holds and the reader has caught up, or ``timeout_s``
    passes; returns what came."""
    # A short fetch wait: the benchmark times arrivals here, and a reader should not add half a second.
    consumer = KafkaConsumer(bootstrap_servers=kafka.bootstrap_servers, enable_auto_commit=False,
                             consumer_timeout_ms=200, fetch_max_wait_ms=10, **kafka.security.python_client_options())
    try:
        consumer.assign(partitions_of(consumer, topics))
        if from_beginning:
            consumer.seek_to_beginning()
        received: list[Received] = []
        deadline = time.monotonic() + timeout_s
        done = False
        while time.monotonic() < deadline:
            batches = consumer.poll(timeout_ms=200).values()
            now = int(time.time() * 1000)
            for batch in batches:
                received.extend(_received(r, now) for r in batch)
            # Once ``until`` holds, keep reading until a poll comes back empty: the other partitions
            # (other topics' outputs for the same events) may still be catching up.
            done = done or until(received)
            if done and not batches:
                break
        return received
    finally:
        consumer.close()


def follow(kafka: KafkaConfig, topic: str, from_beginning: bool) -> Iterator[Received]:
    """Every record of one topic, as it arrives (for `lifeguard tail`)."""
    consumer = KafkaConsumer(bootstrap_servers=kafka.bootstrap_servers, enable_auto_commit=False,
                             **kafka.security.python_client_options())
    try:
        consumer.assign(partitions_of(consumer, [topic]))
    except LookupError as missing:
        consumer.close()
        raise SystemExit(f"{missing} on {kafka.bootstrap_servers}") from None
    if from_beginning:
        consumer.seek_to_beginning()
    try:
        for r in consumer:
            yield _received(r, int(time.time() * 1000))
    finally:
        consumer.close()
