"""The review store: the queue reviewers claim from, their verdicts and the audit log, in PostgreSQL.

- Items arrive from ``review-queue`` and are stored once by ``event_id``: a re-delivered item changes nothing.
- A reviewer claims the most urgent waiting item with ``FOR UPDATE SKIP LOCKED`` under a lease: two
  reviewers never get the same item, and an item whose lease lapses goes back to the queue.
- A verdict is stored with the claim's end in one transaction; the verdicts table is also the outbox to
  ``moderator-decisions`` (`pending_publication`, `mark_published`), so a verdict is never lost between the
  database and Kafka, and is published at least once. A verdict on an upload also carries the bank
  updates it makes (`bank_updates`): a confirmed image's hashes join the block bank, an overturned one's
  the allow bank, through ``hash-bank-updates`` like every other bank change.
- Every step, and every automated decision read from ``decisions``, is appended to ``audit_log``, which
  no role may change (migration 0001).
"""
from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Generic, Sequence, TypeVar

import psycopg
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from lifeguard.config import ReviewConfig
from lifeguard.schemas import SCHEMA_VERSION, Decision, HashBankUpdate, ModeratorDecision, ReviewItem

R = TypeVar("R")
ITEM_FIELDS = tuple(ReviewItem.model_fields)


class ReviewError(Exception):
    """A reviewer's action the store refuses; the message says why."""


@dataclass(frozen=True)
class Consumed(Generic[R]):
    """A record read from Kafka, with where it came from ("topic:partition:offset"): the audit row's key,
    so that a re-delivered record adds no second row."""

    record: R
    source: str


@dataclass(frozen=True)
class Publication:
    """A verdict waiting in the outbox: its record, and the bank updates to publish before it."""

    decision: ModeratorDecision
    bank_updates: list[HashBankUpdate]


@dataclass(frozen=True)
class AuditEntry:
    at: datetime
    actor: str
    action: str
    detail: dict


_ENQUEUE = """
WITH incoming AS (
    SELECT DISTINCT ON (event_id) * FROM jsonb_to_recordset(%(rows)s) AS r(
        event_id text, user_id text, kind text, priority float8, categories jsonb, reasons jsonb, excerpt text,
        created_ts bigint, hashes jsonb, source text)
), inserted AS (
    INSERT INTO review_items (event_id, user_id, kind, priority, categories, reasons, excerpt, created_ts, hashes)
    SELECT event_id, user_id, kind, priority, categories, reasons, excerpt, created_ts, hashes FROM incoming
    ON CONFLICT (event_id) DO NOTHING
    RETURNING event_id
)
INSERT INTO audit_log (event_id, actor, action, detail, source)
SELECT event_id, 'lifeguard', 'queued for review',
       jsonb_build_object('kind', kind, 'priority', priority, 'categories', categories, 'reasons', reasons), source
FROM incoming JOIN inserted USING (event_id)
ON CONFLICT (source) DO NOTHING
RETURNING event_id
"""

_RECORD_DECISIONS = """
INSERT INTO audit_log (event_id, actor, action, detail, source)
SELECT event_id, actor, action, detail, source
FROM jsonb_to_recordset(%(rows)s) AS r(event_id text, actor text, action text, detail jsonb, source text)
ON CONFLICT (source) DO NOTHING
"""

# The most urgent item a reviewer may take: waiting, or claimed under a lease that has lapsed.
_CLAIM = """
UPDATE review_items
SET state = 'claimed', claimed_by = %(reviewer)s, claimed_at = clock_timestamp(),
    lease_expires = clock_timestamp() + make_interval(secs => %(lease_s)s)
WHERE event_id = (
    SELECT event_id FROM review_items
    WHERE state <> 'decided' AND (state = 'waiting' OR lease_expires < clock_timestamp())
      AND (%(senior)s OR NOT senior_only)
    ORDER BY priority DESC, created_ts
    LIMIT 1
    FOR UPDATE SKIP LOCKED)
RETURNING *
"""

# Ends the reviewer's own live claim: decided, or (escalated) back in the queue for seniors only.
_END_CLAIM = """
UPDATE review_items
SET state = CASE WHEN %(verdict)s = 'escalate' THEN 'waiting' ELSE 'decided' END,
    senior_only = senior_only OR %(verdict)s = 'escalate',
    claimed_by = NULL, claimed_at = NULL, lease_expires = NULL
WHERE event_id = %(event_id)s AND state = 'claimed' AND claimed_by = %(reviewer)s
  AND lease_expires >= clock_timestamp()
RETURNING hashes
"""


