"""Per-user behaviour features over 1 h, 24 h and 7 d, and the age signals of what a user writes.

Windows hop: counts are kept in one-minute buckets for the last hour and one-hour buckets for the last
seven days, so a user's state is at most 60 + 168 small buckets; a window is the sum of the buckets that
start within it, as of the user's latest event. Definitions:
- ``messages_1h``, ``messages_per_minute_1h``: chat messages sent (room or direct).
- ``decisions_*`` / ``violations_*``: decisions on the user's messages and uploads, and those whose action
  was warn, shadow or block (``review`` means "not sure": counted in ``flagged_24h``, not as a violation);
  ``violation_rate_*`` = violations / decisions (0 without decisions); by category over 7 d, the category
  being the signal's name in the decision's reasons (``model:toxicity`` -> toxicity, ``rule:x`` -> x,
  ``link``, ``image``, or the category a reviewer confirmed). A reviewer's correction replaces what the
  decision it supersedes counted: an overturned block stops being a violation, a confirmed review becomes one.
- ``new_contacts_24h``: direct-message recipients never written to before (as far as the bounded contact
  memory of ``max_contacts`` recipients reaches).
- ``minor_dm_share_24h``: share of the user's direct messages that went to minors.
- ``minors_contacted_24h``: distinct minors, not on the user's friend list, written to directly.
Age signals (``features.age_signals``) that contradict the profile go to review once a day, and while a
user's age is in doubt (7 days), their direct messages to a child raise an ``age_mismatch`` alert
candidate for that child; an adult writing to ``many_minors_24h`` distinct non-friend minors goes to review.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, field

from features.age_signals import age_claims, contradiction
from features.alerts import AlertCandidate
from lifeguard.profiles import UserProfile
from features.json_state import JsonState
from features.screen_time import local_day
from lifeguard.config import FeaturesConfig
from features.stranger_time import MINUTE_MS, conversation_children, is_child
from lifeguard.schemas import Action, AgeBand, ChatMessage, Decision, ReviewItem

HOUR_MS = 60 * MINUTE_MS
DAY_MS = 24 * HOUR_MS
WEEK_MS = 7 * DAY_MS
VIOLATIONS = {Action.WARN.value, Action.SHADOW.value, Action.BLOCK.value}
# A correction's reason when a reviewer confirmed a violation (review.verdicts).
REVIEWER_CONFIRMED = re.compile(r"reviewer decision \S+: confirmed (\S+)$")


@dataclass(frozen=True)
class BehaviourRow:
    """A row of the Feast ``user_behaviour`` view."""

    user_id: str
    event_ts: int
    messages_1h: int
    messages_per_minute_1h: float
    decisions_24h: int
    violations_1h: int
    violations_24h: int
    violations_7d: int
    flagged_24h: int
    violation_rate_24h: float
    violation_rate_7d: float
    violations_by_category_7d: str  # JSON object category -> count
    new_contacts_24h: int
    minor_dm_share_24h: float
    minors_contacted_24h: int


@dataclass(frozen=True)
class ChatEffects:
    """What one chat message led to."""

    review_items: list[ReviewItem]
    alert_candidates: list[AlertCandidate]
    conversation_minutes: list[tuple[str, int]]  # (child, minute start): a DM between a child and a stranger


def decision_categories(reasons: list[str]) -> list[str]:
    categories = []
    for reason in reasons:
        if match := REVIEWER_CONFIRMED.match(reason):  # a correction: the category the reviewer named
            categories.append(match[1])
            continue
        tier, _, rest = reason.partition(":")
        if tier in ("model", "rule"):
            categories.append(rest.split()[0] if rest.split() else tier)
        elif tier in ("link", "image"):
            categories.append(tier)
    return sorted(set(categories)) or ["other"]


def _decision_counts(action: Action, reasons: list[str]) -> dict[str, int]:
    counts = {"decisions": 1}
    if action.value in VIOLATIONS:
        counts["violations"] = 1
        counts.update({f"cat:{category}": 1 for category in decision_categories(reasons)})
    elif action is Action.REVIEW:
        counts["flagged"] = 1
    return counts


@dataclass
class UserActivity(JsonState):
    STATE_FIELDS = ('minutes', 'hours', 'contacts', 'minors_contacted', 'age_doubt', 'reported', 'latest_ts')

    user_id: str
    settings: FeaturesConfig = field(default_factory=FeaturesConfig, repr=False)
    minutes: dict[str, dict] = field(default_factory=dict)  # minute start (str, for JSON) -> counts
    hours: dict[str, dict] = field(default_factory=dict)  # hour start -> counts
    contacts: dict[str, int] = field(default_factory=dict)  # recipient -> last direct message time
    minors_contacted: dict[str, int] = field(default_factory=dict)  # non-friend minor -> last time
    age_doubt: dict = field(default_factory=dict)  # {"reason", "ts"} while the user's age is in doubt
    reported: dict[str, int] = field(default_factory=dict)  # review kind -> last time sent
    latest_ts: int = 0

    # ---- inputs ----

    def on_chat(self, message: ChatMessage, sender: UserProfile, recipient: UserProfile | None,
                now_ms: int) -> ChatEffects:
        ts = message.ts
        self._advance(ts)
        counts = {"messages": 1}
        reviews, candidates, minutes = [], [], []
        if recipient is not None:
            counts["dms"] = 1
            if recipient.effective_age_band.is_minor:
                counts["dms_to_minors"] = 1
            if recipient.user_id not in self.contacts:
                counts["new_contacts"] = 1
            self._remember_contact(recipient.user_id, ts)
            if is_child(recipient) and not sender.is_friend(recipient.user_id):
                self.minors_contacted[recipient.user_id] = ts
            minute = ts - ts % MINUTE_MS
            minutes = [(child, minute) for child in conversation_children(sender, recipient)]
        self._count(ts, counts)
        reviews += self._age_reviews(message, sender, now_ms)
        if recipient is not None and is_child(recipient) and self.age_doubt:
            candidates.append(AlertCandidate(
                recipient.user_id, "age_mismatch", "warning", local_day(ts, recipient.timezone),
                "Someone your child is messaging may not be the age their profile says.",
                (self.age_doubt["reason"],), ts))
        reviews += self._many_minors_review(message, sender, now_ms)
        return ChatEffects(reviews, candidates, minutes)

    def on_decision(self, decision: Decision) -> None:
        """Counts a decision; a reviewer's correction replaces what its superseded decision counted (an
        overturned block is no violation; a confirmed review is one, in its category)."""
        self._advance(decision.event_ts)
        counts = _decision_counts(decision.action, decision.reasons)
        if decision.supersedes is not None:
            if decision.event_ts <= self.latest_ts - WEEK_MS:  # its counts have left every window already
                return
            # Reviewers name the category in the correction's reason; the superseded one's reasons name the tier.
            before = _decision_counts(decision.supersedes.action, decision.supersedes.reasons)
            counts = {name: counts.get(name, 0) - before.get(name, 0) for name in counts.keys() | before.keys()}
        self._count(decision.event_ts, counts)

    # ---- features ----

    def row(self) -> BehaviourRow:
        now = self.latest_ts
        hour = _sum(self.minutes, now - HOUR_MS)
        day, week = _sum(self.hours, now - DAY_MS), _sum(self.hours, now - WEEK_MS)
        by_category = {k.removeprefix("cat:"): v for k, v in sorted(week.items()) if k.startswith("cat:") and v > 0}
        return BehaviourRow(
            user_id=self.user_id, event_ts=now,
            messages_1h=hour.get("messages", 0), messages_per_minute_1h=round(hour.get("messages", 0) / 60, 4),
            decisions_24h=day.get("decisions", 0), violations_1h=hour.get("violations", 0),
            violations_24h=day.get("violations", 0), violations_7d=week.get("violations", 0),
            flagged_24h=day.get("flagged", 0),
            violation_rate_24h=_rate(day.get("violations", 0), day.get("decisions", 0)),
            violation_rate_7d=_rate(week.get("violations", 0), week.get("decisions", 0)),
            violations_by_category_7d=json.dumps(by_category),
            new_contacts_24h=day.get("new_contacts", 0),
            minor_dm_share_24h=_rate(day.get("dms_to_minors", 0), day.get("dms", 0)),
            minors_contacted_24h=sum(1 for t in self.minors_contacted.values() if t > now - DAY_MS))

    # ---- internals ----

    def _advance(self, ts: int) -> None:
        """Moves the user's clock forward (never back: a late event is counted in its bucket) and prunes."""
        self.latest_ts = max(self.latest_ts, ts)
        now = self.latest_ts
        self.minutes = {k: v for k, v in self.minutes.items() if int(k) > now - HOUR_MS}
        self.hours = {k: v for k, v in self.hours.items() if int(k) > now - WEEK_MS - HOUR_MS}
        self.minors_contacted = {u: t for u, t in self.minors_contacted.items() if t > now - DAY_MS}
        if self.age_doubt and self.age_doubt["ts"] <= now - WEEK_MS:
            self.age_doubt = {}

    def _count(self, ts: int, counts: dict[str, int]) -> None:
        for buckets, width in ((self.minutes, MINUTE_MS), (self.hours, HOUR_MS)):
            start = ts - ts % width
            if width == MINUTE_MS and start <= self.latest_ts - HOUR_MS:
                continue
            bucket = buckets.setdefault(str(start), {})
            for name, n in counts.items():
                bucket[name] = bucket.get(name, 0) + n

    def _remember_contact(self, user_id: str, ts: int) -> None:
        self.contacts[user_id] = max(ts, self.contacts.get(user_id, ts))
        if len(self.contacts) > self.settings.max_contacts:
            oldest = min(self.contacts, key=lambda u: (self.contacts[u], u))
            del self.contacts[oldest]

    def _age_reviews(self, message: ChatMessage, sender: UserProfile, now_ms: int) -> list[ReviewItem]:
        reasons = [r for claim in age_claims(message.text)
                   if (r := contradiction(sender.age_band, sender.age_verified, claim))]
        if not reasons:
            return []
        self.age_doubt = {"reason": reasons[0], "ts": message.ts}
        return self._review("age_mismatch", message, reasons, 1.0, now_ms)

    def _many_minors_review(self, message: ChatMessage, sender: UserProfile, now_ms: int) -> list[ReviewItem]:
        count = sum(1 for t in self.minors_contacted.values() if t > message.ts - DAY_MS)
        if sender.age_band is not AgeBand.ADULT or count < self.settings.many_minors_24h:
            return []
        return self._review("many_minors", message, [f"contact:adult wrote to {count} distinct non-friend minors "
                                                     f"in 24 h (threshold {self.settings.many_minors_24h})"], 2.0, now_ms)

    def _review(self, kind: str, message: ChatMessage, reasons: list[str], priority: float,
                now_ms: int) -> list[ReviewItem]:
        """One account review per kind per day: more evidence within the day would only repeat it."""
        if message.ts - self.reported.get(kind, -DAY_MS) < DAY_MS:
            return []
        self.reported[kind] = message.ts
        return [ReviewItem(event_id=f"{kind}:{message.event_id}", user_id=self.user_id, kind="account",
                           priority=priority, categories=[kind], reasons=reasons,
                           excerpt=message.text[:200], created_ts=now_ms)]


def _sum(buckets: dict[str, dict], after_ms: int) -> dict[str, int]:
    total: dict[str, int] = {}
    for start, counts in buckets.items():
        if int(start) > after_ms:
            for name, n in counts.items():
                total[name] = total.get(name, 0) + n
    return total


def _rate(part: int, whole: int) -> float:
    return round(part / whole, 4) if whole else 0.0
