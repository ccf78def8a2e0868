"""The policy: a YAML document (thresholds, rules, link and image settings) and the pure decision logic.

Every screening tier turns what it found into ``Signal``s (category, action, reason); the decision is
the most severe action any signal asks for, with every signal's reason kept. Thresholds are calibrated
probabilities per category and age band, where the band is that of the youngest party involved and an
unknown age counts as the youngest. The sender's recent behaviour (``behaviour``) can scale a message's
model thresholds down: a repeat offender's borderline message is treated as more likely harmful than a
first-timer's, and so is a message from someone with no history to a child who does not know them.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Annotated, Mapping

import yaml
from pydantic import BaseModel, ConfigDict, Field, model_validator

from lifeguard.profiles import UserProfile
from lifeguard.schemas import Action, AgeBand
from udfs.image_policy import ImagePolicy


class _Strict(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class BandThresholds(_Strict):
    """Calibrated probability at or above which each action applies; None: never."""

    warn: float | None = Field(None, ge=0, le=1)
    review: float | None = Field(None, ge=0, le=1)
    block: float | None = Field(None, ge=0, le=1)


class Rule(_Strict):
    id: str
    category: str
    action: Action
    description: str = ""
    # Whole words or phrases, matched on the normalised text (udfs.rules); "word*" also matches words
    # that start with it, "*word" words that end with it, "*word*" words that hold it.
    keywords: list[str] = []
    # RE2 regular expressions (linear time; no back-references or look-arounds), searched in the
    # lower-cased text (digits and punctuation intact) and in the normalised text.
    patterns: list[str] = []
    # Applies only when a minor is involved (for example an adult asking a child to move off-platform).
    minors_only: bool = False


class LinkPolicy(_Strict):
    blocklist_files: list[Path] = []
    blocked_action: Action = Action.BLOCK
    # Any link sent directly to a minor, blocklisted or not.
    link_to_minor_action: Action = Action.WARN
    # The URL model's calibrated phishing probability ("link_risk") at or above which a link gets
    # ``risk_action``; None: the model's score is shown but asks for nothing.
    risk_threshold: float | None = Field(None, ge=0, le=1)
    risk_action: Action = Action.REVIEW
    # Invite links and profiles of other chat apps ("discord.gg", "discord.com/invite"): moving a
    # child to where the platform cannot protect them. Applies when a minor is involved.
    off_platform_sites: list[str] = []
    off_platform_action: Action = Action.REVIEW
    # A host written with look-alike letters from another script ("раураl.com") is a disguise.
    lookalike_host_action: Action = Action.REVIEW


class RecentViolations(_Strict):
    # Violations: decisions warn, shadow or block on the sender's messages (the user_behaviour view).
    min_violations_7d: int = Field(2, ge=1)
    threshold_scale: float = Field(1.0, ge=0, le=1)  # 1: no tightening


class NoHistoryContactingMinor(_Strict):
    """A direct message to a minor from a sender with no behaviour on record in 7 days who is not a friend."""

    threshold_scale: float = Field(1.0, ge=0, le=1)


class BehaviourPolicy(_Strict):
    """How the sender's behaviour features tighten the model thresholds of their message (scales multiply
    every warn, review and block threshold; at most 1, so behaviour never loosens a threshold). Left out,
    thresholds stay as they are."""

    recent_violations: RecentViolations = RecentViolations()
    no_history_contacting_minor: NoHistoryContactingMinor = NoHistoryContactingMinor()


class ContactPolicy(_Strict):
    """What the parents' contact settings on a minor's profile (``dm_policy``, ``image_policy``: everyone,
    friends or nobody) do to a direct message or image sent to the child by someone they do not allow."""

    not_allowed_action: Action = Action.BLOCK
    # A minor's own image sent directly to an adult who is not a friend: a person looks, the parent hears.
    child_image_to_adult_action: Action = Action.REVIEW


class Policy(_Strict):
    version: str
    thresholds: dict[str, dict[AgeBand, BandThresholds]]
    # Who may read a room message: rooms can hold children, so by default the youngest band.
    room_audience: AgeBand = AgeBand.UNDER_13
    # Voice transcripts are noisy: model thresholds are raised by this much for them.
    voice_margin: float = Field(0.1, ge=0, le=1)
    # Per-category margins where noise hurts one category more than another (measured by models.thresholds).
    voice_margin_by_category: dict[str, Annotated[float, Field(ge=0, le=1)]] = {}
    # Bands whose linked parents are alerted when their child sends or receives something blocked.
    alert_bands: list[AgeBand] = [AgeBand.UNDER_13, AgeBand.TEEN_13_15]
    urgent_categories: list[str] = ["sexual", "sexual_minors", "self_harm", "threat"]
    # A category's block becomes a review when any of the listed categories is also signalled: the
    # model reads "i want to kill myself" as a threat too, and a person at risk needs help, not a block.
    review_instead_of_block_when: dict[str, list[str]] = {}
    rules: list[Rule] = []
    # Words and phrases inside which a keyword hit does not count ("scunthorpe", "assassin*"): the
    # cure for wildcard keywords' false hits. Same syntax as keywords.
    allowlist: list[str] = []
    links: LinkPolicy = LinkPolicy()
    images: ImagePolicy = ImagePolicy()
    behaviour: BehaviourPolicy = BehaviourPolicy()
    contact: ContactPolicy = ContactPolicy()

    @model_validator(mode="after")
    def _every_band(self):
        for category, bands in self.thresholds.items():
            if missing := set(AgeBand) - set(bands):
                raise ValueError(f"thresholds.{category} lacks bands {sorted(b.value for b in missing)}")
        return self


def load_policy(source: Path | Mapping) -> Policy:
    raw = yaml.safe_load(Path(source).read_text()) if isinstance(source, Path) else source
    return Policy.model_validate(raw)


@dataclass(frozen=True)
class Signal:
    category: str
    action: Action
    reason: str  # for people: what was found, with its numbers
    # What found it, "<tier>:<what>" (rule:off_platform_lure, model:threat, link:blocklist, image:bank,
    # contact:dm_policy): the metrics and the grooming step read this, never the reason's wording.
    source: str

    @property
    def tier(self) -> str:
        return self.source.split(":", 1)[0]


@dataclass(frozen=True)
class Verdict:
    action: Action
    reasons: tuple[str, ...]
    categories: tuple[str, ...]
    signals: tuple[Signal, ...]  # every signal behind it, whatever each asked for

    @property
    def deciding_tiers(self) -> set[str]:
        """The tiers whose signals asked for the verdict's action (none for an allow)."""
        return {s.tier for s in self.signals if s.action is self.action and s.action is not Action.ALLOW}


