"""Topic contracts: one versioned schema per Kafka topic, used by producers, the job, tests and docs.

Every record is JSON, keyed by the acting user's id. Inputs are validated strictly (no type coercion;
unknown fields are ignored so producers can add fields ahead of consumers). Every output carries the
input's ``event_id`` so consumers can de-duplicate: delivery is at-least-once.

``EXAMPLES`` holds one example record per topic; the README's topic section is generated from it
(``lifeguard schemas``) and a test validates each example against its schema.
"""
from __future__ import annotations

from enum import Enum
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator

SCHEMA_VERSION = 1

Id = Annotated[str, StringConstraints(min_length=1, max_length=128)]
EpochMillis = Annotated[int, Field(ge=0, description="event time, milliseconds since the Unix epoch (UTC)")]


class AgeBand(str, Enum):
    """Ordered youngest first: an unknown age is treated as ``UNDER_13``."""

    UNDER_13 = "under_13"
    TEEN_13_15 = "13_15"
    TEEN_16_17 = "16_17"
    ADULT = "adult"

    @property
    def is_minor(self) -> bool:
        return self is not AgeBand.ADULT

    @classmethod
    def youngest(cls) -> "AgeBand":
        return cls.UNDER_13

    @classmethod
    def younger(cls, a: "AgeBand", b: "AgeBand") -> "AgeBand":
        order = list(cls)
        return a if order.index(a) <= order.index(b) else b


class Action(str, Enum):
    """Ordered by severity: the strongest action any signal asks for wins."""

    ALLOW = "allow"
    WARN = "warn"
    SHADOW = "shadow"
    REVIEW = "review"
    BLOCK = "block"

    @property
    def severity(self) -> int:
        return list(Action).index(self)


class _Record(BaseModel):
    model_config = ConfigDict(frozen=True, strict=True, extra="ignore")


class _Input(_Record):
    schema_version: Literal[1]
    event_id: Id
    ts: EpochMillis
    user_id: Id


class _Addressed(_Input):
    """A message or upload goes either to a room or directly to one user."""

    room_id: Id | None = None
    recipient_id: Id | None = None

    @model_validator(mode="after")
    def _one_destination(self):
        if (self.room_id is None) == (self.recipient_id is None):
            raise ValueError("exactly one of room_id and recipient_id must be set")
        return self

    @property
    def is_direct(self) -> bool:
        return self.recipient_id is not None


class ChatMessage(_Addressed):
    """Topic ``chat``: a room or direct message, typed or a voice transcript."""

    channel: Literal["text", "voice"]
    text: str


class Upload(_Addressed):
    """Topic ``uploads``: an image, inline (base64) or by URI, with an optional caption."""

    content_type: Annotated[str, StringConstraints(max_length=100)]
    image_b64: str | None = None
    uri: Annotated[str, StringConstraints(min_length=1, max_length=2048)] | None = None
    caption: str = ""

    @model_validator(mode="after")
    def _one_source(self):
        if (self.image_b64 is None) == (self.uri is None):
            raise ValueError("exactly one of image_b64 and uri must be set")
        return self


class SessionEvent(_Input):
    """Topic ``sessions``: presence on the platform and in rooms."""

    type: Literal["login", "logout", "join", "leave", "heartbeat"]
    room_id: Id | None = None

    @model_validator(mode="after")
    def _room_for_room_events(self):
        if self.type in ("join", "leave") and self.room_id is None:
            raise ValueError(f"a {self.type} event needs room_id")
        return self


class Appeal(_Input):
    """Topic ``appeals``: a user contests a decision on their own content."""

    subject_event_id: Id = Field(description="the decided event the appeal contests")
    statement: Annotated[str, StringConstraints(max_length=2000)] = ""


class Engagement(_Input):
    """Topic ``engagement``: views, shares and a user report of a decided event's content, as the platform
    counts them (``user_id``: the viewer or reporter; views and shares may be totals of a short interval)."""

    subject_event_id: Id
    views: int = Field(0, ge=0, le=10**9)
    shares: int = Field(0, ge=0, le=10**9)
    report: bool = False


class HashBankUpdate(_Record):
    """Topic ``hash-bank-updates``: add or remove a hash, enable or disable a bank."""

    schema_version: Literal[1]
    event_id: Id
    op: Literal["add", "remove", "enable", "disable"]
    bank: Id
    signal_type: Literal["sha256", "phash", "pdq"] | None = None
    hash: str | None = None
    # Where an added hash came from (a reviewer's decision): quoted in the reasons of the uploads it matches.
    note: Annotated[str, StringConstraints(max_length=200)] = ""


