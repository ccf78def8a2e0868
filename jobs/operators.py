"""The moderation job's operators: thin adapters from Flink to the pure logic in udfs/ and features/.

They live in a module of their own (not the job's ``__main__``) so Flink pickles them by reference.
"""
from __future__ import annotations

import time

from pyflink.common import Row, Types
from pyflink.datastream import (KeyedBroadcastProcessFunction, KeyedProcessFunction, OutputTag, ProcessFunction,
                                RuntimeContext)
from pyflink.datastream.state import ListStateDescriptor, MapStateDescriptor, ValueStateDescriptor

from features.feast_store import ProfileLookup
from lifeguard.config import LifeguardConfig
from lifeguard.schemas import Decision, ParentAlert, ReviewItem
from udfs.control import (HASH_BANK_UPDATES, POLICY_UPDATES, apply_bank_update, apply_policy_update,
                          parse_control, restore, state_entry)
from udfs.grooming import (ConversationTurn, GroomingSettings, MessageBank, MessageSignals, PairState,
                           conversation_turn, is_minor_direct_message, load_bank, step)
from udfs.parse import Rejected, SourceRef, dead_letter, parse_event
from udfs.screening import Output, ScreeningInput, Screener
from udfs.sentence_encoder import SentenceEncoder

# A validated chat message or upload, kept in state as declared types (not pickled objects).
VALID_RECORD = Types.ROW_NAMED(
    ["schema", "user_id", "topic", "partition", "offset", "kafka_ts", "value"],
    [Types.STRING(), Types.STRING(), Types.STRING(), Types.INT(), Types.LONG(), Types.LONG(), Types.STRING()])
# What goes to an output topic.
OUTPUT_RECORD = Types.ROW_NAMED(["topic", "k", "v"], [Types.STRING(), Types.STRING(), Types.STRING()])
KEYED_MESSAGE = Types.ROW_NAMED(["k", "v"], [Types.STRING(), Types.STRING()])
# A well-formed policy or hash-bank update, with where it came from (for a dead letter if it cannot apply).
CONTROL_RECORD = Types.ROW_NAMED(
    ["schema", "topic", "partition", "offset", "kafka_ts", "value"],
    [Types.STRING(), Types.STRING(), Types.INT(), Types.LONG(), Types.LONG(), Types.STRING()])
# The control updates in force, as declared types so checkpoints survive code changes: "policy" -> the
# policy document (JSON), and one entry per bank flag and per banked hash (see udfs.control.state_entry).
CONTROL_STATE = MapStateDescriptor("control", Types.STRING(), Types.STRING())

# A direct message where one side is a minor, on its way from screening to the conversation-risk step:
# an OUTPUT_RECORD with this internal topic, the pair as key and a ConversationTurn (JSON) as value. The
# routing SQL splits these off; no sink has this topic, so none reaches Kafka.
CONVERSATION_TURNS = "__lifeguard_conversation_turns__"
# One message's signals in a pair's window, and the pair's own fields (None: not yet).
PAIR_MESSAGE = Types.ROW_NAMED(
    ["event_id", "ts", "from_contact", "contrast", "stage", "synthetic_match", "flags", "late_night"],
    [Types.STRING(), Types.LONG(), Types.BOOLEAN(), Types.DOUBLE(), Types.STRING(), Types.BOOLEAN(), Types.STRING(),
     Types.BOOLEAN()])
PAIR_FIELDS = Types.ROW_NAMED(["first_seen_ts", "last_review_ts", "last_alert_ts"],
                              [Types.LONG(), Types.LONG(), Types.LONG()])

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