class ReviewStore:
    """One connection's view of the store; not shared between threads (each reviewer's request, the
    consumer and each bench worker has its own)."""

    def __init__(self, connection: psycopg.Connection, config: ReviewConfig):
        self._db = connection
        self.config = config
        self.lease_s = config.lease_s

    @classmethod
    def connect(cls, config: ReviewConfig) -> "ReviewStore":
        return cls(psycopg.connect(**config.connection_options(), row_factory=dict_row), config)

    def close(self) -> None:
        self._db.close()

    def enqueue(self, items: Sequence[Consumed[ReviewItem]]) -> int:
        """Stores the items not stored before, each with its audit row; returns how many were new."""
        rows = [c.record.model_dump(mode="json") | {"source": c.source} for c in items]
        with self._db.transaction():
            return len(self._db.execute(_ENQUEUE, {"rows": Jsonb(rows)}).fetchall()) if rows else 0

    def record_decisions(self, decisions: Sequence[Consumed[Decision]]) -> None:
        """Appends the automated decisions to the audit log (a re-delivered one adds nothing)."""
        rows = [{"event_id": c.record.event_id, "source": c.source,
                 "actor": f"policy {c.record.policy_version}, model {c.record.model_version}",
                 "action": f"decided {c.record.action.value}",
                 "detail": c.record.model_dump(mode="json", exclude={"event_id", "schema_version"})}
                for c in decisions]
        if rows:
            with self._db.transaction():
                self._db.execute(_RECORD_DECISIONS, {"rows": Jsonb(rows)})

    def claim_next(self, reviewer: str, senior: bool = False) -> ReviewItem | None:
        """The most urgent item `reviewer` may take, now claimed by them for `lease_s`; None if none waits."""
        with self._db.transaction():
            row = self._db.execute(_CLAIM, {"reviewer": reviewer, "lease_s": self.lease_s, "senior": senior}).fetchone()
            if row is None:
                return None
            self._audit(row["event_id"], reviewer, "claimed", {"lease_expires": row["lease_expires"].isoformat()})
        return ReviewItem.model_validate({name: row[name] for name in ITEM_FIELDS if name in row} | {"schema_version": 1})

    def decide(self, event_id: str, reviewer: str, verdict: str, category: str | None = None,
               note: str = "") -> ModeratorDecision:
        """Ends `reviewer`'s live claim on `event_id` with a verdict, and returns the record to publish on
        moderator-decisions (already in the outbox). Refused without a live claim: the lease lapsed (the item
        may be someone else's now), the item was decided, or it was never claimed by this reviewer."""
        if verdict == "confirm" and not category:
            raise ReviewError("a confirmed violation needs its category")
        decision = ModeratorDecision(schema_version=SCHEMA_VERSION, event_id=f"md-{uuid.uuid4().hex}",
                                     moderator_id=reviewer, subject_event_id=event_id, verdict=verdict,
                                     category=category, note=note)
        with self._db.transaction():
            ended = self._db.execute(_END_CLAIM, {"event_id": event_id, "reviewer": reviewer, "verdict": verdict}).fetchone()
            if ended is None:
                raise ReviewError(f"{reviewer} holds no live claim on {event_id}: claim it again from the queue")
            updates = bank_updates(decision, ended["hashes"], self.config)
            self._db.execute("INSERT INTO verdicts (decision_id, event_id, reviewer, verdict, category, note, bank_updates) "
                             "VALUES (%s, %s, %s, %s, %s, %s, %s)",
                             (decision.event_id, event_id, reviewer, verdict, category, note,
                              Jsonb([u.model_dump(mode="json") for u in updates])))
            self._audit(event_id, reviewer, verdict, {"decision_id": decision.event_id, "category": category, "note": note,
                                                      "banked": [f"{u.bank} {u.signal_type}" for u in updates]})
        return decision

    def pending_publication(self, limit: int = 500) -> list[Publication]:
        """Verdicts not yet on moderator-decisions, oldest first."""
        rows = self._db.execute("SELECT decision_id, event_id, reviewer, verdict, category, note, bank_updates "
                                "FROM verdicts WHERE published_at IS NULL ORDER BY decided_at LIMIT %s", (limit,)).fetchall()
        self._db.commit()
        return [Publication(ModeratorDecision(schema_version=SCHEMA_VERSION, event_id=r["decision_id"],
                                              moderator_id=r["reviewer"], subject_event_id=r["event_id"],
                                              verdict=r["verdict"], category=r["category"], note=r["note"]),
                            [HashBankUpdate.model_validate_json(json.dumps(u)) for u in r["bank_updates"]])
                for r in rows]

    def mark_published(self, decision_ids: Sequence[str]) -> None:
        with self._db.transaction():
            self._db.execute("UPDATE verdicts SET published_at = clock_timestamp() WHERE decision_id = ANY(%s)",
                             (list(decision_ids),))

    def history(self, event_id: str) -> list[AuditEntry]:
        """Everything the audit log holds on `event_id`, in the order it happened."""
        rows = self._db.execute("SELECT at, actor, action, detail FROM audit_log WHERE event_id = %s ORDER BY id",
                                (event_id,)).fetchall()
        self._db.commit()
        return [AuditEntry(**row) for row in rows]

    def _audit(self, event_id: str, actor: str, action: str, detail: dict) -> None:
        self._db.execute("INSERT INTO audit_log (event_id, actor, action, detail) VALUES (%s, %s, %s, %s)",
                         (event_id, actor, action, Jsonb(detail)))


def bank_updates(decision: ModeratorDecision, hashes: dict[str, str], config: ReviewConfig) -> list[HashBankUpdate]:
    """The bank adds a verdict on an upload with `hashes` makes: a confirmed violation's hashes join the
    block bank, an overturned one's the allow bank, each noted with the decision; none for an escalation
    or an item without hashes."""
    bank = {"confirm": config.confirmed_bank, "overturn": config.cleared_bank}.get(decision.verdict)
    if bank is None:
        return []
    what = f"confirmed {decision.category}" if decision.verdict == "confirm" else "overturned"
    return [HashBankUpdate(schema_version=SCHEMA_VERSION, event_id=f"{decision.event_id}:{signal_type}", op="add",
                           bank=bank, signal_type=signal_type, hash=hash_,
                           note=f"reviewer decision {decision.event_id}: {what}")
            for signal_type, hash_ in sorted(hashes.items())]
