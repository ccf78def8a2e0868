"""What every job's operators share: the record types that go to Kafka, the dead-letter side output, and
the validating first step (each raw record parsed against its topic's schema; anything invalid becomes a
dead letter)."""
from __future__ import annotations

import time

from pyflink.common import Row, Types
from pyflink.datastream import OutputTag, ProcessFunction, RuntimeContext

from jobs.metrics import CountersByLabel
from lifeguard.config import LifeguardConfig
from lifeguard.schemas import Decision, ParentAlert, ReviewItem
from udfs.parse import Rejected, SourceRef, dead_letter
from udfs.screening import Output

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


class Validate(ProcessFunction):
    """Parses each raw record against its topic's schema; anything invalid becomes a dead letter.
    Subclasses name their topics' schemas, how a record is parsed, and what a valid one becomes."""

    dead_letter_metric = "dead_letters"

    def __init__(self, cfg: LifeguardConfig):
        self._cfg = cfg
        self._schema_of_topic = self.schemas(cfg.kafka.topics)

    def open(self, runtime_context: RuntimeContext):
        self._metrics = runtime_context.get_metrics_group()
        self._dead_letters = self._metrics.counter(self.dead_letter_metric)
        self._dead_letters_by_kind = CountersByLabel(self._metrics, "error_kind", self.dead_letter_metric)

    def process_element(self, row, ctx):
        value: bytes = row["value"]
        source = SourceRef(row["topic"], row["partition"], row["offset"], ctx.timestamp())
        schema = self._schema_of_topic[source.topic]
        try:
            parsed = self.parse(schema, value, self._cfg.limits.max_record_bytes)
        except Rejected as rejected:
            self._dead_letters.inc()
            self._dead_letters_by_kind.inc(rejected.error_kind)
            yield DEAD_LETTERS, output_row(self._cfg.kafka.topics, dead_letter(source, value, rejected, now_ms()))
            return
        yield from self.forward(schema, parsed, source, value.decode("utf-8"))
