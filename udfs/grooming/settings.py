"""The detector's settings: grooming stages, the rule and model signals that count and how much, and
the score's weights beside what operators configure."""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field

from lifeguard.config import GroomingConfig

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
    """What a signal's source (``rule:<id>`` or ``model:<category>``) means for a conversation."""

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
