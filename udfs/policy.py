"""The policy: a YAML document (thresholds, rules, link and image settings) and the pure decision logic.

Every screening tier turns what it found into ``Signal``s (category, action, reason); the decision is
the most severe action any signal asks for, with every signal's reason kept. Thresholds are calibrated
probabilities per category and age band, where the band is that of the youngest party involved and an
unknown age counts as the youngest.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

import yaml
from pydantic import BaseModel, ConfigDict, Field, model_validator

from lifeguard.schemas import Action, AgeBand


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
    # Whole words or phrases, matched on the normalised text.
    keywords: list[str] = []
    # Regular expressions over the normalised text; keep them free of nested quantifiers.
    patterns: list[str] = []
    # Applies only when a minor is involved (for example an adult asking a child to move off-platform).
    minors_only: bool = False


class LinkPolicy(_Strict):
    blocklist_files: list[Path] = []
    blocked_action: Action = Action.BLOCK
    # Any link sent directly to a minor, blocklisted or not.
    link_to_minor_action: Action = Action.WARN


class ImagePolicy(_Strict):
    # Hamming distance on 64-bit pHash: at most block_max_distance blocks, up to review_max_distance reviews.
    block_max_distance: int = Field(6, ge=0, le=64)
    review_max_distance: int = Field(10, ge=0, le=64)


class Policy(_Strict):
    version: str
    thresholds: dict[str, dict[AgeBand, BandThresholds]]
    # Who may read a room message: rooms can hold children, so by default the youngest band.
    room_audience: AgeBand = AgeBand.UNDER_13
    # Voice transcripts are noisy: model thresholds are raised by this much for them.
    voice_margin: float = Field(0.1, ge=0, le=1)
    # Bands whose linked parents are alerted when their child sends or receives something blocked.
    alert_bands: list[AgeBand] = [AgeBand.UNDER_13, AgeBand.TEEN_13_15]
    urgent_categories: list[str] = ["sexual", "sexual_minors", "self_harm", "threat"]
    # A category's block becomes a review when any of the listed categories is also signalled: the
    # model reads "i want to kill myself" as a threat too, and a person at risk needs help, not a block.
    review_instead_of_block_when: dict[str, list[str]] = {}
    rules: list[Rule] = []
    links: LinkPolicy = LinkPolicy()
    images: ImagePolicy = ImagePolicy()

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
    reason: str


@dataclass(frozen=True)
class Verdict:
    action: Action
    reasons: tuple[str, ...]
    categories: tuple[str, ...]


def model_signals(policy: Policy, scores: Mapping[str, float], band: AgeBand, voice: bool) -> list[Signal]:
    margin = policy.voice_margin if voice else 0.0
    signals = []
    for category, score in scores.items():
        bands = policy.thresholds.get(category)
        if bands is None:
            continue
        limits = bands[band]
        for action in (Action.BLOCK, Action.REVIEW, Action.WARN):
            limit = getattr(limits, action.value)
            if limit is not None and score >= min(limit + margin, 1.0):
                signals.append(Signal(category, action, f"model:{category} {score:.2f} >= {action.value} "
                                                        f"{limit + margin:.2f} for {band.value}"))
                break
    return signals


def soften(policy: Policy, signals: list[Signal]) -> list[Signal]:
    """Applies ``review_instead_of_block_when``: blocks that yield to another signalled category."""
    present = {s.category for s in signals if s.action is not Action.ALLOW}
    softened = []
    for signal in signals:
        yields_to = present & set(policy.review_instead_of_block_when.get(signal.category, ()))
        if signal.action is Action.BLOCK and yields_to:
            signal = Signal(signal.category, Action.REVIEW,
                            f"{signal.reason}; review instead of block ({', '.join(sorted(yields_to))} present)")
        softened.append(signal)
    return softened


def decide(signals: list[Signal], notes: tuple[str, ...] = ()) -> Verdict:
    """The most severe action asked for; ``notes`` are reasons that ask for no action (fallbacks)."""
    action = max((s.action for s in signals), key=lambda a: a.severity, default=Action.ALLOW)
    categories = tuple(dict.fromkeys(s.category for s in signals if s.action is not Action.ALLOW))
    return Verdict(action, tuple(s.reason for s in signals) + notes, categories)
