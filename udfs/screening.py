"""Screening a batch of chat messages and uploads: the tiers, cheapest first, then the decision.

``Screener.screen`` is the one code path behind the Flink job and offline scoring. It takes events
with their users' profiles and returns the outputs to publish: one ``Decision`` per event, plus
``ReviewItem``s, ``ParentAlert``s, or a ``DeadLetter`` for an upload that cannot be processed; and,
for each decided direct message where one side is a minor, a ``ConversationTurn`` with its grooming-bank
match, for the conversation-risk step (``udfs.grooming``). Such a message always goes through the text
model's second stage, whose sentence embedding the bank match reuses: one encoder pass for both (its
scores stay the cascade's).
The sender's behaviour features (on its profile) can tighten the model thresholds of its message
(``udfs.policy.behaviour_tightening``); the decision's reasons then say why.
"""
from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Iterable, Mapping, Sequence, Union

import numpy as np

from lifeguard.profiles import UserProfile
from lifeguard.config import ControlConfig, LifeguardConfig, LimitsConfig
from lifeguard.schemas import (Action, AgeBand, ChatMessage, DeadLetter, Decision, ParentAlert, ReviewItem,
                               Upload)
from udfs.grooming.bank import MessageBank, load_bank
from udfs.grooming.rooms import RoomSpeaker
from udfs.grooming.settings import GroomingSettings
from udfs.grooming.turns import ConversationTurn, conversation_turn, is_minor_direct_message
from udfs.image_model import ImageModel
from udfs.image_tier import Banks, ImageResult, ImageTier, load_image_banks
from udfs.parse import Rejected, SourceRef, dead_letter
from udfs.policy import (CHILD_IMAGE, CONTACT, Policy, Signal, Verdict, behaviour_tightening, contact_signals, decide,
                         load_policy, soften)
from udfs.redact import redact
from udfs.score_cache import ScoreCache
from udfs.text_model import ScoredTexts, TextModel
from udfs.text_tier import TextTier

Output = Union[Decision, ReviewItem, ParentAlert, DeadLetter]
EXCERPT_CHARS = 120


@dataclass(frozen=True)
class ScreeningInput:
    event: ChatMessage | Upload
    source: SourceRef
    raw: bytes  # the record's original bytes, for a dead letter
    sender: UserProfile
    recipient: UserProfile | None  # for direct messages and uploads sent to one user


