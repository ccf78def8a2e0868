"""One direct message with a minor as the pair step sees it: its bank match, the signals the screening
found (by source), the time of day in the child's zone."""
from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Iterable
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from lifeguard.profiles import UserProfile
from lifeguard.schemas import AgeBand, ChatMessage
from udfs.grooming.bank import BankMatch
from udfs.grooming.settings import GroomingSettings, JsonRecord
from udfs.policy import Signal
from udfs.redact import redact


@dataclass(frozen=True)
class MessageSignals:
    """What the pair state keeps of one message (never its text)."""

    event_id: str
    ts: int
    from_contact: bool
    contrast: float
    stage: str  # the nearest grooming example's stage, "" when the bank score is under the floor
    synthetic_match: bool  # the nearest grooming example is a synthetic one
    flags: tuple[str, ...]  # keys of rule_signals among the sources of the message's signals
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


def band_index(band: AgeBand) -> int:
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
    younger_sender = band_index(sender.effective_age_band) < band_index(recipient.effective_age_band)
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