class PolicyUpdate(_Record):
    """Topic ``policy-updates``: a whole new policy document (the YAML file's content as an object)."""

    schema_version: Literal[1]
    event_id: Id
    policy: dict


class ModeratorDecision(_Record):
    """Topic ``moderator-decisions``: a reviewer's verdict on a decided event."""

    schema_version: Literal[1]
    event_id: Id
    moderator_id: Id
    subject_event_id: Id
    verdict: Literal["confirm", "overturn", "escalate"]
    category: str | None = None
    note: str = ""
    # Whose content was judged (the review item's user): their behaviour features count confirmed violations.
    user_id: Id | None = None


# ---- outputs -------------------------------------------------------------------------------------

# An output's enum read back from its JSON (the review store reads decisions): strict validation would take
# only an instance, and a parsed record holds the value.
OutputAction = Annotated[Action, Field(strict=False)]
OutputAgeBand = Annotated[AgeBand, Field(strict=False)]


class Superseded(_Record):
    """The decision a correction replaces: consumers undo what they did on it (its counts, its action)."""

    decided_ts: EpochMillis
    action: OutputAction
    reasons: list[str]


class Decision(_Record):
    """Topic ``decisions``: one per chat message and upload, and a correction after a reviewer's verdict."""

    schema_version: Literal[1] = SCHEMA_VERSION
    event_id: Id
    user_id: Id
    kind: Literal["chat", "upload"]
    action: OutputAction
    scores: dict[str, float]
    reasons: list[str]
    age_band: OutputAgeBand = Field(description="the band the policy applied: the youngest party involved")
    policy_version: str
    model_version: str
    event_ts: EpochMillis
    decided_ts: EpochMillis
    latency_ms: int = Field(description="decided_ts minus the Kafka timestamp of the input record")
    supersedes: Superseded | None = Field(None, description="a correction after a reviewer's verdict: the "
                                                            "decision on this event it replaces")


class ReviewItem(_Record):
    """Topic ``review-queue``: work for human reviewers, highest ``priority`` first."""

    schema_version: Literal[1] = SCHEMA_VERSION
    event_id: Id
    user_id: Id
    kind: Literal["chat", "upload", "conversation", "account", "appeal"]
    priority: float = Field(ge=0, description="risk x virality; higher is more urgent")
    categories: list[str]
    reasons: list[str]
    excerpt: str
    created_ts: EpochMillis
    # An upload's hashes (its first frame's; PDQ only where good enough to match): a confirmed item's go
    # to the block bank.
    hashes: dict[Literal["sha256", "phash", "pdq"], str] = {}
    # An appeal's item: the contested event, which its verdict corrects.
    subject_event_id: Id | None = None


class ParentAlert(_Record):
    """Topic ``parent-alerts``: a short, redacted notice for a child's linked parent."""

    schema_version: Literal[1] = SCHEMA_VERSION
    alert_id: Id
    event_id: Id
    parent_id: Id
    child_id: Id
    kind: Literal["harmful_content", "grooming_risk", "stranger_time", "screen_time", "age_mismatch", "image_shared",
                  "correction"]
    severity: Literal["info", "warning", "urgent"]
    child_role: Literal["sender", "recipient", "subject"]
    summary: str
    reasons: list[str]
    created_ts: EpochMillis


class Label(_Record):
    """Topic ``labels``: a reviewer's verdict on a message as a training label (the excerpt as reviewers saw
    it, personal information masked)."""

    schema_version: Literal[1] = SCHEMA_VERSION
    label_id: Id
    event_id: Id
    text: str
    categories: list[str] = Field(description="confirm: the category the reviewer named; overturn: the "
                                              "categories the automated decision acted on")
    verdict: Literal["confirm", "overturn"]
    reviewers: list[str]
    decided_ts: EpochMillis


class DeadLetter(_Record):
    """Topic ``dead-letter``: a record that could not be processed, with its original bytes."""

    schema_version: Literal[1] = SCHEMA_VERSION
    source_topic: str
    source_partition: int
    source_offset: int
    reason: str
    error_kind: Literal["not_json", "not_utf8", "invalid", "unknown_version", "oversize", "unprocessable"]
    original_b64: str
    event_id: str | None = None
    created_ts: EpochMillis


