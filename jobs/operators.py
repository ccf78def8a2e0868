"""The moderation job's operators: thin adapters from Flink to the pure logic in udfs/ and features/.

They live in a module of their own (not the job's ``__main__``) so Flink pickles them by reference.
"""
from __future__ import annotations

import time

from pyflink.common import Row, Types
from pyflink.datastream import KeyedProcessFunction, OutputTag, ProcessFunction, RuntimeContext
from pyflink.datastream.state import ListStateDescriptor, ValueStateDescriptor

from features.feast_store import ProfileLookup
from lifeguard.config import LifeguardConfig
from lifeguard.schemas import Decision, ParentAlert, ReviewItem
from udfs.parse import Rejected, SourceRef, dead_letter, parse_event
from udfs.screening import Output, ScreeningInput, Screener

# A validated chat message or upload, kept in state as declared types (not pickled objects).
VALID_RECORD = Types.ROW_NAMED(
    ["schema", "user_id", "topic", "partition", "offset", "kafka_ts", "value"],
    [Types.STRING(), Types.STRING(), Types.STRING(), Types.INT(), Types.LONG(), Types.LONG(), Types.STRING()])
# What goes to an output topic.
OUTPUT_RECORD = Types.ROW_NAMED(["topic", "k", "v"], [Types.STRING(), Types.STRING(), Types.STRING()])
KEYED_MESSAGE = Types.ROW_NAMED(["k", "v"], [Types.STRING(), Types.STRING()])

# Every side output must have a consumer: in thread mode, yielding to an unconsumed tag stalls the operator.
DEAD_LETTERS = OutputTag("dead-letters", OUTPUT_RECORD)


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def output_row(topics, output: Output) -> Row:
    """The topic and key for each kind of output: records are keyed by the user they concern."""
    if isinstance(output, Decision):
        topic, key = topics.decisions, output.user_id
    elif isinstance(output, ReviewItem):
        topic, key = topics.review_queue, output.user_id
    elif isinstance(output, ParentAlert):
        topic, key = topics.parent_alerts, output.parent_id
    else:
        topic, key = topics.dead_letter, output.event_id or ""
    return Row(topic, key, output.model_dump_json())


class ValidateRecord(ProcessFunction):
    """Parses each raw record against its topic's schema; anything invalid becomes a dead letter."""

    def __init__(self, cfg: LifeguardConfig):
        self._cfg = cfg
        topics = cfg.kafka.topics
        self._schema_of_topic = {topics.chat: "chat", topics.uploads: "uploads", topics.sessions: "sessions"}

    def open(self, runtime_context: RuntimeContext):
        metrics = runtime_context.get_metrics_group()
        self._dead_letters = metrics.counter("dead_letters")
        # Session events are validated here; the child-safety feature job turns them into features.
        self._sessions = metrics.counter("session_events")

    def process_element(self, row, ctx):
        value: bytes = row["value"]
        source = SourceRef(row["topic"], row["partition"], row["offset"], ctx.timestamp())
        schema = self._schema_of_topic[source.topic]
        try:
            event = parse_event(schema, value, self._cfg.limits.max_record_bytes)
        except Rejected as rejected:
            self._dead_letters.inc()
            yield DEAD_LETTERS, output_row(self._cfg.kafka.topics, dead_letter(source, value, rejected, now_ms()))
            return
        record = Row(schema, event.user_id, source.topic, source.partition, source.offset, source.kafka_ts,
                     value.decode("utf-8"))
        if schema == "sessions":
            self._sessions.inc()
        else:
            yield record


class ScreenBatch(KeyedProcessFunction):
    """Buffers records per batch key and screens them together: at ``batch_size`` records or after
    ``batch_timeout_ms``, whichever comes first, so the model runs once per batch."""

    def __init__(self, cfg: LifeguardConfig):
        self._cfg = cfg

    def open(self, runtime_context: RuntimeContext):
        self._pending = runtime_context.get_list_state(ListStateDescriptor("pending", VALID_RECORD))
        self._count = runtime_context.get_state(ValueStateDescriptor("pending_count", Types.INT()))
        self._screener = Screener.from_config(self._cfg)
        self._profiles = ProfileLookup.from_config(self._cfg)
        metrics = runtime_context.get_metrics_group()
        self._batches = metrics.counter("batches")
        self._fallbacks = metrics.counter("profile_fallbacks")
        metrics.gauge("model_errors", lambda: self._screener.model_errors)
        metrics.gauge("feast_failures", lambda: self._profiles.failures)

    def process_element(self, record, ctx):
        self._pending.add(record)
        count = (self._count.value() or 0) + 1
        self._count.update(count)
        if count == 1:
            timers = ctx.timer_service()
            timers.register_processing_time_timer(timers.current_processing_time() + self._cfg.job.batch_timeout_ms)
        if count >= self._cfg.job.batch_size:
            yield from self._flush()

    def on_timer(self, timestamp, ctx):
        yield from self._flush()

    def _flush(self):
        records = list(self._pending.get() or [])
        self._pending.clear()
        self._count.clear()
        if not records:
            return
        self._batches.inc()
        items = self._screening_inputs(records)
        for output in self._screener.screen(items, now_ms()):
            yield output_row(self._cfg.kafka.topics, output)

    def _screening_inputs(self, records) -> list[ScreeningInput]:
        events = [parse_event(r["schema"], r["value"].encode("utf-8"), self._cfg.limits.max_record_bytes)
                  for r in records]
        users = [e.user_id for e in events] + [e.recipient_id for e in events if e.recipient_id]
        profiles = self._profiles.profiles(users)
        self._fallbacks.inc(sum(1 for p in profiles.values() if p.fallback_reason))
        return [ScreeningInput(event=e, source=SourceRef(r["topic"], r["partition"], r["offset"], r["kafka_ts"]),
                               raw=r["value"].encode("utf-8"), sender=profiles[e.user_id],
                               recipient=profiles[e.recipient_id] if e.recipient_id else None)
                for e, r in zip(events, records)]
