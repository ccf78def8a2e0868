"""The tools' Kafka clients on the real broker: readers wait for a new topic's partitions and name a
topic that does not exist."""
from __future__ import annotations

import uuid

import pytest
from kafka import KafkaConsumer

from tools import kafka_io, local


def test_a_record_on_a_topic_created_a_moment_ago_is_read_back(services):
    topic = f"test-kafka-io-{uuid.uuid4().hex[:8]}"
    local.create_topics(services, [topic])
    producer = kafka_io.producer(services.kafka)
    producer.send(topic, key="k", value={"n": 1}).get(timeout=30)
    producer.close()
    received = kafka_io.read(services.kafka, [topic], lambda got: len(got) >= 1, timeout_s=30)
    assert [r.json() for r in received] == [{"n": 1}]


def test_a_topic_that_does_not_exist_is_named_rather_than_read_empty(services):
    missing = f"test-kafka-io-missing-{uuid.uuid4().hex[:8]}"
    consumer = KafkaConsumer(bootstrap_servers=services.kafka.bootstrap_servers)
    try:
        with pytest.raises(LookupError, match=missing):
            kafka_io.partitions_of(consumer, [missing], timeout_s=1)
    finally:
        consumer.close()