class _Validate(ProcessFunction):
    """Parses each raw record against its topic's schema; anything invalid becomes a dead letter.
    Subclasses name their topics' schemas, how a record is parsed, and what a valid one becomes."""

    dead_letter_metric = "dead_letters"

    def __init__(self, cfg: LifeguardConfig):
        self._cfg = cfg
        self._schema_of_topic = self.schemas(cfg.kafka.topics)

    def open(self, runtime_context: RuntimeContext):
        self._metrics = runtime_context.get_metrics_group()
        self._dead_letters = self._metrics.counter(self.dead_letter_metric)

    def process_element(self, row, ctx):
        value: bytes = row["value"]
        source = SourceRef(row["topic"], row["partition"], row["offset"], ctx.timestamp())
        schema = self._schema_of_topic[source.topic]
        try:
            parsed = self.parse(schema, value, self._cfg.limits.max_record_bytes)
        except Rejected as rejected:
            self._dead_letters.inc()
            yield DEAD_LETTERS, output_row(self._cfg.kafka.topics, dead_letter(source, value, rejected, now_ms()))
            return
        yield from self.forward(schema, parsed, source, value.decode("utf-8"))


class ValidateRecord(_Validate):
    """Chat messages and uploads go on to screening; session events are validated and counted."""

    def schemas(self, topics) -> dict[str, str]:
        return {topics.chat: "chat", topics.uploads: "uploads", topics.sessions: "sessions"}

    parse = staticmethod(parse_event)

    def open(self, runtime_context: RuntimeContext):
        super().open(runtime_context)
        # Session events are validated here; the child-safety feature job turns them into features.
        self._sessions = self._metrics.counter("session_events")

    def forward(self, schema, event, source: SourceRef, value: str):
        if schema == "sessions":
            self._sessions.inc()
            return
        yield Row(schema, event.user_id, source.topic, source.partition, source.offset, source.kafka_ts, value)


class ValidateControl(_Validate):
    """Checks that each control update can apply (a valid policy document, a well-formed hash), so a bad
    one becomes a dead letter here, once, before the update is broadcast."""

    dead_letter_metric = "control_dead_letters"

    def schemas(self, topics) -> dict[str, str]:
        return {topics.policy_updates: POLICY_UPDATES, topics.hash_bank_updates: HASH_BANK_UPDATES}

    parse = staticmethod(parse_control)

    def forward(self, schema, update, source: SourceRef, value: str):
        yield Row(schema, source.topic, source.partition, source.offset, source.kafka_ts, value)


