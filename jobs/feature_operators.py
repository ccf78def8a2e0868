"""The feature job's operators: thin adapters from Flink keyed state and event-time timers to the pure
logic in features/ (sessions, stranger_time, child_day, behaviour, alerts, feature_push).

Each keyed operator keeps its pure object's state as one JSON string per key (ValueState of STRING, a
declared type) or, for rooms, one JSON list per minute bucket (MapState LONG -> STRING). Outputs for
Kafka (dead letters, review items, parent alerts) leave on the ``OUTPUTS`` side output, which the job
always consumes (in thread mode an unconsumed side output stalls the operator).
"""
from __future__ import annotations

import json
from dataclasses import asdict

from pydantic import ValidationError
from pyflink.common import Row, Types
from pyflink.datastream import KeyedProcessFunction, RuntimeContext
from pyflink.datastream.state import MapStateDescriptor, ValueStateDescriptor

from features.alerts import AlertCandidate
from features.behaviour import HOUR_MS, WEEK_MS, UserActivity
from features.child_day import ChildDay
from features.feast_store import ProfileLookup, open_store
from features.feature_push import PUSH_VIEWS, FeaturePusher
from features.screen_time import local_day, local_day_end_ms, previous_local_day
from features.sessions import Presence, UserSessions, clock_ahead
from lifeguard.config import FeaturesConfig
from features.stranger_time import MINUTE_MS, is_child, minute_buckets, stranger_time
from jobs.metrics import CountersOf
from jobs.plumbing import DEAD_LETTERS, Validate, now_ms, output_row
from lifeguard.config import LifeguardConfig
from lifeguard.schemas import ChatMessage, Decision, SessionEvent
from udfs.parse import Rejected, SourceRef, dead_letter, explain, parse_event

DAY_MS = 24 * HOUR_MS

# A validated input: session event, chat message or decision, with its event time and where it came from.
FEATURE_INPUT = Types.ROW_NAMED(
    ["schema", "user_id", "ts", "topic", "partition", "offset", "kafka_ts", "value"],
    [Types.STRING(), Types.STRING(), Types.LONG(), Types.STRING(), Types.INT(), Types.LONG(), Types.LONG(),
     Types.STRING()])
# Between the feature operators: what happened (kind), to whom (key), when (event time), the details.
#   presence   key user   {"room", "start", "end"}        from sessions, to rooms and to the child's day
#   stranger   key child  {"minute", "stranger", "older"}  from rooms, to the child's day
#   dm_minute  key child  {"minute"}                      from activity, to the child's day
#   candidate  key child  AlertCandidate                  from activity (age mismatch), to the child's day
#   push:<view> key user  a feature row                   to the Feast pusher
FEATURE_EVENT = Types.ROW_NAMED(["kind", "key", "ts", "payload"],
                                [Types.STRING(), Types.STRING(), Types.LONG(), Types.STRING()])
OUTPUTS = DEAD_LETTERS  # Kafka-bound records: (topic, key, JSON)
ROOM_BUCKET = Types.ROW_NAMED(["room", "minute", "piece"], [Types.STRING(), Types.LONG(), Types.STRING()])


def named_row(row_type, *values) -> Row:
    """A Row that answers to its field names even where Flink hands it on without serialising it (a
    chained operator): a positional Row raises AttributeError('_fields') there."""
    row = Row(*values)
    row.set_field_names(row_type.get_field_names())
    return row


def parse_decision(value: bytes, max_bytes: int) -> Decision:
    """Decisions are Lifeguard's own JSON output: validated in JSON mode, where enums are their values."""
    if value is None or len(value) > max_bytes:
        raise Rejected("oversize", f"decision record over the {max_bytes}-byte limit")
    try:
        return Decision.model_validate_json(value)
    except ValidationError as exc:
        raise Rejected("invalid", explain(exc)) from None


def parse_feature_input(schema: str, value: bytes, max_bytes: int):
    return parse_decision(value, max_bytes) if schema == "decisions" else parse_event(schema, value, max_bytes)


def event_time(event) -> int:
    return event.event_ts if isinstance(event, Decision) else event.ts


