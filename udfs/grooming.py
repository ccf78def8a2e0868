"""Conversation-level grooming detection: per (child, contact) pair, a bounded window of recent direct
messages' signals, aggregated into a pair risk that can cross the review or alert threshold when no single
message is blocked.

Grooming shows as a pattern over many messages (O'Connell 2003; Winters & Jeglic 2017): friendship
forming, relationship forming, risk assessment ("are your parents around?"), exclusivity and secrecy,
isolation (another app, meeting) and a sexual stage. Each message gets:

- a contrastive bank score, as Roblox Sentinel does: the message embedding's highest cosine similarity to
  a bank of known grooming messages minus its highest similarity to a bank of benign ones, and the
  grooming stage of the nearest grooming example;
- the rules the Screener's decision already reports (``rule:<id>`` and ``model:<category>`` reasons:
  off-platform lures, personal information, secrecy and photo requests), so there is no second rule
  engine;
- whether it was sent late at night in the child's time zone (UTC unless the profile gives one).

The pair adds context: age gap, not friends, how recently the pair first talked, and a move from a public
room to direct messages: per room, each recent speaker's last message is kept (``room_meetings``), and a
child and a much older user writing there within ``room_meeting_window_ms`` of each other "meet"; the
meeting goes to their pair, and a first direct message within ``room_move_ms`` after it is the move.

Score (all parts in [0, 1]; weights in ``GroomingSettings``):

    evidence    = 1 - prod(1 - message_weight * e_i)  over the contact's messages in the window, where e_i
                  is the strongest of the message's bank score and rule/model signals (noisy-OR: many
                  mild messages add up, one strong message alone does not decide)
    progression = min(1, distinct grooming stages seen / stages_for_full_progression)
    content     = content_weight * evidence + (1 - content_weight) * progression
    context     = min(1, age_gap_weight * age_gap + stranger_weight * not_friends + new_contact_weight * new
                  + room_move_weight * moved_from_room + late_night_weight * share of the contact's messages
                  sent late at night)
    risk        = content * (context_floor + (1 - context_floor) * context)

A same-age friend conversation by day has context 0, so its risk stays under ``context_floor`` (0.35), and
at night under 0.42: below the review threshold whatever its words (single harmful messages between
friends are the Screener's job). A new contact and a move from a room count only for someone not on the
child's friend list.

Nothing here imports pyflink; ``jobs.operators`` holds the pair state in Flink state and calls these.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Iterable, Sequence
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import numpy as np

from lifeguard.profiles import UserProfile
from lifeguard.config import GroomingConfig
from lifeguard.schemas import AgeBand, ChatMessage, ParentAlert, ReviewItem
from udfs.policy import Signal
from udfs.redact import redact

DAY_MS = 86_400_000
HOUR_MS = 3_600_000

# Stages after O'Connell (2003), as the bank labels them, and how a reason names them.
STAGES: dict[str, str] = {
    "friendship_forming": "friendship forming (flattery, help, gifts)",
    "relationship_forming": "relationship forming (intimacy, 'you are mature')",
    "risk_assessment": "risk assessment (are parents around, who reads the chat)",
    "exclusivity": "exclusivity and secrecy",
    "isolation": "isolation (another app, phone number, meeting, turning the child from others)",
    "sexual": "sexual stage (photos, body, camera)",
}
GROOMING, BENIGN = "grooming", "benign"


@dataclass(frozen=True)
class RuleSignal:
    """What a Screener reason (``rule:<id>`` or ``model:<category>``) means for a conversation."""

    name: str
    words: str
    strength: float  # the message's evidence e_i when this signal is present


# Rule ids of flink-conf/policy.yaml and model categories that bear on grooming.
DEFAULT_RULE_SIGNALS: dict[str, RuleSignal] = {
    "rule:off_platform_lure": RuleSignal("off_platform", "asks to move to another app or for a phone number", 0.7),
    "rule:personal_information": RuleSignal("personal_info", "asks where the child lives or studies", 0.6),
    "rule:personal_information_shared": RuleSignal("personal_info", "shares where someone lives or studies", 0.6),
    "rule:secrecy_and_photos": RuleSignal("secrecy_or_photos", "asks for secrecy or for photos", 0.8),
    "rule:explicit_requests_to_minors": RuleSignal("explicit_request", "makes an explicit sexual request", 1.0),
    "model:sexual_minors": RuleSignal("sexual_minors_model", "the text model flags sexual content involving minors",
                                      0.5),
    "model:sexual": RuleSignal("sexual_model", "the text model flags sexual content", 0.4),
    "model:pii": RuleSignal("pii_model", "the text model flags a request for personal information or another app",
                            0.5),
}


class JsonRecord:
    """A frozen dataclass that travels between operators, and lives in their state, as JSON."""

    def to_json(self) -> str:
        return json.dumps(asdict(self))


@dataclass(frozen=True)
class GroomingSettings:
    """Conversation-risk settings: the configured ones, and the score's own (not settings: chosen by hand).
    Paths are relative to the project root."""

    # What operators configure: the bank, windows and thresholds (defaults and meanings there).
    configured: GroomingConfig = GroomingConfig()
    # Bank score (grooming max-sim minus benign max-sim) mapped to e_i: 0 at or below floor, 1 at full.
    contrast_floor: float = 0.10
    contrast_full: float = 0.35
    # The score's weights, as the module docstring combines them. Chosen by hand so that a handful of mild
    # messages from an adult stranger cross review and no same-age friends' conversation can; not fitted
    # (there is no real data to fit them on).
    message_weight: float = 0.3
    stages_for_full_progression: int = 4
    content_weight: float = 0.65
    age_gap_weight: float = 0.45
    stranger_weight: float = 0.30
    new_contact_weight: float = 0.15
    room_move_weight: float = 0.15
    late_night_weight: float = 0.10
    context_floor: float = 0.35
    # A pair first seen this recently is a new contact.
    new_contact_ms: int = 3 * DAY_MS
    rule_signals: dict[str, RuleSignal] = field(default_factory=lambda: dict(DEFAULT_RULE_SIGNALS))
    excerpt_chars: int = 120

    @classmethod
    def from_config(cls, section: GroomingConfig) -> "GroomingSettings":
        return cls(configured=section)


# ---- the bank -------------------------------------------------------------------------------------

@dataclass(frozen=True)
class BankExample:
    id: str
    label: str  # "grooming" or "benign"
    stage: str  # a key of STAGES for grooming; free text (the kind of chat) for benign
    text: str
    synthetic: bool
    source: str


def load_bank(paths: Iterable[Path]) -> list[BankExample]:
    """Every example of the bank files, in order. A file of a platform's confirmed cases uses the same
    JSON lines; a malformed line raises ``ValueError`` naming the file and line (the job must not start
    with a bank it half read)."""
    examples = []
    for path in paths:
        for number, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), 1):
            if not line.strip():
                continue
            try:
                raw = json.loads(line)
                example = BankExample(id=str(raw["id"]), label=raw["label"], stage=raw["stage"], text=raw["text"],
                                      synthetic=bool(raw["synthetic"]), source=raw.get("source", ""))
            except (ValueError, KeyError, TypeError) as exc:
                raise ValueError(f"{path}:{number}: not a bank example: {exc}") from None
            if example.label not in (GROOMING, BENIGN) or (example.label == GROOMING and example.stage not in STAGES):
                raise ValueError(f"{path}:{number}: label must be grooming (stage one of {sorted(STAGES)}) or benign")
            examples.append(example)
    return examples


@dataclass(frozen=True)
class BankMatch:
    contrast: float  # max cosine to grooming examples minus max cosine to benign ones
    nearest: BankExample  # the most similar grooming example


class MessageBank:
    """The bank's embeddings, computed once; ``match`` compares a batch of message embeddings with all
    of them in two matrix products (a few hundred examples: brute force is the fast path)."""

    def __init__(self, examples: Sequence[BankExample], embed: Callable[[Sequence[str]], np.ndarray]):
        self.grooming = [e for e in examples if e.label == GROOMING]
        benign = [e for e in examples if e.label == BENIGN]
        if not self.grooming or not benign:
            raise ValueError("the grooming bank needs both grooming and benign examples")
        self._grooming_vectors = embed([e.text for e in self.grooming])
        self._benign_vectors = embed([e.text for e in benign])

    def match(self, embeddings: np.ndarray) -> list[BankMatch]:
        """One match per row of ``embeddings`` (L2-normalised, as the bank's)."""
        to_grooming = embeddings @ self._grooming_vectors.T
        to_benign = embeddings @ self._benign_vectors.T
        nearest = to_grooming.argmax(axis=1)
        contrast = to_grooming.max(axis=1) - to_benign.max(axis=1)
        return [BankMatch(float(c), self.grooming[int(i)]) for c, i in zip(contrast, nearest)]


# ---- one message: the conversation turn -----------------------------------------------------------

@dataclass(frozen=True)
class MessageSignals:
    """What the pair state keeps of one message (never its text)."""

    event_id: str
    ts: int
    from_contact: bool
    contrast: float
    stage: str  # the nearest grooming example's stage, "" when the bank score is under the floor
    synthetic_match: bool  # the nearest grooming example is a synthetic one
    flags: tuple[str, ...]  # keys of rule_signals present in the decision's reasons
    late_night: bool

    def evidence(self, settings: GroomingSettings) -> float:
        """e_i: the strongest of the bank score (scaled to [0, 1]) and the rule/model signals."""
        span = settings.contrast_full - settings.contrast_floor
        bank = min(1.0, max(0.0, (self.contrast - settings.contrast_floor) / span))
        rules = (settings.rule_signals[f].strength for f in self.flags if f in settings.rule_signals)
        return max(bank, *rules, 0.0)


@dataclass(frozen=True)
class ConversationTurn(JsonRecord):
    """A direct message where one side is a minor, with its pair's context: the record the screening
    step sends, keyed by ``pair``, to the conversation-risk step."""

    pair: str
    child_id: str
    contact_id: str
    child_band: AgeBand
    contact_band: AgeBand | None  # None: the contact's age is unknown
    friends: bool
    parent_to_alert: str | None  # the child's parent, when the policy alerts parents for the child's band
    timezone: str
    message: MessageSignals
    excerpt: str

    @classmethod
    def from_json(cls, text: str) -> "ConversationTurn":
        raw = json.loads(text)
        message = raw.pop("message")
        return cls(**{**raw, "child_band": AgeBand(raw["child_band"]),
                      "contact_band": raw["contact_band"] and AgeBand(raw["contact_band"])},
                   message=MessageSignals(**{**message, "flags": tuple(message["flags"])}))


def is_minor_direct_message(event, sender: UserProfile, recipient: UserProfile | None) -> bool:
    return (isinstance(event, ChatMessage) and event.is_direct and recipient is not None
            and (sender.effective_age_band.is_minor or recipient.effective_age_band.is_minor))


def pair_key(a: str, b: str) -> str:
    """One key for both directions of a conversation."""
    return json.dumps(sorted((a, b)))


def _band_index(band: AgeBand) -> int:
    return list(AgeBand).index(band)


def is_late_night(ts: int, tz_name: str, hours: tuple[int, int]) -> bool:
    try:
        zone = ZoneInfo(tz_name)
    except (ZoneInfoNotFoundError, ValueError):
        zone = timezone.utc
    hour = datetime.fromtimestamp(ts / 1000, zone).hour
    start, end = hours
    return hour >= start or hour < end if start > end else start <= hour < end


def grooming_flags(signals: Iterable[Signal], settings: GroomingSettings) -> tuple[str, ...]:
    """The sources of a message's signals (rule ids, model categories) that bear on grooming."""
    return tuple(dict.fromkeys(s.source for s in signals if s.source in settings.rule_signals))


def conversation_turn(message: ChatMessage, sender: UserProfile, recipient: UserProfile, signals: Iterable[Signal],
                      match: BankMatch | None, alert_bands: Iterable[AgeBand],
                      settings: GroomingSettings) -> ConversationTurn:
    """The turn for a direct message where one side is a minor. The child is the younger party (the
    recipient when both are in the same band); the contact is the other. ``match`` is None when the
    encoder failed: the rules still count."""
    younger_sender = _band_index(sender.effective_age_band) < _band_index(recipient.effective_age_band)
    child, contact = (sender, recipient) if younger_sender else (recipient, sender)
    contrast = match.contrast if match else 0.0
    stage = match.nearest.stage if match and contrast > settings.contrast_floor else ""
    turn = MessageSignals(
        event_id=message.event_id, ts=message.ts, from_contact=message.user_id == contact.user_id,
        contrast=round(contrast, 4), stage=stage, synthetic_match=bool(stage) and match.nearest.synthetic,
        flags=grooming_flags(signals, settings),
        late_night=is_late_night(message.ts, child.timezone, settings.configured.late_night_hours))
    alert = child.parent_id if child.effective_age_band in set(alert_bands) else None
    return ConversationTurn(
        pair=pair_key(sender.user_id, recipient.user_id), child_id=child.user_id, contact_id=contact.user_id,
        child_band=child.effective_age_band, contact_band=contact.age_band, friends=child.is_friend(contact.user_id),
        parent_to_alert=alert, timezone=child.timezone, message=turn, excerpt=redact(message.text)[:settings.excerpt_chars])


# ---- the pair: state, risk, outputs ---------------------------------------------------------------

@dataclass(frozen=True)
class PairState:
    first_seen_ts: int | None  # the pair's first direct message; None while they have only met in a room
    last_review_ts: int | None = None
    last_alert_ts: int | None = None
    messages: tuple[MessageSignals, ...] = ()
    met_room: str | None = None  # the room where they last met before their first direct message
    met_ts: int | None = None


def add_message(state: PairState | None, message: MessageSignals, settings: GroomingSettings) -> PairState:
    """The state with ``message`` in the window: at most ``window_messages``, none older than ``window_ms``
    before the newest."""
    if state is None:
        state = PairState(first_seen_ts=message.ts)
    messages = sorted((*state.messages, message), key=lambda m: m.ts)
    newest = messages[-1].ts
    kept = [m for m in messages if newest - m.ts <= settings.configured.window_ms][-settings.configured.window_messages:]
    first_seen = message.ts if state.first_seen_ts is None else min(state.first_seen_ts, message.ts)
    return replace(state, first_seen_ts=first_seen, messages=tuple(kept))


def add_meeting(state: PairState | None, meeting: "RoomMeeting") -> PairState:
    """The state with the pair's latest room meeting before their first direct message; a meeting once
    they already write directly changes nothing (it is not a move)."""
    if state is None:
        return PairState(first_seen_ts=None, met_room=meeting.room_id, met_ts=meeting.ts)
    if state.first_seen_ts is not None and meeting.ts > state.first_seen_ts:
        return state
    if state.met_ts is not None and state.met_ts >= meeting.ts:
        return state
    return replace(state, met_room=meeting.room_id, met_ts=meeting.ts)


def moved_from_room(state: PairState, settings: GroomingSettings) -> bool:
    return (state.met_ts is not None and state.first_seen_ts is not None
            and 0 <= state.first_seen_ts - state.met_ts <= settings.configured.room_move_ms)


# ---- rooms: who meets whom -----------------------------------------------------------------------

@dataclass(frozen=True)
class RoomSpeaker:
    """A room message's sender, as the room's state keeps it."""

    user_id: str
    band: AgeBand  # the effective band (unknown: the youngest)
    ts: int


# A room's speakers travel and are kept as JSON lists of [user_id, band, ts]: the room step reads and
# writes its whole state on every batch, where dataclasses.asdict cost more than the meetings themselves.
def speakers_to_json(speakers: Sequence[RoomSpeaker]) -> str:
    return json.dumps(_speaker_rows(speakers))


def speakers_from_json(text: str) -> list[RoomSpeaker]:
    return _speakers(json.loads(text))


def _speaker_rows(speakers: Iterable[RoomSpeaker]) -> list[list]:
    return [[s.user_id, s.band.value, s.ts] for s in speakers]


def _speakers(rows: Iterable[list]) -> list[RoomSpeaker]:
    return [RoomSpeaker(user_id, AgeBand(band), ts) for user_id, band, ts in rows]


@dataclass(frozen=True)
class RoomMeeting(JsonRecord):
    pair: str
    room_id: str
    ts: int

    @classmethod
    def from_json(cls, text: str) -> "RoomMeeting":
        return cls(**json.loads(text))


@dataclass(frozen=True)
class RoomState:
    speakers: tuple[RoomSpeaker, ...] = ()  # the last message of each recent speaker, oldest first

    def to_json(self) -> str:
        return speakers_to_json(self.speakers)

    @classmethod
    def from_json(cls, text: str) -> "RoomState":
        return cls(tuple(speakers_from_json(text)))


def much_older_pair(a: AgeBand, b: AgeBand, min_gap: int) -> bool:
    """One of the two is a minor and the other at least ``min_gap`` age bands older."""
    gap = abs(_band_index(a) - _band_index(b))
    return gap >= min_gap and (a.is_minor or b.is_minor)


def room_meetings(state: RoomState | None, room_id: str, speakers: Sequence[RoomSpeaker],
                  settings: GroomingSettings) -> tuple[RoomState, list[RoomMeeting]]:
    """Adds a batch of a room's speakers to its state; returns the state and the meetings they make: a
    minor and a much older user meet when one writes within ``room_meeting_window_ms`` of the other's last
    message, unless the writer's previous message was already that close to it (they met then). The state
    keeps only each speaker's last message, the ``room_speakers_max`` latest within the window."""
    window = settings.configured.room_meeting_window_ms
    latest = {s.user_id: s for s in (state or RoomState()).speakers}
    meetings = []
    for speaker in sorted(speakers, key=lambda s: s.ts):
        previous = latest.get(speaker.user_id)
        for other in latest.values():
            if (other.user_id != speaker.user_id and abs(speaker.ts - other.ts) <= window
                    and (previous is None or abs(previous.ts - other.ts) > window)
                    and much_older_pair(speaker.band, other.band, settings.configured.room_meeting_min_gap)):
                meetings.append(RoomMeeting(pair_key(speaker.user_id, other.user_id), room_id, speaker.ts))
        if previous is None or speaker.ts >= previous.ts:
            latest[speaker.user_id] = speaker
    newest = max((s.ts for s in latest.values()), default=0)
    kept = sorted((s for s in latest.values() if newest - s.ts <= window), key=lambda s: s.ts)
    return RoomState(tuple(kept[-settings.configured.room_speakers_max:])), meetings


@dataclass(frozen=True)
class PairRisk:
    score: float
    content: float
    context: float
    stages: tuple[str, ...]
    reasons: tuple[str, ...]


def _duration(ms: int) -> str:
    if ms < HOUR_MS:
        return f"{max(ms // 60_000, 0)} min"
    return f"{ms / HOUR_MS:.0f} h" if ms < 2 * DAY_MS else f"{ms / DAY_MS:.0f} days"


def pair_risk(state: PairState, turn: ConversationTurn, settings: GroomingSettings) -> PairRisk:
    """The pair's risk after ``turn`` (already in ``state``), with its reasons in words."""
    s = settings
    from_contact = [m for m in state.messages if m.from_contact]
    evidence = 1.0 - float(np.prod([1.0 - s.message_weight * m.evidence(s) for m in from_contact]))
    stages = tuple(stage for stage in STAGES if any(m.stage == stage for m in from_contact))
    progression = min(1.0, len(stages) / s.stages_for_full_progression)
    content = s.content_weight * evidence + (1 - s.content_weight) * progression

    if turn.contact_band is None:
        age_gap = 0.5  # unknown: half weight, since the platform cannot tell
    else:
        age_gap = max(0, _band_index(turn.contact_band) - _band_index(turn.child_band)) / (len(AgeBand) - 1)
    now = state.messages[-1].ts
    # A friend the platform knows of is an established relationship, however recently the pair first wrote.
    new_contact = not turn.friends and now - state.first_seen_ts <= s.new_contact_ms
    late = sum(m.late_night for m in from_contact)
    late_share = late / len(from_contact) if from_contact else 0.0
    moved = not turn.friends and moved_from_room(state, s)
    context = min(1.0, s.age_gap_weight * age_gap + s.stranger_weight * (not turn.friends)
                  + s.new_contact_weight * new_contact + s.room_move_weight * moved + s.late_night_weight * late_share)
    score = content * (s.context_floor + (1 - s.context_floor) * context)

    reasons = [f"conversation risk {score:.2f} over {len(state.messages)} direct messages in "
               f"{_duration(now - state.messages[0].ts)}"]
    if turn.contact_band is None:
        reasons.append(f"the contact's age is unknown; the child is {turn.child_band.value}")
    elif age_gap > 0:
        reasons.append(f"age gap: {turn.contact_band.value} contact, {turn.child_band.value} child")
    if not turn.friends:
        reasons.append("the contact is not on the child's friend list")
    if new_contact:
        reasons.append(f"first contact {_duration(now - state.first_seen_ts)} ago")
    if moved:
        reasons.append(f"moved to direct messages {_duration(state.first_seen_ts - state.met_ts)} after meeting "
                       f"the child in room {state.met_room}")
    banked = [m for m in from_contact if m.stage]
    if banked:
        synthetic = " (project-written synthetic examples)" if all(m.synthetic_match for m in banked) else ""
        reasons.append(f"{len(banked)} of {len(from_contact)} messages from the contact resemble known grooming "
                       f"messages in the bank{synthetic}")
    if stages:
        reasons.append("grooming stages seen: " + "; ".join(STAGES[stage] for stage in stages))
    for flag, rule in s.rule_signals.items():
        if count := sum(flag in m.flags for m in from_contact):
            reasons.append(f"{rule.words} ({flag}, {count} message{'s' if count > 1 else ''})")
    if late:
        start, end = s.configured.late_night_hours
        reasons.append(f"{late} message{'s' if late > 1 else ''} late at night ({start:02d}:00-{end:02d}:00, "
                       f"{turn.timezone})")
    return PairRisk(round(score, 4), round(content, 4), round(context, 4), stages, tuple(reasons))


def _due(last_ts: int | None, now: int, cooldown_ms: int) -> bool:
    return last_ts is None or now - last_ts >= cooldown_ms


def step(state: PairState | None, turn: ConversationTurn, settings: GroomingSettings,
         now_ms: int) -> tuple[PairState, PairRisk, list[ReviewItem | ParentAlert]]:
    """Adds a turn to its pair's state and returns the new state, the pair risk, and the review item and
    parent alert that are due: each when the risk is at its threshold and none was sent for the pair in
    the cool-down window before this message."""
    state = add_message(state, turn.message, settings)
    risk = pair_risk(state, turn, settings)
    ts, event_id = turn.message.ts, turn.message.event_id
    outputs: list[ReviewItem | ParentAlert] = []
    if risk.score >= settings.configured.review_threshold and _due(state.last_review_ts, ts, settings.configured.cooldown_ms):
        state = replace(state, last_review_ts=ts)
        reasons = [f"{risk.reasons[0]} >= review {settings.configured.review_threshold:.2f}", *risk.reasons[1:]]
        # Priority as the Screener's: risk x reach (1, a direct message) x 1.5 (a child is involved).
        outputs.append(ReviewItem(event_id=event_id, user_id=turn.contact_id, kind="conversation",
                                  priority=round(risk.score * 1.5, 4), categories=["sexual_minors"],
                                  reasons=reasons, excerpt=turn.excerpt, created_ts=now_ms))
    if (risk.score >= settings.configured.alert_threshold and turn.parent_to_alert is not None
            and _due(state.last_alert_ts, ts, settings.configured.cooldown_ms)):
        state = replace(state, last_alert_ts=ts)
        who = "an adult" if turn.contact_band is AgeBand.ADULT else "someone"
        stranger = " who is not on their friend list" if not turn.friends else ""
        outputs.append(ParentAlert(
            alert_id=f"{event_id}:{turn.child_id}:grooming", event_id=event_id, parent_id=turn.parent_to_alert,
            child_id=turn.child_id, kind="grooming_risk",
            severity="urgent" if risk.score >= settings.configured.urgent_threshold else "warning",
            child_role="sender" if not turn.message.from_contact else "recipient",
            summary=f"Lifeguard noticed a worrying pattern in your child's direct messages with {who}{stranger}. "
                    f"A moderator is reviewing the conversation.",
            reasons=[f"{risk.reasons[0]} >= alert {settings.configured.alert_threshold:.2f}", *risk.reasons[1:]],
            created_ts=now_ms))
    return state, risk, outputs
