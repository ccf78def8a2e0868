"""Screening a batch of chat messages and uploads: the tiers, cheapest first, then the decision.

``Screener.screen`` is the one code path behind the Flink job and offline scoring. It takes events
with their users' profiles and returns the outputs to publish: one ``Decision`` per event, plus
``ReviewItem``s, ``ParentAlert``s, or a ``DeadLetter`` for an upload that cannot be processed.
"""
from __future__ import annotations

import base64
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence, Union

from features.profiles import UserProfile
from lifeguard.config import LifeguardConfig, LimitsConfig
from lifeguard.schemas import (Action, AgeBand, ChatMessage, DeadLetter, Decision, ParentAlert, ReviewItem,
                               Upload)
from udfs.images import ImageRejected, decode_image, image_hashes, match_bank
from udfs.links import Blocklist, extract_links
from udfs.normalize import normalize
from udfs.parse import Rejected, SourceRef, dead_letter
from udfs.policy import Policy, Signal, Verdict, decide, load_policy, model_signals, soften
from udfs.rules import RuleMatcher
from udfs.text_model import TextModel

Output = Union[Decision, ReviewItem, ParentAlert, DeadLetter]
EXCERPT_CHARS = 120


@dataclass(frozen=True)
class ScreeningInput:
    event: ChatMessage | Upload
    source: SourceRef
    raw: bytes  # the record's original bytes, for a dead letter
    sender: UserProfile
    recipient: UserProfile | None  # for direct messages and uploads sent to one user


@dataclass
class Bank:
    """One hash bank: perceptual hashes (pHash, 16 hex characters) matched within a Hamming distance, and
    SHA-256 digests of the uploaded bytes matched exactly. A disabled bank keeps its hashes but is left
    out of matching until it is enabled again. Mutable: the hash-bank-updates topic changes it in place
    (``udfs.control.apply_bank_update``)."""

    phash: set[str] = field(default_factory=set)
    sha256: set[str] = field(default_factory=set)
    enabled: bool = True


BANK_SIGNAL_TYPES = ("phash", "sha256")


def load_image_banks(path: Path) -> dict[str, Bank]:
    """Bank name -> its hashes; a missing file means no banked images yet. Lines of another signal type
    (pdq: no PDQ matching in this job yet) are skipped."""
    banks: dict[str, Bank] = {}
    if path.exists():
        for line in path.read_text().splitlines():
            if line.strip():
                entry = json.loads(line)
                signal_type = entry.get("signal_type", "phash")
                if signal_type in BANK_SIGNAL_TYPES:
                    getattr(banks.setdefault(entry["bank"], Bank()), signal_type).add(entry["hash"].lower())
    return banks


def audience_band(policy: Policy, item: ScreeningInput) -> AgeBand:
    """The youngest party involved: sender, and the recipient or the room's assumed audience."""
    other = item.recipient.effective_age_band if item.recipient else policy.room_audience
    return AgeBand.younger(item.sender.effective_age_band, other)


def fallback_notes(item: ScreeningInput) -> tuple[str, ...]:
    return tuple(f"profile:{p.user_id} {p.fallback_reason}: acting as {AgeBand.youngest().value}"
                 for p in (item.sender, item.recipient) if p is not None and p.fallback_reason)


