"""Kafka in and out of the review store: `lifeguard review consume`.

Reads ``review-queue`` (items to store), ``appeals`` (items above the ordinary queue), ``engagement`` (views
that re-rank waiting items each round, user reports), ``decisions`` and ``parent-alerts`` (to audit) under a
consumer group, and commits a batch's offsets only after its database transaction: with the store's inserts keyed
by event and source, a crash or a database outage anywhere re-reads records and changes nothing twice. A
record that is not valid for its topic, or an appeal with nothing to appeal, goes to ``dead-letter`` with
its bytes and the reason. Each round
also publishes the verdicts waiting in the store's outbox to ``moderator-decisions``, each after what it
sends out (bank updates, a corrected decision, parent alert corrections, a label: `review.verdicts`).

The moderation job never waits on any of this: it only writes to the topics.
"""
from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from typing import Callable

import psycopg
from kafka import KafkaConsumer, KafkaProducer
from kafka.errors import KafkaError

from lifeguard.config import LifeguardConfig
from lifeguard.schemas import OUTPUT_SCHEMAS, REVIEW_INPUT_SCHEMAS
from review.store import Consumed, ReviewStore
from udfs.parse import Rejected, SourceRef, dead_letter, parse_record

log = logging.getLogger(__name__)
POLL_RECORDS = 500
# After a failed round (database or broker away), wait this long before reconnecting.
RETRY_S = 2.0
# How long leaving the group may take on close: unanswered (a broker that is away, or slow to answer a
# LeaveGroup), the partitions move once the member's session times out instead.
CLOSE_TIMEOUT_MS = 3000
METADATA_MAX_AGE_MS = 10_000


@dataclass
class ConsumerCounts:
    items_read: int = 0
    items_new: int = 0
    decisions_read: int = 0
    alerts_read: int = 0
    appeals_new: int = 0
    reranked: int = 0
    dead_letters: int = 0
    verdicts_published: int = 0
    failed_rounds: int = 0
    errors: list[str] = field(default_factory=list)


def _now_ms() -> int:
    return int(time.time() * 1000)


