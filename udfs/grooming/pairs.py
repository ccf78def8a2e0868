"""The pair: its window of recent messages, its risk, and the review item and parent alert it gives."""
from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from lifeguard.schemas import AgeBand, ParentAlert, ReviewItem
from udfs.grooming.rooms import RoomMeeting
from udfs.grooming.settings import DAY_MS, HOUR_MS, STAGES, GroomingSettings
from udfs.grooming.turns import ConversationTurn, MessageSignals, band_index


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


def add_meeting(state: PairState | None, meeting: RoomMeeting) -> PairState:
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
        age_gap = max(0, band_index(turn.contact_band) - band_index(turn.child_band)) / (len(AgeBand) - 1)
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