class Screener:
    """Everything heavy is made once here (model session, compiled rules, blocklist, banks). A running
    job swaps the policy (``set_policy``) and the banks (``set_banks``) without touching the model."""

    def __init__(self, policy: Policy, text_model: TextModel, limits: LimitsConfig,
                 image_banks: dict[str, Bank], base_dir: Path):
        self.text_model = text_model
        self.limits = limits
        self.image_banks = image_banks
        self.base_dir = base_dir
        self.policy = policy
        self.rules = RuleMatcher(policy.rules)
        self.blocklist = self._load_blocklist(policy)
        self.model_errors = 0

    @classmethod
    def from_config(cls, cfg: LifeguardConfig) -> "Screener":
        return cls(load_policy(cfg.path(cfg.policy)),
                   TextModel.load(cfg.path(cfg.models.text_model), prefer_gpu=cfg.models.prefer_gpu),
                   cfg.limits, load_image_banks(cfg.path(cfg.models.image_banks)), cfg.path(Path(".")))

    def _load_blocklist(self, policy: Policy) -> Blocklist:
        return Blocklist.from_files(
            p if p.is_absolute() else self.base_dir / p for p in policy.links.blocklist_files)

    def set_policy(self, policy: Policy) -> None:
        """Puts ``policy`` in force for the next batch: the rules are recompiled, the link blocklist is
        reread only when the policy names other files, the model session stays. All or nothing: a
        blocklist file that cannot be read raises ``Rejected`` and the old policy stays."""
        rules = RuleMatcher(policy.rules)
        blocklist = self.blocklist
        if policy.links.blocklist_files != self.policy.links.blocklist_files:
            try:
                blocklist = self._load_blocklist(policy)
            except (OSError, KeyError, ValueError) as exc:  # missing file, or not a kind/host/target CSV
                raise Rejected("unprocessable", f"policy {policy.version}: links.blocklist_files cannot be "
                                                f"read here: {type(exc).__name__}: {exc}") from None
        self.policy, self.rules, self.blocklist = policy, rules, blocklist

    def set_banks(self, image_banks: dict[str, Bank]) -> None:
        self.image_banks = image_banks

    # ---- text ---------------------------------------------------------------------------------

    def _text_of(self, event: ChatMessage | Upload) -> tuple[str, tuple[str, ...]]:
        text = event.text if isinstance(event, ChatMessage) else event.caption
        if len(text) > self.limits.max_text_chars:
            return text[: self.limits.max_text_chars], (
                f"text truncated from {len(text)} to {self.limits.max_text_chars} characters for screening",)
        return text, ()

    def _score_texts(self, texts: Sequence[str]) -> list[dict[str, float]] | None:
        try:
            return self.text_model.score_batch(texts)
        except Exception:  # a model failure must not drop the batch: it goes to review (fail safe)
            self.model_errors += 1
            return None

    def text_signals(self, text: str, scores: dict[str, float] | None, band: AgeBand,
                     voice: bool, direct_to_minor: bool) -> list[Signal]:
        if scores is None:
            return [Signal("model_error", Action.REVIEW, "model:error, sent to review (fail safe)")]
        signals = model_signals(self.policy, scores, band, voice)
        normalised = normalize(text)
        # Both forms: normalising folds digits into letters, which phone-number patterns need intact.
        for hit in self.rules.match(f"{text.lower()}\n{normalised}", band.is_minor):
            signals.append(Signal(hit.rule.category, hit.rule.action, f"rule:{hit.rule.id} matched '{hit.matched}'"))
        for link in extract_links(text) + extract_links(normalised):
            if entry := self.blocklist.blocked(link):
                signals.append(Signal("link", self.policy.links.blocked_action, f"link:blocklisted {entry}"))
            elif direct_to_minor:
                signals.append(Signal("link", self.policy.links.link_to_minor_action,
                                      f"link:{link.host} sent directly to a minor"))
        return list(dict.fromkeys(signals))

    # ---- images -------------------------------------------------------------------------------

    def _image_bytes(self, upload: Upload) -> bytes:
        if upload.image_b64 is not None:
            try:
                return base64.b64decode(upload.image_b64, validate=True)
            except ValueError as exc:
                raise Rejected("unprocessable", f"image_b64 is not valid base64: {exc}", upload.event_id) from None
        path = upload.uri.removeprefix("file://")
        if "://" in path:
            raise Rejected("unprocessable", f"unsupported image URI scheme: {upload.uri}", upload.event_id)
        try:
            return Path(path).read_bytes()
        except OSError as exc:
            raise Rejected("unprocessable", f"image URI cannot be read: {exc}", upload.event_id) from None

    def image_signals(self, upload: Upload) -> tuple[list[Signal], dict[str, float]]:
        data = self._image_bytes(upload)
        try:
            image = decode_image(data, self.limits.max_image_bytes, self.limits.max_image_pixels)
        except ImageRejected as exc:
            raise Rejected("unprocessable", f"image rejected: {exc}", upload.event_id) from None
        hashes = image_hashes(image, data)
        images = self.policy.images
        signals, nearest = [], 64
        for name, bank in self.image_banks.items():
            if not bank.enabled:
                continue
            if hashes.sha256 in bank.sha256:
                nearest = 0
                signals.append(Signal("image_bank", Action.BLOCK, f"image:sha256 {hashes.sha256} in bank {name}"))
                continue
            found = match_bank(hashes.phash, bank.phash, images.review_max_distance)
            if found is None:
                continue
            banked, distance = found
            nearest = min(nearest, distance)
            action = Action.BLOCK if distance <= images.block_max_distance else Action.REVIEW
            signals.append(Signal("image_bank", action,
                                  f"image:phash {hashes.phash} within {distance} bits of {banked} in bank {name}"))
        signals.append(Signal("image_model", Action.ALLOW, "image:no image model in this tier yet"))
        return signals, {"image_bank_distance": float(nearest)}

    # ---- the batch ----------------------------------------------------------------------------

    def screen(self, items: Sequence[ScreeningInput], now_ms: int) -> list[Output]:
        texts, truncations = zip(*(self._text_of(i.event) for i in items)) if items else ((), ())
        all_scores = self._score_texts(list(texts)) if items else []
        outputs: list[Output] = []
        for index, item in enumerate(items):
            scores = None if all_scores is None else all_scores[index]
            try:
                outputs.extend(self._screen_one(item, texts[index], scores, truncations[index], now_ms))
            except Rejected as rejected:
                outputs.append(dead_letter(item.source, item.raw, rejected, now_ms))
        return outputs

    def _screen_one(self, item: ScreeningInput, text: str, scores: dict[str, float] | None,
                    notes: tuple[str, ...], now_ms: int) -> Iterable[Output]:
        event = item.event
        band = audience_band(self.policy, item)
        voice = isinstance(event, ChatMessage) and event.channel == "voice"
        direct_to_minor = event.is_direct and item.recipient is not None and item.recipient.effective_age_band.is_minor
        signals = self.text_signals(text, scores, band, voice, direct_to_minor)
        shown_scores = dict(scores or {})
        if isinstance(event, Upload):
            image_signals, image_scores = self.image_signals(event)
            signals += image_signals
            shown_scores.update(image_scores)
        verdict = decide(soften(self.policy, signals), notes + fallback_notes(item))
        decision = Decision(
            event_id=event.event_id, user_id=event.user_id,
            kind="chat" if isinstance(event, ChatMessage) else "upload", action=verdict.action,
            scores={k: round(v, 4) for k, v in shown_scores.items()}, reasons=list(verdict.reasons),
            age_band=band, policy_version=self.policy.version, model_version=self.text_model.version,
            event_ts=event.ts, decided_ts=now_ms, latency_ms=now_ms - item.source.kafka_ts)
        yield decision
        if verdict.action is Action.REVIEW:
            yield self._review_item(item, text, verdict, scores or {}, band, now_ms)
        if verdict.action is Action.BLOCK:
            yield from self._parent_alerts(item, verdict, now_ms)

    def _review_item(self, item: ScreeningInput, text: str, verdict: Verdict, scores: dict[str, float],
                     band: AgeBand, now_ms: int) -> ReviewItem:
        # Risk: the highest model score among the flagged categories (a rule or link hit counts as 1).
        risk = max((scores.get(c, 1.0) for c in verdict.categories), default=1.0)
        # Virality: a room message reaches more people than a direct one; a child audience weighs more.
        reach = 1.0 if item.event.is_direct else 2.0
        priority = risk * reach * (1.5 if band.is_minor else 1.0)
        return ReviewItem(event_id=item.event.event_id, user_id=item.event.user_id,
                          kind="chat" if isinstance(item.event, ChatMessage) else "upload",
                          priority=round(priority, 4), categories=list(verdict.categories),
                          reasons=list(verdict.reasons), excerpt=text[:EXCERPT_CHARS], created_ts=now_ms)

    def _parent_alerts(self, item: ScreeningInput, verdict: Verdict, now_ms: int) -> Iterable[ParentAlert]:
        event = item.event
        what = ("an image" if isinstance(event, Upload)
                else "a direct message" if event.is_direct else "a room message")
        categories = ", ".join(verdict.categories) or "policy"
        urgent = any(c in self.policy.urgent_categories for c in verdict.categories)
        for child, role in ((item.sender, "sender"), (item.recipient, "recipient")):
            if child is None or child.parent_id is None or child.effective_age_band not in self.policy.alert_bands:
                continue
            direction = "sent by" if role == "sender" else "sent to"
            yield ParentAlert(
                alert_id=f"{event.event_id}:{child.user_id}", event_id=event.event_id, parent_id=child.parent_id,
                child_id=child.user_id, kind="harmful_content", severity="urgent" if urgent else "warning",
                child_role=role, summary=f"Lifeguard blocked {what} {direction} your child ({categories}).",
                reasons=list(verdict.reasons), created_ts=now_ms)