class ScreenBatch(KeyedBroadcastProcessFunction):
    """Buffers records per batch key and screens them together: at ``batch_size`` records or after
    ``batch_timeout_ms``, whichever comes first, so the model runs once per batch.

    The broadcast side carries policy and hash-bank updates: each is applied to the screener's plain
    Python copy (what every record reads) and recorded in the broadcast state (what a restore reads).

    Each direct message where one side is a minor also leaves as a conversation turn (``CONVERSATION_TURNS``)
    carrying its grooming-bank match: the sentence encoder runs once per batch, on those messages only."""

    def __init__(self, cfg: LifeguardConfig, grooming: GroomingSettings):
        self._cfg = cfg
        self._grooming = grooming

    def open(self, runtime_context: RuntimeContext):
        self._pending = runtime_context.get_list_state(ListStateDescriptor("pending", VALID_RECORD))
        self._count = runtime_context.get_state(ValueStateDescriptor("pending_count", Types.INT()))
        # Until a policy update arrives (or a restore brings one back), the policy file from config is in
        # force, and the banks are those of the banks file in config.
        self._screener = Screener.from_config(self._cfg)
        # PyFlink gives no access to broadcast state in open(): the copy is rebuilt from it on the first
        # element, timer or update after each (re)start (``_restore``).
        self._restored = False
        self._profiles = ProfileLookup.from_config(self._cfg)
        # A missing encoder or a malformed bank file stops the job here, with the file named.
        self._encoder = SentenceEncoder.load(prefer_gpu=self._cfg.models.prefer_gpu)
        self._bank = MessageBank(load_bank(self._cfg.path(p) for p in self._grooming.bank_files), self._encoder.embed)
        metrics = runtime_context.get_metrics_group()
        self._batches = metrics.counter("batches")
        self._turns = metrics.counter("conversation_turns")
        self._encoder_errors = metrics.counter("grooming_encoder_errors")
        self._fallbacks = metrics.counter("profile_fallbacks")
        self._control_applied = metrics.counter("control_updates_applied")
        self._control_rejected = metrics.counter("control_updates_rejected")
        metrics.gauge("model_errors", lambda: self._screener.model_errors)
        # The cascade's second-stage share is texts_escalated / texts_scored.
        metrics.gauge("texts_scored", lambda: self._screener.text_model.scored)
        metrics.gauge("texts_escalated", lambda: self._screener.text_model.escalated)
        metrics.gauge("feast_failures", lambda: self._profiles.failures)

    def _restore(self, ctx) -> None:
        """Once per (re)start: the updates in force before a failure come back from the broadcast state
        (empty on a fresh start). ``items()`` is the read that works on it in thread mode. A stored update
        that no longer applies here (its blocklist file gone) fails the task rather than quietly putting
        an older policy back in force."""
        if self._restored:
            return
        self._restored = True
        entries = list(ctx.get_broadcast_state(CONTROL_STATE).items())
        if entries:
            policy, banks = restore(self._screener.policy, self._screener.image_banks, entries)
            self._screener.set_policy(policy)
            self._screener.set_banks(banks)

    def process_broadcast_element(self, update, ctx):
        self._restore(ctx)
        value = update["value"].encode("utf-8")
        try:
            parsed = parse_control(update["schema"], value, self._cfg.limits.max_record_bytes)
            if update["schema"] == POLICY_UPDATES:
                self._screener.set_policy(apply_policy_update(self._screener.policy, parsed))
            else:
                apply_bank_update(self._screener.image_banks, parsed)
        except Rejected as rejected:
            # Valid on its own but not here (a policy version in force with other content, a blocklist
            # file this worker cannot read): a dead letter on the main output, where the broadcast side
            # may emit; every parallel instance that rejects it reports it (they see the same updates in
            # the same order, so at parallelism N expect N copies, alike but for created_ts).
            self._control_rejected.inc()
            source = SourceRef(update["topic"], update["partition"], update["offset"], update["kafka_ts"])
            yield output_row(self._cfg.kafka.topics, dead_letter(source, value, rejected, now_ms()))
            return
        ctx.get_broadcast_state(CONTROL_STATE).put(*state_entry(parsed))
        self._control_applied.inc()

    def process_element(self, record, ctx):
        self._restore(ctx)
        self._pending.add(record)
        count = (self._count.value() or 0) + 1
        self._count.update(count)
        if count == 1:
            timers = ctx.timer_service()
            timers.register_processing_time_timer(timers.current_processing_time() + self._cfg.job.batch_timeout_ms)
        if count >= self._cfg.job.batch_size:
            yield from self._flush()

    def on_timer(self, timestamp, ctx):
        # A timer restored from a checkpoint may fire before any element arrives.
        self._restore(ctx)
        yield from self._flush()

    def _flush(self):
        records = list(self._pending.get() or [])
        self._pending.clear()
        self._count.clear()
        if not records:
            return
        self._batches.inc()
        items = self._screening_inputs(records)
        outputs = self._screener.screen(items, now_ms())
        for output in outputs:
            yield output_row(self._cfg.kafka.topics, output)
        yield from self._conversation_turns(items, outputs)

    def _conversation_turns(self, items: list[ScreeningInput], outputs: list[Output]):
        decisions = {o.event_id: o for o in outputs if isinstance(o, Decision)}
        direct = [i for i in items if i.event.event_id in decisions
                  and is_minor_direct_message(i.event, i.sender, i.recipient)]
        if not direct:
            return
        try:
            matches = self._bank.match(self._encoder.embed([i.event.text[:self._cfg.limits.max_text_chars]
                                                            for i in direct]))
        except Exception:  # an encoder failure must not stop screening: the turns go on with their rules only
            self._encoder_errors.inc()
            matches = [None] * len(direct)
        self._turns.inc(len(direct))
        for item, match in zip(direct, matches):
            turn = conversation_turn(item.event, item.sender, item.recipient, decisions[item.event.event_id], match,
                                     self._screener.policy.alert_bands, self._grooming)
            yield Row(CONVERSATION_TURNS, turn.pair, turn.to_json())

    def _screening_inputs(self, records) -> list[ScreeningInput]:
        raws = [r["value"].encode("utf-8") for r in records]
        events = [parse_event(r["schema"], raw, self._cfg.limits.max_record_bytes) for r, raw in zip(records, raws)]
        users = [e.user_id for e in events] + [e.recipient_id for e in events if e.recipient_id]
        profiles = self._profiles.profiles(users)
        self._fallbacks.inc(sum(1 for p in profiles.values() if p.fallback_reason))
        return [ScreeningInput(event=e, source=SourceRef(r["topic"], r["partition"], r["offset"], r["kafka_ts"]),
                               raw=raw, sender=profiles[e.user_id],
                               recipient=profiles[e.recipient_id] if e.recipient_id else None)
                for e, r, raw in zip(events, records, raws)]


