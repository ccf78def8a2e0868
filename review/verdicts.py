"""What a reviewer's verdict sends out, as pure functions: the records the store's outbox publishes with it.

- An upload with hashes: a confirmed one's join the block bank, an overturned one's the allow bank, each
  hash noted with the decision (``hash-bank-updates``, the one path by which banks change).
- The automated decision on the event, corrected where the verdict disagrees with it (``decisions``): an
  overturn lifts any action to allow, a confirmation turns a weaker action into a block; the correction
  names the decision it supersedes (``supersedes``: its decided_ts, action and reasons), so consumers such
  as the behaviour features can replace what they counted.
- Parents alerted about an overturned event hear that the alert was wrong (``parent-alerts``, kind
  ``correction``).
- A verdict on a message (an item with an excerpt and no image hashes) is a training label (``labels``).
An escalation sends nothing but the verdict itself: a senior decides.

An appeal (`appeal_item`) becomes a review item of its own, ranked above the ordinary queue, whose verdict
corrects the contested event like any other.
"""
from __future__ import annotations

from dataclasses import dataclass

from pydantic import BaseModel

from lifeguard.config import ReviewConfig
from lifeguard.schemas import (SCHEMA_VERSION, Action, Appeal, Decision, HashBankUpdate, Label, ModeratorDecision,
                               ParentAlert, ReviewItem, Superseded)
from udfs.parse import Rejected
from udfs.redact import redact

@dataclass(frozen=True)
class OutboxRecord:
    topic: str  # the role in `lifeguard.config.Topics` (hash_bank_updates, decisions, ...), not its name
    key: str
    value: BaseModel


def consequences(decision: ModeratorDecision, item: ReviewItem, automated: Decision | None,
                 alerts: list[ParentAlert], config: ReviewConfig, now_ms: int) -> list[OutboxRecord]:
    """Every record `decision` on `item` publishes, bank changes first (a consumer acting on the corrected
    decision finds the banks changed already). `automated` is the latest automated decision on the
    event and `alerts` the parent alerts it gave, as the store audited them."""
    if decision.verdict == "escalate":
        return []
    records = [OutboxRecord("hash_bank_updates", u.bank, u) for u in bank_updates(decision, item.hashes, config)]
    if automated is not None and (corrected := corrected_decision(decision, automated, now_ms)) is not None:
        records.append(OutboxRecord("decisions", corrected.user_id, corrected))
    if decision.verdict == "overturn":
        records += [OutboxRecord("parent_alerts", a.parent_id, withdrawn(a, decision, now_ms)) for a in alerts
                    if a.kind != "correction"]
    if item.excerpt and not item.hashes:  # a message (an image's item has its hashes; a caption is no label)
        label = Label(label_id=f"{decision.event_id}:label", event_id=item.event_id, text=item.excerpt,
                      categories=[decision.category] if decision.verdict == "confirm" else list(item.categories),
                      verdict=decision.verdict, reviewers=[decision.moderator_id], decided_ts=now_ms)
        records.append(OutboxRecord("labels", item.event_id, label))
    return records


def bank_updates(decision: ModeratorDecision, hashes: dict[str, str], config: ReviewConfig) -> list[HashBankUpdate]:
    """The bank adds a verdict on an upload with `hashes` makes; none for an escalation or without hashes."""
    bank = {"confirm": config.confirmed_bank, "overturn": config.cleared_bank}.get(decision.verdict)
    if bank is None:
        return []
    return [HashBankUpdate(schema_version=SCHEMA_VERSION, event_id=f"{decision.event_id}:{signal_type}", op="add",
                           bank=bank, signal_type=signal_type, hash=hash_, note=_because(decision))
            for signal_type, hash_ in sorted(hashes.items())]


def corrected_decision(decision: ModeratorDecision, automated: Decision, now_ms: int) -> Decision | None:
    """The automated decision as the verdict corrects it, or None where the verdict agrees with it."""
    action = Action.ALLOW if decision.verdict == "overturn" else Action.BLOCK
    if automated.action is action:
        return None
    return automated.model_copy(update={
        "action": action, "reasons": [_because(decision)], "decided_ts": now_ms,
        # From the input record's Kafka timestamp, as every decision's latency is.
        "latency_ms": automated.latency_ms + (now_ms - automated.decided_ts),
        "supersedes": Superseded(decided_ts=automated.decided_ts, action=automated.action, reasons=automated.reasons)})


def withdrawn(alert: ParentAlert, decision: ModeratorDecision, now_ms: int) -> ParentAlert:
    """The correction of a parent alert about an event a reviewer found harmless."""
    return alert.model_copy(update={
        "alert_id": f"{alert.alert_id}:correction", "kind": "correction", "severity": "info",
        "summary": "A moderator looked again at what we told you about and found it was not harmful: "
                   "please disregard that alert.",
        "reasons": [_because(decision)], "created_ts": now_ms})


def _because(decision: ModeratorDecision) -> str:
    what = f"confirmed {decision.category}" if decision.verdict == "confirm" else "overturned"
    return f"reviewer decision {decision.event_id}: {what}"


def appeal_item(appeal: Appeal, automated: Decision | None, original: ReviewItem | None,
                config: ReviewConfig) -> ReviewItem:
    """The review item of an appeal, ranked above the ordinary queue; ``Rejected`` with the reason where
    there is nothing its user may appeal: no decision on the event is on record, the content is someone
    else's, or it was allowed."""
    subject = appeal.subject_event_id
    if automated is None:
        raise Rejected("unprocessable", f"appeal of {subject}: no decision on that event is on record", appeal.event_id)
    if automated.user_id != appeal.user_id:
        raise Rejected("invalid", f"appeal of {subject}: {appeal.user_id} may appeal only decisions on their own "
                                  f"content", appeal.event_id)
    if automated.action is Action.ALLOW:
        raise Rejected("unprocessable", f"appeal of {subject}: nothing to appeal, it was allowed", appeal.event_id)
    statement = f"appeal: {redact(appeal.statement)}" if appeal.statement else "appeal"
    return ReviewItem(event_id=appeal.event_id, user_id=appeal.user_id, kind="appeal",
                      priority=max(config.appeal_priority, original.priority if original else 0.0),
                      categories=list(original.categories) if original else [], subject_event_id=subject,
                      reasons=[*automated.reasons, statement], excerpt=original.excerpt if original else "",
                      hashes=dict(original.hashes) if original else {}, created_ts=appeal.ts)