@dataclass(frozen=True)
class Tightening:
    scale: float
    reason: str


def behaviour_tightening(policy: BehaviourPolicy, sender: UserProfile, recipient: UserProfile | None,
                         direct: bool) -> Tightening | None:
    """The scale for the sender's model thresholds on this message, with the reason; None: no tightening.
    A sender with history is judged by its violations; one without by whom it writes to."""
    if sender.has_history:
        rule = policy.recent_violations
        if sender.violations_7d < rule.min_violations_7d or rule.threshold_scale == 1:
            return None
        return Tightening(rule.threshold_scale, f"behaviour: {sender.violations_7d} violations in 7 days: "
                                                f"thresholds x{rule.threshold_scale:g}")
    scale = policy.no_history_contacting_minor.threshold_scale
    to_unknown_minor = (direct and recipient is not None and recipient.effective_age_band.is_minor
                        and not recipient.is_friend(sender.user_id) and not sender.is_friend(recipient.user_id))
    if not to_unknown_minor or scale == 1:
        return None
    return Tightening(scale, f"behaviour: no history, writing directly to a minor who is not a friend: "
                             f"thresholds x{scale:g}")


CONTACT = "contact"  # the category of a contact-setting signal
CHILD_IMAGE = "child_image"  # the category of a minor's own image sent to an adult who is not a friend
CONTACT_SETTINGS = ("everyone", "friends", "nobody")