INPUT_SCHEMAS: dict[str, type[_Input]] = {"chat": ChatMessage, "uploads": Upload, "sessions": SessionEvent}
# What users send to the review store rather than to the moderation job.
REVIEW_INPUT_SCHEMAS: dict[str, type[_Input]] = {"appeals": Appeal, "engagement": Engagement}
CONTROL_SCHEMAS: dict[str, type[_Record]] = {
    "hash-bank-updates": HashBankUpdate,
    "policy-updates": PolicyUpdate,
    "moderator-decisions": ModeratorDecision,
}
OUTPUT_SCHEMAS: dict[str, type[_Record]] = {
    "decisions": Decision,
    "review-queue": ReviewItem,
    "parent-alerts": ParentAlert,
    "labels": Label,
    "dead-letter": DeadLetter,
}

EXAMPLES: dict[str, dict] = {
    "chat": {"schema_version": 1, "event_id": "c-7f3a", "ts": 1767225600000, "user_id": "u-102",
             "channel": "text", "room_id": None, "recipient_id": "u-517", "text": "gg! want to play again?"},
    "uploads": {"schema_version": 1, "event_id": "up-91b2", "ts": 1767225601000, "user_id": "u-102",
                "room_id": "r-lobby", "recipient_id": None, "content_type": "image/png",
                "image_b64": "iVBORw0KGgo...", "uri": None, "caption": "my castle"},
    "sessions": {"schema_version": 1, "event_id": "s-55e0", "ts": 1767225599000, "user_id": "u-102",
                 "type": "join", "room_id": "r-lobby"},
    "appeals": {"schema_version": 1, "event_id": "ap-3c1d", "ts": 1767226000000, "user_id": "u-102",
                "subject_event_id": "c-7f3a", "statement": "it was a joke between friends"},
    "engagement": {"schema_version": 1, "event_id": "en-88c2", "ts": 1767226000000, "user_id": "u-733",
                   "subject_event_id": "up-91b2", "views": 120, "shares": 3, "report": False},
    "hash-bank-updates": {"schema_version": 1, "event_id": "hb-1", "op": "add", "bank": "known-bad",
                          "signal_type": "phash", "hash": "d1c4e0b0f0f8f8f0"},
    "policy-updates": {"schema_version": 1, "event_id": "pol-2", "policy": {"version": "2026-11-23.2"}},
    "moderator-decisions": {"schema_version": 1, "event_id": "md-1", "moderator_id": "mod-4",
                            "subject_event_id": "c-7f3a", "verdict": "confirm", "category": "toxicity"},
    "decisions": {"schema_version": 1, "event_id": "c-7f3a", "user_id": "u-102", "kind": "chat",
                  "action": "block", "scores": {"toxicity": 0.93, "threat": 0.04},
                  "reasons": ["model:toxicity 0.93 >= block 0.85 for under_13"], "age_band": "under_13",
                  "policy_version": "2026-11-23.1", "model_version": "text-linear-2",
                  "event_ts": 1767225600000, "decided_ts": 1767225600012, "latency_ms": 12},
    "review-queue": {"schema_version": 1, "event_id": "c-7f3a", "user_id": "u-102", "kind": "chat",
                     "priority": 1.5, "categories": ["pii"],
                     "reasons": ["rule:off_platform_lure matched 'add me on'"],
                     "excerpt": "add me on snapchat so we can talk more", "created_ts": 1767225600012},
    "parent-alerts": {"schema_version": 1, "alert_id": "c-7f3a:u-517", "event_id": "c-7f3a",
                      "parent_id": "p-517", "child_id": "u-517", "kind": "harmful_content",
                      "severity": "urgent", "child_role": "recipient",
                      "summary": "Lifeguard blocked a direct message sent to your child (toxicity).",
                      "reasons": ["model:toxicity 0.93 >= block 0.85 for under_13"], "created_ts": 1767225600012},
    "labels": {"schema_version": 1, "label_id": "md-5e1f:label", "event_id": "c-7f3a",
               "text": "add me on snapchat so we can talk more", "categories": ["pii"], "verdict": "confirm",
               "reviewers": ["mod-4"], "decided_ts": 1767225900000},
    "dead-letter": {"schema_version": 1, "source_topic": "chat", "source_partition": 0, "source_offset": 42,
                    "reason": "not valid JSON: Expecting value: line 1 column 1 (char 0)", "error_kind": "not_json",
                    "original_b64": "bm90IGpzb24=", "event_id": None, "created_ts": 1767225600013},
}