class ValidateFeatureInput(Validate):
    """Sessions, chat and decisions; invalid records and event clocks far ahead become dead letters."""

    dead_letter_metric = "feature_dead_letters"
    parse = staticmethod(parse_feature_input)

    def __init__(self, cfg: LifeguardConfig, settings: FeaturesConfig):
        super().__init__(cfg)
        self._settings = settings

    def schemas(self, topics) -> dict[str, str]:
        return {topics.sessions: "sessions", topics.chat: "chat", topics.decisions: "decisions"}

    def forward(self, schema, event, source: SourceRef, value: str):
        ts = event_time(event)
        reason = clock_ahead(ts, source.kafka_ts, self._settings)
        if reason:
            self._dead_letters.inc()
            rejected = Rejected("unprocessable", reason, getattr(event, "event_id", None))
            yield OUTPUTS, output_row(self._cfg.kafka.topics, dead_letter(source, value.encode(), rejected, now_ms()))
            return
        yield named_row(FEATURE_INPUT, schema, event.user_id, ts, source.topic, source.partition, source.offset,
                        source.kafka_ts, value)


def feature_event(kind: str, key: str, ts: int, payload: dict) -> Row:
    return named_row(FEATURE_EVENT, kind, key, ts, json.dumps(payload))


def push_event(view: str, row) -> Row:
    return feature_event(f"push:{view}", row.user_id, row.event_ts, asdict(row))


class TrackSessions(KeyedProcessFunction):
    """Per user: session events -> presence pieces, in event time (``features.sessions``)."""

    def __init__(self, cfg: LifeguardConfig, settings: FeaturesConfig):
        self._cfg, self._settings = cfg, settings

    def open(self, runtime_context: RuntimeContext):
        self._state = runtime_context.get_state(ValueStateDescriptor("sessions", Types.STRING()))
        metrics = runtime_context.get_metrics_group()
        self._anomalies = {name: metrics.counter(f"session_{name}") for name in (
            "duplicate", "clock_ahead", "too_late", "implicit_login", "login_while_online", "leave_while_offline",
            "logout_while_offline", "leave_without_join", "heartbeat_in_unjoined_room", "timed_out")}

    def process_element(self, row, ctx):
        tracker = self._load(row["user_id"])
        event = SessionEvent.model_validate_json(row["value"])
        refused = tracker.offer(event, row["kafka_ts"], ctx.timer_service().current_watermark())
        if refused and refused != "duplicate":
            source = SourceRef(row["topic"], row["partition"], row["offset"], row["kafka_ts"])
            letter = dead_letter(source, row["value"].encode(), Rejected("unprocessable", refused, event.event_id),
                                 now_ms())
            yield OUTPUTS, output_row(self._cfg.kafka.topics, letter)
        yield from self._save(tracker, ctx, [])

    def on_timer(self, timestamp, ctx):
        tracker = self._load(ctx.get_current_key())
        yield from self._save(tracker, ctx, tracker.advance(timestamp))

    def _load(self, user_id: str) -> UserSessions:
        return UserSessions.from_json(user_id, self._settings, self._state.value())

    def _save(self, tracker: UserSessions, ctx, pieces: list[Presence]):
        for name, count in tracker.anomalies.items():
            self._anomalies[name].inc(count)
        tracker.anomalies.clear()
        if tracker.is_idle:
            self._state.clear()
        else:
            self._state.update(tracker.to_json())
            for at in tracker.timers():
                ctx.timer_service().register_event_time_timer(at)
        for piece in pieces:
            yield feature_event("presence", piece.user_id, piece.end_ms,
                                {"room": piece.room_id, "start": piece.start_ms, "end": piece.end_ms})


def room_buckets(row):
    """A room presence piece -> (room, minute, piece JSON) per minute it touches."""
    payload = json.loads(row["payload"])
    piece = Presence(row["key"], payload["room"], payload["start"], payload["end"])
    for minute, part in minute_buckets(piece):
        yield named_row(ROOM_BUCKET, piece.room_id, minute, json.dumps([part.user_id, part.start_ms, part.end_ms]))


class RoomCoPresence(KeyedProcessFunction):
    """Per room: everyone's presence per minute; once no more can come for a minute (the watermark is past
    it by a heartbeat timeout plus the lateness), each child's stranger time in it (``features.stranger_time``)."""

    def __init__(self, cfg: LifeguardConfig, settings: FeaturesConfig):
        self._cfg, self._settings = cfg, settings
        self._delay = MINUTE_MS + settings.heartbeat_timeout_ms + settings.allowed_lateness_ms

    def open(self, runtime_context: RuntimeContext):
        self._minutes = runtime_context.get_map_state(MapStateDescriptor("room_minutes", Types.LONG(), Types.STRING()))
        self._profiles = ProfileLookup.from_config(self._cfg)
        self._late = runtime_context.get_metrics_group().counter("room_pieces_too_late")
        self._done = runtime_context.get_state(ValueStateDescriptor("room_done_until", Types.LONG()))

    def process_element(self, row, ctx):
        minute = row["minute"]
        if minute < (self._done.value() or 0):
            self._late.inc()
            return
        pieces = json.loads(self._minutes.get(minute) or "[]")
        pieces.append(json.loads(row["piece"]))
        self._minutes.put(minute, json.dumps(pieces))
        ctx.timer_service().register_event_time_timer(minute + self._delay)

    def on_timer(self, timestamp, ctx):
        minute = timestamp - self._delay
        raw = self._minutes.get(minute)
        self._minutes.remove(minute)
        self._done.update(max(self._done.value() or 0, minute + MINUTE_MS))
        if not raw:
            return
        room = ctx.get_current_key()
        pieces = [Presence(user, room, start, end) for user, start, end in json.loads(raw)]
        profiles = self._profiles.profiles(p.user_id for p in pieces)
        for found in stranger_time(pieces, profiles):
            if found.stranger_ms:
                yield feature_event("stranger", found.child_id, minute,
                                    {"minute": minute, "stranger": found.stranger_ms, "older": found.older_stranger_ms})