def friends(a: UserProfile, b: UserProfile) -> bool:
    """Either side lists the other: when one profile is a fallback (no friends known), the other vouches."""
    return a.is_friend(b.user_id) or b.is_friend(a.user_id)


def contact_setting(recipient: UserProfile, image: bool) -> str:
    """The recipient's setting for direct messages or images; one it does not know is the platform's default
    for the youngest band, friends only (``UserProfile``'s default)."""
    setting = recipient.image_policy if image else recipient.dm_policy
    return setting if setting in CONTACT_SETTINGS else UserProfile.dm_policy


def contact_allowed(sender: UserProfile, recipient: UserProfile, image: bool = False) -> bool:
    """Whether `recipient`'s setting lets `sender` send a direct message (or an image) at all."""
    setting = contact_setting(recipient, image)
    return setting == "everyone" or (setting == "friends" and friends(sender, recipient))


def contact_signals(policy: ContactPolicy, sender: UserProfile, recipient: UserProfile | None,
                    image: bool) -> list[Signal]:
    """The contact settings' signals on a direct message (``image`` false) or image sent to `recipient`.
    A setting the profile does not hold, or a value it does not know, is friends only (`contact_setting`)."""
    if recipient is None:
        return []
    if recipient.effective_age_band.is_minor:
        if contact_allowed(sender, recipient, image):
            return []
        what = "images" if image else "direct messages"
        setting = contact_setting(recipient, image)
        allowed = "from no one" if setting == "nobody" else "from friends only"
        setting_name = "image_policy" if image else "dm_policy"
        return [Signal(CONTACT, policy.not_allowed_action,
                       f"contact:{recipient.user_id} accepts {what} {allowed} ({setting_name} {setting}); "
                       f"{sender.user_id} is not allowed", f"contact:{setting_name}")]
    if image and sender.effective_age_band.is_minor and recipient.effective_age_band is AgeBand.ADULT \
            and not friends(sender, recipient):
        return [Signal(CHILD_IMAGE, policy.child_image_to_adult_action,
                       f"contact:a minor's image sent directly to an adult who is not a friend ({recipient.user_id})",
                       "contact:child_image")]
    return []


def model_signals(policy: Policy, scores: Mapping[str, float], band: AgeBand, voice: bool,
                  scale: float = 1.0) -> list[Signal]:
    """Each category's most severe action whose threshold (plus the voice margin, times ``scale``) the
    score reaches."""
    signals = []
    for category, score in scores.items():
        margin = policy.voice_margin_by_category.get(category, policy.voice_margin) if voice else 0.0
        bands = policy.thresholds.get(category)
        if bands is None:
            continue
        limits = bands[band]
        for action in (Action.BLOCK, Action.REVIEW, Action.WARN):
            limit = getattr(limits, action.value)
            if limit is None:
                continue
            threshold = (limit + margin) * max(scale, 0.0)
            if score >= min(threshold, 1.0):
                signals.append(Signal(category, action, f"model:{category} {score:.2f} >= {action.value} "
                                                        f"{threshold:.2f} for {band.value}", f"model:{category}"))
                break
    return signals


def soften(policy: Policy, signals: list[Signal]) -> list[Signal]:
    """Applies ``review_instead_of_block_when``: blocks that yield to another signalled category."""
    present = {s.category for s in signals if s.action is not Action.ALLOW}
    softened = []
    for signal in signals:
        yields_to = present & set(policy.review_instead_of_block_when.get(signal.category, ()))
        if signal.action is Action.BLOCK and yields_to:
            signal = replace(signal, action=Action.REVIEW,
                             reason=f"{signal.reason}; review instead of block ({', '.join(sorted(yields_to))} present)")
        softened.append(signal)
    return softened


def decide(signals: list[Signal], notes: tuple[str, ...] = ()) -> Verdict:
    """The most severe action asked for; ``notes`` are reasons that ask for no action (fallbacks)."""
    action = max((s.action for s in signals), key=lambda a: a.severity, default=Action.ALLOW)
    categories = tuple(dict.fromkeys(s.category for s in signals if s.action is not Action.ALLOW))
    return Verdict(action, tuple(s.reason for s in signals) + notes, categories, tuple(signals))
