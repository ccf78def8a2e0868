"""The moderation job's operators: thin adapters from Flink to the pure logic in udfs/ and features/.

They live in a module of their own (not the job's ``__main__``) so Flink pickles them by reference.
"""
from __future__ import annotations

from pyflink.common import Row, Types
from pyflink.datastream import KeyedBroadcastProcessFunction, KeyedProcessFunction, RuntimeContext
from pyflink.datastream.state import ListStateDescriptor, MapStateDescriptor, ValueStateDescriptor

from features.feast_store import ProfileLookup
from jobs.metrics import CountersByLabel, CountersOf, Histogram
from jobs.plumbing import Validate, now_ms, output_row
from lifeguard.config import LifeguardConfig
from lifeguard.schemas import DeadLetter, Decision, ReviewItem
from udfs.control import (HASH_BANK_UPDATES, POLICY_UPDATES, apply_bank_update, apply_policy_update,
                          parse_control, restore, state_entry)
from udfs.grooming.pairs import PairState, add_meeting, step
from udfs.grooming.rooms import RoomMeeting, RoomState, room_meetings, speakers_from_json, speakers_to_json
from udfs.grooming.settings import GroomingSettings
from udfs.grooming.turns import ConversationTurn, MessageSignals
from udfs.parse import Rejected, SourceRef, dead_letter, parse_event
from udfs.screening import ScreeningInput, Screener

# A validated chat message or upload, kept in state as declared types (not pickled objects).
VALID_RECORD = Types.ROW_NAMED(
    ["schema", "user_id", "topic", "partition", "offset", "kafka_ts", "value"],
    [Types.STRING(), Types.STRING(), Types.STRING(), Types.INT(), Types.LONG(), Types.LONG(), Types.STRING()])
# A well-formed policy or hash-bank update, with where it came from (for a dead letter if it cannot apply).
CONTROL_RECORD = Types.ROW_NAMED(
    ["schema", "topic", "partition", "offset", "kafka_ts", "value"],
    [Types.STRING(), Types.STRING(), Types.INT(), Types.LONG(), Types.LONG(), Types.STRING()])
# The control updates in force, as declared types so checkpoints survive code changes: "policy" -> the
# policy document (JSON), and one entry per bank flag and per banked hash (see udfs.control.state_entry).
CONTROL_STATE = MapStateDescriptor("control", Types.STRING(), Types.STRING())

# A direct message where one side is a minor, on its way from screening to the conversation-risk step:
# an OUTPUT_RECORD with this internal topic, the pair as key and a ConversationTurn (JSON) as value. The
# routing SQL splits these off; no sink has this topic, so none reaches Kafka. Not a side output: in thread
# mode, PyFlink 2.3 routes what a KeyedBroadcastProcessFunction yields from on_timer (where ScreenBatch
# flushes its batches) without its side-output step (fn_execution/datastream/embedded/operations.py,
# KEYED_CO_BROADCAST_PROCESS), and a (tag, row) tuple there fails the task.
CONVERSATION_TURNS = "__lifeguard_conversation_turns__"
# A room's chat senders in one screened batch (key: the room, value: a JSON list of RoomSpeaker), on their way
# to the room-meetings step, and the meetings it finds (key: the pair), on theirs to the conversation-risk step.
ROOM_SPEAKERS = "__lifeguard_room_speakers__"
ROOM_MEETINGS = "__lifeguard_room_meetings__"
# One message's signals in a pair's window, and the pair's own fields (None: not yet).
PAIR_MESSAGE = Types.ROW_NAMED(
    ["event_id", "ts", "from_contact", "contrast", "stage", "synthetic_match", "flags", "late_night"],
    [Types.STRING(), Types.LONG(), Types.BOOLEAN(), Types.DOUBLE(), Types.STRING(), Types.BOOLEAN(), Types.STRING(),
     Types.BOOLEAN()])
PAIR_FIELDS = Types.ROW_NAMED(["first_seen_ts", "last_review_ts", "last_alert_ts"],
                              [Types.LONG(), Types.LONG(), Types.LONG()])
# The pair's room meeting, in state of its own so that a checkpoint taken before meetings existed restores.
PAIR_MEETING = Types.ROW_NAMED(["met_room", "met_ts"], [Types.STRING(), Types.LONG()])