class UserActivityFeatures(KeyedProcessFunction):
    """Per user: chat and decisions -> behaviour features, age signals, stranger conversation minutes."""

    def __init__(self, cfg: LifeguardConfig, settings: FeaturesConfig):
        self._cfg, self._settings = cfg, settings

    def open(self, runtime_context: RuntimeContext):
        self._state = runtime_context.get_state(ValueStateDescriptor("activity", Types.STRING()))
        self._profiles = ProfileLookup.from_config(self._cfg)
        self._reviews = runtime_context.get_metrics_group().counter("account_reviews")

    def process_element(self, row, ctx):
        activity = UserActivity.from_json(row["user_id"], self._settings, self._state.value())
        if row["schema"] == "decisions":
            activity.on_decision(Decision.model_validate_json(row["value"]))
        else:
            message = ChatMessage.model_validate_json(row["value"])
            profiles = self._profiles.profiles([message.user_id] + ([message.recipient_id] if message.is_direct else []))
            effects = activity.on_chat(message, profiles[message.user_id],
                                       profiles[message.recipient_id] if message.is_direct else None, now_ms())
            for item in effects.review_items:
                self._reviews.inc()
                yield OUTPUTS, output_row(self._cfg.kafka.topics, item)
            for candidate in effects.alert_candidates:
                yield feature_event("candidate", candidate.child_id, candidate.event_ts, asdict(candidate))
            for child, minute in effects.conversation_minutes:
                yield feature_event("dm_minute", child, minute, {"minute": minute})
        self._state.update(activity.to_json())
        # Hourly cleanup timers: a user quiet for a week leaves no state behind.
        expiry = activity.latest_ts - activity.latest_ts % HOUR_MS + WEEK_MS + HOUR_MS
        ctx.timer_service().register_event_time_timer(expiry)
        yield push_event("user_behaviour", activity.row())

    def on_timer(self, timestamp, ctx):
        activity = UserActivity.from_json(ctx.get_current_key(), self._settings, self._state.value())
        if activity.latest_ts + WEEK_MS + HOUR_MS <= timestamp:
            self._state.clear()