@dataclass(frozen=True)
class Screened:
    outputs: list[Output]
    turns: list[ConversationTurn]  # one per decided direct message where one side is a minor
    room_speakers: dict[str, list[RoomSpeaker]]  # per room, the senders of its decided chat messages
    verdicts: dict[str, Verdict] = field(default_factory=dict)  # by event id, each decision's verdict


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
                 image_banks: Banks, base_dir: Path, image_model: ImageModel | None = None,
                 grooming: GroomingSettings | None = None, control: ControlConfig = ControlConfig(),
                 score_cache_size: int = 0):
        self.text_model = text_model
        self.scores = ScoreCache(text_model, score_cache_size)
        # The bands and model scores of recently screened typed chat messages (no text), on which a policy
        # update is tried before it is put in force (``udfs.control.unsafe_change`` judges each as typed
        # chat: voice transcripts and captions, which have their own margins and rules, stay out).
        self.recent_scores: deque[tuple[AgeBand, dict[str, float]]] = deque(maxlen=control.recent_sample)
        self.last_model_ms = 0.0  # the text model's time on the last batch (a metric)
        self.limits = limits
        self.text_tier = TextTier(policy, base_dir)
        self.image_tier = ImageTier(image_banks, limits, image_model)
        self.model_errors = 0
        self.contact_blocks = 0  # messages and images that the parents' contact settings stopped (a metric)
        # Without grooming settings no conversation turns are made; with them, the bank is embedded by the
        # text model's second stage (a model without one is refused here).
        self.grooming = grooming
        self.grooming_bank = None if self.grooming is None else MessageBank(
            load_bank(base_dir / p for p in self.grooming.configured.bank_files), text_model.embed)

    @classmethod
    def from_config(cls, cfg: LifeguardConfig) -> "Screener":
        return cls(load_policy(cfg.path(cfg.policy)),
                   TextModel.load(cfg.path(cfg.models.text_model), prefer_gpu=cfg.models.prefer_gpu,
                                  second_stage=cfg.path(cfg.models.text_second_stage),
                                  tokenizer=cfg.path(cfg.models.text_tokenizer)),
                   cfg.limits, load_image_banks(cfg.path(cfg.models.image_banks)), cfg.path(Path(".")),
                   ImageModel.load(prefer_gpu=cfg.models.prefer_gpu), GroomingSettings.from_config(cfg.grooming),
                   cfg.control, cfg.models.score_cache_size)

    @property
    def policy(self) -> Policy:
        return self.text_tier.policy

    @property
    def image_banks(self) -> Banks:
        return self.image_tier.banks

    def set_policy(self, policy: Policy) -> None:
        """Puts ``policy`` in force for the next batch; the model session stays. All or nothing: a
        blocklist file that cannot be read raises ``Rejected`` and the old policy stays."""
        self.text_tier = self.text_tier.with_policy(policy)

    def set_banks(self, image_banks: Banks) -> None:
        self.image_tier.banks = image_banks

    def _text_of(self, event: ChatMessage | Upload) -> tuple[str, tuple[str, ...]]:
        text = event.text if isinstance(event, ChatMessage) else event.caption
        notes: tuple[str, ...] = ()
        if len(text) > self.limits.max_text_chars:
            notes += (f"text truncated from {len(text)} to {self.limits.max_text_chars} characters for screening",)
            text = text[: self.limits.max_text_chars]
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:  # a lone surrogate (parse_record refuses them; offline input may hold one)
            text = text.encode("utf-8", "replace").decode("utf-8")
            notes += ("characters that are not text (lone surrogates) replaced for screening",)
        return text, notes

    def _score_texts(self, texts: Sequence[str], minors: Sequence[bool],
                     conversations: Sequence[bool]) -> ScoredTexts | None:
        started = time.perf_counter()
        try:
            return self.scores.score_and_embed(texts, minors, conversations)
        except Exception:  # a model failure must not drop the batch: it goes to review (fail safe)
            self.model_errors += 1
            return None
        finally:
            self.last_model_ms = (time.perf_counter() - started) * 1000

    # ---- the batch ----------------------------------------------------------------------------

    def screen(self, items: Sequence[ScreeningInput], now_ms: int) -> Screened:
        if not items:
            return Screened([], [], {})
        texts, truncations = zip(*(self._text_of(i.event) for i in items))
        bands = [audience_band(self.policy, item) for item in items]
        conversations = [self.grooming is not None and is_minor_direct_message(i.event, i.sender, i.recipient)
                         for i in items]
        scored = self._score_texts(list(texts), [band.is_minor for band in bands], conversations)
        if scored is not None:
            self.recent_scores.extend((band, scores) for item, band, scores in zip(items, bands, scored.scores)
                                      if isinstance(item.event, ChatMessage) and item.event.channel == "text")
        images = self._screen_images(items)
        outputs: list[Output] = []
        verdicts: dict[str, Verdict] = {}
        for index, item in enumerate(items):
            scores = None if scored is None else scored.scores[index]
            try:
                verdict, produced = self._screen_one(item, texts[index], scores, truncations[index], images.get(index),
                                                     now_ms)
                verdicts[item.event.event_id] = verdict
                outputs.extend(produced)
            except Rejected as rejected:
                outputs.append(dead_letter(item.source, item.raw, rejected, now_ms))
            except Exception as error:  # one record's failure is its own dead letter, never the batch's
                outputs.append(dead_letter(item.source, item.raw, Rejected(
                    "unprocessable", f"screening failed: {type(error).__name__}: {str(error)[:200]}",
                    item.event.event_id), now_ms))
        return Screened(outputs, self._conversation_turns(items, conversations, scored, verdicts),
                        self._room_speakers(items, verdicts, now_ms), verdicts)

    def _conversation_turns(self, items: Sequence[ScreeningInput], conversations: Sequence[bool],
                            scored: ScoredTexts | None, verdicts: dict[str, Verdict]) -> list[ConversationTurn]:
        """A turn per decided direct message with a minor, its bank match from the second stage's embedding
        (None after a model failure: the turn still carries the verdict's rule signals)."""
        chosen = [i for i, item in enumerate(items) if conversations[i] and item.event.event_id in verdicts]
        if not chosen:
            return []
        matches = [None] * len(chosen) if scored is None else \
            self.grooming_bank.match(np.stack([scored.embeddings[i] for i in chosen]))
        return [conversation_turn(items[i].event, items[i].sender, items[i].recipient,
                                  verdicts[items[i].event.event_id].signals, match, self.policy.alert_bands,
                                  self.grooming)
                for i, match in zip(chosen, matches)]

    def _room_speakers(self, items: Sequence[ScreeningInput], decided: Mapping[str, object],
                       now_ms: int) -> dict[str, list[RoomSpeaker]]:
        """Who wrote in which room, for the room-meetings step (``udfs.grooming.rooms.room_meetings``). A time
        ahead of ``now_ms`` counts as now: one far-future clock must not age every other speaker out."""
        if self.grooming is None:
            return {}
        rooms: dict[str, list[RoomSpeaker]] = {}
        for item in items:
            event = item.event
            if isinstance(event, ChatMessage) and event.room_id and event.event_id in decided:
                rooms.setdefault(event.room_id, []).append(
                    RoomSpeaker(event.user_id, item.sender.effective_age_band, min(event.ts, now_ms)))
        return rooms

    def _screen_images(self, items: Sequence[ScreeningInput]) -> dict[int, ImageResult | Rejected]:
        """The batch's uploads through the image tier at once (one image-model run), by position in items."""
        positions = [i for i, item in enumerate(items) if isinstance(item.event, Upload)]
        results = self.image_tier.screen([items[i].event for i in positions], self.policy.images,
                                         [audience_band(self.policy, items[i]) for i in positions])
        return dict(zip(positions, results))

    def _screen_one(self, item: ScreeningInput, text: str, scores: dict[str, float] | None, notes: tuple[str, ...],
                    image: ImageResult | Rejected | None, now_ms: int) -> tuple[Verdict, list[Output]]:
        """The item's verdict, and what it gives: its decision, then any review item and parent alerts."""
        event = item.event
        band = audience_band(self.policy, item)
        voice = isinstance(event, ChatMessage) and event.channel == "voice"
        direct_to_minor = event.is_direct and item.recipient is not None and item.recipient.effective_age_band.is_minor
        tightening = (None if scores is None  # no model scores (model failure): nothing to tighten
                      else behaviour_tightening(self.policy.behaviour, item.sender, item.recipient, event.is_direct))
        signals, text_scores = self.text_tier.signals(text, scores, band, voice, direct_to_minor,
                                                      tightening.scale if tightening else 1.0)
        shown_scores = {**(scores or {}), **text_scores}
        if isinstance(image, Rejected):
            raise image
        if image is not None:
            signals += image.signals
            shown_scores.update(image.scores)
        contact = contact_signals(self.policy.contact, item.sender, item.recipient, isinstance(event, Upload))
        self.contact_blocks += any(signal.category == CONTACT for signal in contact)
        signals = soften(self.policy, signals + contact)
        # The tightening is a reason only where a model signal it scaled acted: elsewhere it explains nothing.
        if tightening is not None and any(s.action is not Action.ALLOW and s.tier == "model" for s in signals):
            notes += (tightening.reason,)
        verdict = decide(signals, notes + fallback_notes(item))
        # People read these (reviewers, parents, `lifeguard tail`): a number a rule quotes is masked.
        verdict = replace(verdict, reasons=tuple(map(redact, verdict.reasons)),
                          signals=tuple(replace(s, reason=redact(s.reason)) for s in verdict.signals))
        decision = Decision(
            event_id=event.event_id, user_id=event.user_id,
            kind="chat" if isinstance(event, ChatMessage) else "upload", action=verdict.action,
            scores={k: round(v, 4) for k, v in shown_scores.items()}, reasons=list(verdict.reasons),
            age_band=band, policy_version=self.policy.version, model_version=self.text_model.version,
            event_ts=event.ts, decided_ts=now_ms, latency_ms=now_ms - item.source.kafka_ts)
        outputs: list[Output] = [decision]
        if verdict.action is Action.REVIEW:
            outputs.append(self._review_item(item, text, verdict, scores or {}, band, image, now_ms))
        # A message the contact settings alone stopped is counted (decisions name the setting), not alerted
        # one by one: the parents chose the setting, and a stranger's every try would be noise to them.
        if verdict.action is Action.BLOCK and set(verdict.categories) != {CONTACT}:
            outputs.extend(self._parent_alerts(item, verdict, now_ms))
        child_image = [s for s in signals if s.category == CHILD_IMAGE]
        if child_image and verdict.action is not Action.BLOCK:  # a block alerts the parent already
            outputs.extend(self._child_image_alert(item, child_image, now_ms))
        return verdict, outputs

    def _review_item(self, item: ScreeningInput, text: str, verdict: Verdict, scores: dict[str, float],
                     band: AgeBand, image: ImageResult | None, now_ms: int) -> ReviewItem:
        # Risk: the highest model score among the flagged categories (a rule or link hit counts as 1).
        risk = max((scores.get(c, 1.0) for c in verdict.categories), default=1.0)
        # Virality: a room message reaches more people than a direct one; a child audience weighs more.
        reach = 1.0 if item.event.is_direct else 2.0
        priority = risk * reach * (1.5 if band.is_minor else 1.0)
        return ReviewItem(event_id=item.event.event_id, user_id=item.event.user_id,
                          kind="chat" if isinstance(item.event, ChatMessage) else "upload",
                          priority=round(priority, 4), categories=list(verdict.categories),
                          reasons=list(verdict.reasons), excerpt=redact(text)[:EXCERPT_CHARS], created_ts=now_ms,
                          hashes={} if image is None else self._bankable_hashes(image))

    def _bankable_hashes(self, image: ImageResult) -> dict[str, str]:
        first = image.frames[0]
        hashes = {"sha256": first.sha256, "phash": first.phash}
        if first.pdq_quality >= self.policy.images.pdq_min_quality:
            hashes["pdq"] = first.pdq
        return hashes

    def _child_image_alert(self, item: ScreeningInput, signals: list[Signal], now_ms: int) -> Iterable[ParentAlert]:
        """The parent of a child who sent their own image to an adult who is not a friend hears of it."""
        child = item.sender
        if child.parent_id is None or child.effective_age_band not in self.policy.alert_bands:
            return
        yield ParentAlert(
            alert_id=f"{item.event.event_id}:{child.user_id}", event_id=item.event.event_id, parent_id=child.parent_id,
            child_id=child.user_id, kind="image_shared", severity="warning", child_role="sender",
            summary="Your child sent an image to an adult who is not on their friends list; a moderator will look at it.",
            reasons=[s.reason for s in signals], created_ts=now_ms)

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