# The text model's time per batch, in milliseconds: the histogram's bucket bounds.
MODEL_MS_BUCKETS = (5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000)

class ValidateRecord(Validate):
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


class ValidateControl(Validate):
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
    carrying its grooming-bank match, from the embedding the text model's second stage made for it."""

    def __init__(self, cfg: LifeguardConfig):
        self._cfg = cfg

    def open(self, runtime_context: RuntimeContext):
        self._pending = runtime_context.get_list_state(ListStateDescriptor("pending", VALID_RECORD))
        self._count = runtime_context.get_state(ValueStateDescriptor("pending_count", Types.INT()))
        # Until a policy update arrives (or a restore brings one back), the policy file from config is in
        # force, and the banks are those of the banks file in config. A missing model or a malformed grooming
        # bank file stops the job here, with the file named.
        self._screener = Screener.from_config(self._cfg)
        # PyFlink gives no access to broadcast state in open(): the copy is rebuilt from it on the first
        # element, timer or update after each (re)start (``_restore``).
        self._restored = False
        self._profiles = ProfileLookup.from_config(self._cfg)
        metrics = runtime_context.get_metrics_group()
        self._batches = metrics.counter("batches")
        self._turns = metrics.counter("conversation_turns")
        self._fallbacks = metrics.counter("profile_fallbacks")
        self._control_applied = metrics.counter("control_updates_applied")
        self._control_rejected = metrics.counter("control_updates_rejected")
        # The cascade's second-stage share is texts_escalated / texts_scored; texts_embedded counts every
        # message through stage 2, for its scores or only for the grooming bank's embedding (the encoder's load).
        self._counts = CountersOf(metrics, {
            "model_errors": lambda: self._screener.model_errors,
            "contact_blocks": lambda: self._screener.contact_blocks,
            "texts_scored": lambda: self._screener.text_model.scored,
            "texts_escalated": lambda: self._screener.text_model.escalated,
            "texts_embedded": lambda: self._screener.text_model.embedded,
            "score_cache_lookups": lambda: self._screener.scores.lookups,
            "score_cache_hits": lambda: self._screener.scores.hits,
            "feast_failures": lambda: self._profiles.failures})
        self._model_ms = Histogram(metrics, "model_batch_ms", MODEL_MS_BUCKETS)
        self._decisions = CountersByLabel(metrics, "action", "decisions")
        self._acted_by = CountersByLabel(metrics, "tier", "acted_by_tier")
        self._screening_dead_letters = CountersByLabel(metrics, "error_kind", "dead_letters")

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
                self._screener.set_policy(apply_policy_update(self._screener.policy, parsed, self._cfg.control,
                                                              self._screener.recent_scores))
            else:
                apply_bank_update(self._screener.image_banks, parsed, self._cfg.control.max_bank_hashes,
                                  self._screener.policy.images)
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
        screened = self._screener.screen(items, now_ms())
        self._model_ms.observe(self._screener.last_model_ms)
        self._counts.update()
        for output in screened.outputs:
            if isinstance(output, Decision):
                self._decisions.inc(output.action.value)
                for tier in screened.verdicts[output.event_id].deciding_tiers:
                    self._acted_by.inc(tier)
            elif isinstance(output, DeadLetter):
                self._screening_dead_letters.inc(output.error_kind)
            yield output_row(self._cfg.kafka.topics, output)
        self._turns.inc(len(screened.turns))
        for turn in screened.turns:
            yield Row(CONVERSATION_TURNS, turn.pair, turn.to_json())
        for room_id, speakers in screened.room_speakers.items():
            yield Row(ROOM_SPEAKERS, room_id, speakers_to_json(speakers))

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