class ChildDayFeatures(KeyedProcessFunction):
    """Per child: screen time, stranger time and conversation minutes per local day, and parent alerts
    (``features.child_day``, ``features.alerts``)."""

    def __init__(self, cfg: LifeguardConfig, settings: FeaturesConfig):
        self._cfg, self._settings = cfg, settings

    def open(self, runtime_context: RuntimeContext):
        self._state = runtime_context.get_state(ValueStateDescriptor("child_day", Types.STRING()))
        self._profiles = ProfileLookup.from_config(self._cfg)
        metrics = runtime_context.get_metrics_group()
        self._alerts = metrics.counter("parent_alerts")
        self._no_parent = metrics.counter("alerts_without_parent")
        self._suppressed = metrics.counter("alerts_deduplicated")
        self._dropped = metrics.counter("child_day_updates_too_late")

    def process_element(self, row, ctx):
        child_id = row["key"]
        profile = self._profiles.profiles([child_id])[child_id]
        if not is_child(profile):
            return
        day = ChildDay.from_json(child_id, self._settings, self._state.value())
        payload = json.loads(row["payload"])
        kind = row["kind"]
        if kind == "presence":
            candidates = day.add_presence(payload["start"], payload["end"], profile)
        elif kind == "stranger":
            candidates = day.add_stranger_time(payload["minute"], payload["stranger"], payload["older"], profile)
        elif kind == "dm_minute":
            candidates = day.add_conversation_minute(payload["minute"], profile)
        else:
            candidates = [AlertCandidate(**{**payload, "reasons": tuple(payload["reasons"])})]
        yield from self._admit(day, candidates, profile)
        day.gate.forget_before(row["ts"])
        self._state.update(day.to_json())
        timers = ctx.timer_service()
        # Digest at the end of the child's local day; state dropped two days after the last update.
        timers.register_event_time_timer(local_day_end_ms(local_day(row["ts"], profile.timezone), profile.timezone))
        timers.register_event_time_timer(row["ts"] - row["ts"] % HOUR_MS + 2 * DAY_MS + HOUR_MS)
        for totals in day.totals():  # the pusher keeps the latest row per child and day
            yield push_event("child_daily", totals)

    def on_timer(self, timestamp, ctx):
        child_id = ctx.get_current_key()
        profile = self._profiles.profiles([child_id])[child_id]
        day = ChildDay.from_json(child_id, self._settings, self._state.value())
        if day.gate.digest:
            ended = previous_local_day(timestamp, profile.timezone)  # a cleanup timer may fire mid-day
            for alert in day.gate.flush_digest(profile, ended, now_ms()):
                self._alerts.inc()
                yield OUTPUTS, output_row(self._cfg.kafka.topics, alert)
        latest = max((t.event_ts for t in day.totals()), default=0)
        if latest + 2 * DAY_MS <= timestamp and not day.gate.digest:
            self._state.clear()
        else:
            self._state.update(day.to_json())

    def _admit(self, day: ChildDay, candidates: list[AlertCandidate], profile):
        no_parent, suppressed = day.gate.no_parent, day.gate.suppressed
        for candidate in candidates:
            for alert in day.gate.admit(candidate, profile, now_ms()):
                self._alerts.inc()
                yield OUTPUTS, output_row(self._cfg.kafka.topics, alert)
        self._no_parent.inc(day.gate.no_parent - no_parent)
        self._suppressed.inc(day.gate.suppressed - suppressed)
        self._dropped.inc(day.dropped_late)


class PushFeatures(KeyedProcessFunction):
    """One instance for the whole job (one writer per parquet file): rows batched into Feast pushes,
    flushed at ``push_batch_rows`` or on a processing-time timer ``push_interval_ms`` after the first.
    The rows waiting are mirrored in keyed state (the one key), so a restart from a checkpoint pushes them."""

    def __init__(self, cfg: LifeguardConfig, settings: FeaturesConfig):
        self._cfg, self._settings = cfg, settings

    def open(self, runtime_context: RuntimeContext):
        self._pusher = FeaturePusher(open_store(self._cfg), self._settings.push_batch_rows,
                                     self._settings.push_interval_ms)
        self._pending = runtime_context.get_map_state(MapStateDescriptor("pending_rows", Types.STRING(), Types.STRING()))
        self._restored = False
        self._counts = CountersOf(runtime_context.get_metrics_group(), {
            "feast_pushes": lambda: self._pusher.pushes, "feast_rows_pushed": lambda: self._pusher.rows_pushed,
            "feast_push_failures": lambda: self._pusher.failures})

    def process_element(self, row, ctx):
        self._restore(ctx, timer_firing=False)
        view = PUSH_VIEWS[row["kind"].removeprefix("push:")]
        waiting = self._pusher.waiting
        key = self._pusher.add(view.view, view.row_type(**json.loads(row["payload"])))
        self._pending.put_all(self._pusher.pending_entries([key]))
        if waiting == 0:
            self._flush_later(ctx, ctx.timer_service().current_processing_time())
        if self._pusher.due():
            self._flush()
        yield from ()

    def on_timer(self, timestamp, ctx):
        self._restore(ctx, timer_firing=True)
        if self._pusher.waiting:
            self._flush()
        if self._pusher.waiting:  # a failed push: try again later
            self._flush_later(ctx, timestamp)
        yield from ()

    def _flush_later(self, ctx, now_ms: int) -> None:
        ctx.timer_service().register_processing_time_timer(now_ms + self._settings.push_interval_ms)

    def _flush(self) -> None:
        """Pushes what waits; the rows pushed (or dropped past the bound) leave the state too."""
        waiting = self._pusher.pending_keys()
        self._pusher.flush()
        self._counts.update()
        for key in waiting - self._pusher.pending_keys():
            self._pending.remove(key)

    def _restore(self, ctx, timer_firing: bool) -> None:
        """On the first element or timer after a start: the rows the last checkpoint held go back in the
        queue, with a timer to push them (unless a timer is firing now: it pushes them, and retries)."""
        if self._restored:
            return
        self._restored = True
        entries = dict(self._pending.items())
        if entries:
            self._pusher.restore(entries.values())
            if not timer_firing:
                self._flush_later(ctx, ctx.timer_service().current_processing_time())