class ConversationRisk(KeyedProcessFunction):
    """Keyed by the (child, contact) pair: keeps the pair's recent messages' signals and emits a conversation
    review item and a grooming-risk parent alert when the pair risk crosses their thresholds (``udfs.grooming``
    decides, once per pair per cool-down). A pair with no message for ``idle_ms`` is forgotten."""

    def __init__(self, cfg: LifeguardConfig, grooming: GroomingSettings):
        self._cfg = cfg
        self._grooming = grooming

    def open(self, runtime_context: RuntimeContext):
        self._messages = runtime_context.get_list_state(ListStateDescriptor("pair_messages", PAIR_MESSAGE))
        self._fields = runtime_context.get_state(ValueStateDescriptor("pair_fields", PAIR_FIELDS))
        self._idle_timer = runtime_context.get_state(ValueStateDescriptor("pair_idle_timer", Types.LONG()))
        metrics = runtime_context.get_metrics_group()
        self._reviews = metrics.counter("conversation_reviews")
        self._alerts = metrics.counter("grooming_alerts")
        self._forgotten = metrics.counter("idle_pairs_cleared")

    def process_element(self, row, ctx):
        turn = ConversationTurn.from_json(row["v"])
        state, _, outputs = step(self._load(), turn, self._grooming, now_ms())
        self._save(state)
        timers = ctx.timer_service()
        if (previous := self._idle_timer.value()) is not None:
            timers.delete_processing_time_timer(previous)
        deadline = timers.current_processing_time() + self._grooming.idle_ms
        timers.register_processing_time_timer(deadline)
        self._idle_timer.update(deadline)
        for output in outputs:
            (self._reviews if isinstance(output, ReviewItem) else self._alerts).inc()
            yield output_row(self._cfg.kafka.topics, output)

    def on_timer(self, timestamp, ctx):
        if timestamp == self._idle_timer.value():
            self._messages.clear()
            self._fields.clear()
            self._idle_timer.clear()
            self._forgotten.inc()

    def _load(self) -> PairState | None:
        # Rows come back from state without their field names: read them by position.
        fields = self._fields.value()
        if fields is None:
            return None
        messages = []
        for event_id, ts, from_contact, contrast, stage, synthetic, flags, late_night in self._messages.get() or []:
            messages.append(MessageSignals(event_id, ts, from_contact, contrast, stage, synthetic,
                                           tuple(filter(None, flags.split(","))), late_night))
        first_seen_ts, last_review_ts, last_alert_ts = fields
        return PairState(first_seen_ts, last_review_ts, last_alert_ts, tuple(messages))

    def _save(self, state: PairState) -> None:
        self._fields.update(Row(state.first_seen_ts, state.last_review_ts, state.last_alert_ts))
        self._messages.update([Row(m.event_id, m.ts, m.from_contact, m.contrast, m.stage, m.synthetic_match,
                                   ",".join(m.flags), m.late_night) for m in state.messages])