class RoomMeetings(KeyedProcessFunction):
    """Keyed by room: keeps the room's recent speakers and sends each meeting of a child and a much older
    user to their pair (``udfs.grooming.rooms.room_meetings``). A room quiet for the meeting window is forgotten."""

    def __init__(self, grooming: GroomingSettings):
        self._grooming = grooming

    def open(self, runtime_context: RuntimeContext):
        self._room = runtime_context.get_state(ValueStateDescriptor("room_speakers", Types.STRING()))
        self._idle_timer = runtime_context.get_state(ValueStateDescriptor("room_idle_timer", Types.LONG()))
        self._meetings = runtime_context.get_metrics_group().counter("room_meetings")

    def process_element(self, row, ctx):
        stored = self._room.value()
        state, meetings = room_meetings(stored and RoomState.from_json(stored), row["k"], speakers_from_json(row["v"]),
                                        self._grooming)
        self._room.update(state.to_json())
        reset_idle_timer(ctx, self._idle_timer, self._grooming.configured.room_meeting_window_ms)
        self._meetings.inc(len(meetings))
        for meeting in meetings:
            yield Row(topic=ROOM_MEETINGS, k=meeting.pair, v=meeting.to_json())

    def on_timer(self, timestamp, ctx):
        if timestamp == self._idle_timer.value():
            self._room.clear()
            self._idle_timer.clear()


class ConversationRisk(KeyedProcessFunction):
    """Keyed by the (child, contact) pair: keeps the pair's recent messages' signals and room meeting, and
    emits a conversation review item and a grooming-risk parent alert when the pair risk crosses their
    thresholds (``udfs.grooming`` decides, once per pair per cool-down). A pair with no message for
    ``idle_ms`` is forgotten, and one that has only met in a room after ``room_move_ms``."""

    def __init__(self, cfg: LifeguardConfig, grooming: GroomingSettings):
        self._cfg = cfg
        self._grooming = grooming

    def open(self, runtime_context: RuntimeContext):
        self._messages = runtime_context.get_list_state(ListStateDescriptor("pair_messages", PAIR_MESSAGE))
        self._fields = runtime_context.get_state(ValueStateDescriptor("pair_fields", PAIR_FIELDS))
        self._meeting = runtime_context.get_state(ValueStateDescriptor("pair_meeting", PAIR_MEETING))
        self._idle_timer = runtime_context.get_state(ValueStateDescriptor("pair_idle_timer", Types.LONG()))
        metrics = runtime_context.get_metrics_group()
        self._reviews = metrics.counter("conversation_reviews")
        self._alerts = metrics.counter("grooming_alerts")
        self._forgotten = metrics.counter("idle_pairs_cleared")

    def process_element(self, row, ctx):
        if row["topic"] == ROOM_MEETINGS:
            state = add_meeting(self._load(), RoomMeeting.from_json(row["v"]))
            self._save(state)
            # A pair that has only met is kept only while a first direct message would still be a move.
            written = state.first_seen_ts is not None
            reset_idle_timer(ctx, self._idle_timer, self._grooming.configured.idle_ms if written else self._grooming.configured.room_move_ms)
            return
        reset_idle_timer(ctx, self._idle_timer, self._grooming.configured.idle_ms)
        turn = ConversationTurn.from_json(row["v"])
        state, _, outputs = step(self._load(), turn, self._grooming, now_ms())
        self._save(state)
        for output in outputs:
            (self._reviews if isinstance(output, ReviewItem) else self._alerts).inc()
            yield output_row(self._cfg.kafka.topics, output)

    def on_timer(self, timestamp, ctx):
        if timestamp == self._idle_timer.value():
            self._messages.clear()
            self._fields.clear()
            self._meeting.clear()
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
        met_room, met_ts = self._meeting.value() or (None, None)
        return PairState(first_seen_ts, last_review_ts, last_alert_ts, tuple(messages), met_room, met_ts)

    def _save(self, state: PairState) -> None:
        self._fields.update(Row(state.first_seen_ts, state.last_review_ts, state.last_alert_ts))
        if state.met_ts is not None:
            self._meeting.update(Row(state.met_room, state.met_ts))
        self._messages.update([Row(m.event_id, m.ts, m.from_contact, m.contrast, m.stage, m.synthetic_match,
                                   ",".join(m.flags), m.late_night) for m in state.messages])


def reset_idle_timer(ctx, timer_state, idle_ms: int) -> None:
    """Moves the key's one idle timer (processing time) to ``idle_ms`` from now."""
    timers = ctx.timer_service()
    if (previous := timer_state.value()) is not None:
        timers.delete_processing_time_timer(previous)
    deadline = timers.current_processing_time() + idle_ms
    timers.register_processing_time_timer(deadline)
    timer_state.update(deadline)