class ReviewConsumer:
    def __init__(self, cfg: LifeguardConfig):
        self.cfg = cfg
        self.topics = cfg.kafka.topics
        self.counts = ConsumerCounts()
        # topic name -> the schema its records are read with
        self._schemas = {self.topics.review_queue: "review-queue", self.topics.decisions: "decisions",
                         self.topics.parent_alerts: "parent-alerts", self.topics.appeals: "appeals",
                         self.topics.engagement: "engagement"}
        self._producer = KafkaProducer(bootstrap_servers=cfg.kafka.bootstrap_servers, acks="all", retries=5,
                                       **cfg.kafka.security.python_client_options())
        self._consumer: KafkaConsumer | None = None
        self._store: ReviewStore | None = None

    def _kafka(self) -> KafkaConsumer:
        if self._consumer is None:
            self._consumer = KafkaConsumer(
                *self._schemas, bootstrap_servers=self.cfg.kafka.bootstrap_servers,
                group_id=self.cfg.review.consumer_group, enable_auto_commit=False, auto_offset_reset="earliest",
                # A topic created after the subscription, or not yet in the broker's metadata when it began,
                # is read within this long instead of kafka-python's default five minutes.
                metadata_max_age_ms=METADATA_MAX_AGE_MS, **self.cfg.kafka.security.python_client_options())
        return self._consumer

    def _database(self) -> ReviewStore:
        if self._store is None:
            self._store = ReviewStore.connect(self.cfg.review)
        return self._store

    def run_round(self, poll_ms: int = 500) -> None:
        """One batch: read, store, commit, then publish the outbox. A failure commits nothing: with the
        database away, the batch's partitions are rewound to its first records and read again next round;
        with the broker away, a new consumer resumes from the committed offsets."""
        try:
            consumer = self._kafka()
            batch = consumer.poll(timeout_ms=poll_ms, max_records=POLL_RECORDS)
        except KafkaError as error:
            self._failed(error)
            self._consumer = _closed(self._consumer, timeout_ms=CLOSE_TIMEOUT_MS)
            return
        try:
            store = self._database()
            read: dict[str, list[tuple]] = {schema: [] for schema in self._schemas.values()}  # (record, Consumed)
            for records in batch.values():
                for record in records:
                    if (consumed := self._parse(record)) is not None:
                        read[self._schemas[record.topic]].append((record, consumed))
            valid = {schema: [consumed for _, consumed in pairs] for schema, pairs in read.items()}
            # Outputs first: an item's decision is audited before its queueing when both came in one batch.
            store.record_outputs(valid["decisions"], valid["parent-alerts"])
            self.counts.items_new += store.enqueue(valid["review-queue"])
            store.record_engagement(valid["engagement"])
            self.counts.reranked += len(store.rerank(_now_ms()))
            for record, appeal in read["appeals"]:
                try:
                    self.counts.appeals_new += store.enqueue_appeal(appeal)
                except Rejected as rejected:
                    self._dead_letter(record, rejected)
            self._producer.flush()  # the round's dead letters are on their topic before the offsets move
            consumer.commit()
            self.counts.items_read += len(read["review-queue"])
            self.counts.decisions_read += len(read["decisions"])
            self.counts.alerts_read += len(read["parent-alerts"])
            self._publish_verdicts(store)
        except psycopg.Error as error:
            self._failed(error)
            self._store = _closed(self._store)
            for partition, records in batch.items():
                consumer.seek(partition, records[0].offset)
        except KafkaError as error:  # stored already: records read again are stored once
            self._failed(error)
            self._consumer = _closed(self._consumer, timeout_ms=CLOSE_TIMEOUT_MS)

    def _failed(self, error: Exception) -> None:
        self.counts.failed_rounds += 1
        self.counts.errors.append(f"{type(error).__name__}: {error}")
        log.warning("review consumer round failed, trying again in %.0fs: %s", RETRY_S, error)
        time.sleep(RETRY_S)

    def _parse(self, record) -> Consumed | None:
        try:
            parsed = parse_record(OUTPUT_SCHEMAS | REVIEW_INPUT_SCHEMAS, self._schemas[record.topic], record.value,
                                  self.cfg.limits.max_record_bytes)
        except Rejected as rejected:
            self._dead_letter(record, rejected)
            return None
        return Consumed(parsed, f"{record.topic}:{record.partition}:{record.offset}")

    def _dead_letter(self, record, rejected: Rejected) -> None:
        source = SourceRef(record.topic, record.partition, record.offset, record.timestamp)
        letter = dead_letter(source, record.value, rejected, _now_ms())
        self._producer.send(self.topics.dead_letter, key=record.key, value=letter.model_dump_json().encode())
        self.counts.dead_letters += 1

    def _publish_verdicts(self, store: ReviewStore) -> None:
        pending = store.pending_publication()
        for publication in pending:
            for record in publication.records:
                self._producer.send(getattr(self.topics, record["topic"]), key=record["key"].encode(),
                                    value=json.dumps(record["value"]).encode())
            decision = publication.decision
            self._producer.send(self.topics.moderator_decisions, key=decision.subject_event_id.encode(),
                                value=decision.model_dump_json().encode())
        if pending:
            self._producer.flush()
            store.mark_published([p.decision.event_id for p in pending])
            self.counts.verdicts_published += len(pending)

    def run(self, stop: Callable[[], bool]) -> ConsumerCounts:
        try:
            while not stop():
                self.run_round()
        finally:
            self.close()
        return self.counts

    def close(self) -> None:
        """Leaves the consumer group (its partitions go to the group's other members at once) and closes."""
        self._consumer, self._store = _closed(self._consumer, timeout_ms=CLOSE_TIMEOUT_MS), _closed(self._store)
        self._producer.close()


def _closed(client, **options) -> None:
    """Closes a client that may be broken already (closing is best effort); returns None, its new value."""
    if client is not None:
        try:
            client.close(**options)
        except Exception:
            pass
    return None
