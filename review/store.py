"""The review store: the queue reviewers claim from, their verdicts and the audit log, in PostgreSQL.

- Items arrive from ``review-queue`` and are stored once by ``event_id``: a re-delivered item changes nothing.
- Views from ``engagement`` raise a waiting item's priority (`rerank`: its queued priority times
  log10(10 + views per minute)), so a harmful item going viral reaches a reviewer first.
- A reviewer claims the most urgent waiting item with ``FOR UPDATE SKIP LOCKED`` under a lease: two
  reviewers never get the same item, and an item whose lease lapses goes back to the queue.
- A verdict is stored with the claim's end in one transaction, with what it sends out
  (`review.verdicts.consequences`: bank updates, a corrected decision, parent alert corrections, a
  label); the verdicts table is the outbox (`pending_publication`, `mark_published`), so nothing is lost
  between the database and Kafka, and everything is published at least once.
- Every step, and every automated decision and parent alert read from Kafka, is appended to
  ``audit_log``, which no role may change (migration 0001).
"""
from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Generic, Sequence, TypeVar

import psycopg
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from lifeguard.config import ReviewConfig
from lifeguard.schemas import SCHEMA_VERSION, Appeal, Decision, Engagement, ModeratorDecision, ParentAlert, ReviewItem
from review.verdicts import OutboxRecord, appeal_item, consequences

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
    """A verdict waiting in the outbox: what it sends out (published first), then its own record."""

    decision: ModeratorDecision
    records: list[dict]  # OutboxRecord as JSON: {"topic": role, "key": ..., "value": {...}}


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
        created_ts bigint, hashes jsonb, subject_event_id text, excluded_reviewer text, source text)
), inserted AS (
    INSERT INTO review_items (event_id, subject_event_id, excluded_reviewer, user_id, kind, priority, base_priority,
                              categories, reasons, excerpt, created_ts, hashes)
    SELECT event_id, coalesce(subject_event_id, event_id), excluded_reviewer, user_id, kind, priority, priority,
           categories, reasons, excerpt, created_ts, hashes FROM incoming
    ON CONFLICT DO NOTHING
    RETURNING event_id, subject_event_id
)
INSERT INTO audit_log (event_id, actor, action, detail, record_kind, source)
SELECT inserted.subject_event_id, 'lifeguard', CASE WHEN kind = 'appeal' THEN 'appealed' ELSE 'queued for review' END,
       jsonb_build_object('item', event_id, 'kind', kind, 'priority', priority, 'categories', categories,
                          'reasons', reasons),
       'review_item', source
FROM incoming JOIN inserted USING (event_id)
ON CONFLICT (source) DO NOTHING
RETURNING event_id
"""

_RECORD_OUTPUTS = """
INSERT INTO audit_log (event_id, actor, action, detail, record_kind, record, source)
SELECT event_id, actor, action, detail, record_kind, record, source
FROM jsonb_to_recordset(%(rows)s) AS r(event_id text, actor text, action text, detail jsonb, record_kind text,
                                       record jsonb, source text)
ON CONFLICT (source) DO NOTHING
"""

_RECORD_ENGAGEMENT = """
WITH incoming AS (
    SELECT DISTINCT ON (event_id) * FROM jsonb_to_recordset(%(rows)s) AS r(
        event_id text, user_id text, subject_event_id text, minute bigint, views bigint, shares bigint,
        report boolean, source text)
), fresh AS (
    INSERT INTO engagement_seen SELECT event_id FROM incoming ON CONFLICT DO NOTHING RETURNING event_id
), counted AS (
    INSERT INTO engagement_minutes (subject_event_id, minute, views, shares)
    SELECT subject_event_id, minute, sum(views), sum(shares) FROM incoming JOIN fresh USING (event_id)
    GROUP BY subject_event_id, minute
    ON CONFLICT (subject_event_id, minute) DO UPDATE
    SET views = engagement_minutes.views + EXCLUDED.views, shares = engagement_minutes.shares + EXCLUDED.shares
)
INSERT INTO audit_log (event_id, actor, action, source)
SELECT subject_event_id, user_id, 'reported by a user', source FROM incoming JOIN fresh USING (event_id) WHERE report
ON CONFLICT (source) DO NOTHING
"""

# Live priority: the queued priority times log10(10 + views per minute over the window), for the undecided
# items that had views in the window or were raised before (so they fall back once views stop); written
# only where it moves by more than the material share.
_RERANK = """
WITH velocity AS (
    SELECT i.event_id, i.base_priority * log(10 + coalesce(sum(e.views), 0) / %(window_minutes)s::float8) AS live
    FROM review_items i
    LEFT JOIN engagement_minutes e ON e.subject_event_id = i.subject_event_id AND e.minute >= %(since)s
    WHERE i.state <> 'decided'
      AND (i.priority <> i.base_priority
           OR EXISTS (SELECT 1 FROM engagement_minutes m WHERE m.subject_event_id = i.subject_event_id
                      AND m.minute >= %(since)s))
    GROUP BY i.event_id, i.base_priority
)
UPDATE review_items r SET priority = v.live
FROM velocity v
WHERE r.event_id = v.event_id AND abs(v.live - r.priority) > %(material)s * r.priority
RETURNING r.event_id
"""

# The most urgent item a reviewer may take: waiting, or claimed under a lease that has lapsed.
_CLAIM = """
UPDATE review_items
SET state = 'claimed', claimed_by = %(reviewer)s, claimed_at = clock_timestamp(),
    lease_expires = clock_timestamp() + make_interval(secs => %(lease_s)s)
WHERE event_id = (
    SELECT event_id FROM review_items
    WHERE state <> 'decided' AND (state = 'waiting' OR lease_expires < clock_timestamp())
      AND (%(senior)s OR NOT senior_only) AND excluded_reviewer IS DISTINCT FROM %(reviewer)s
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
RETURNING *
"""


class ReviewStore:
    """One connection's view of the store; not shared between threads (each reviewer's request, the
    consumer and each bench worker has its own)."""

    claim_sql = _CLAIM  # the bench swaps in its baseline
    def __init__(self, connection: psycopg.Connection, config: ReviewConfig):
        self._db = connection
        self.config = config
        self.lease_s = config.lease_s

    @classmethod
    def connect(cls, config: ReviewConfig) -> "ReviewStore":
        return cls(psycopg.connect(**config.connection_options(), row_factory=dict_row), config)

    def close(self) -> None:
        self._db.close()

    def enqueue(self, items: Sequence[Consumed[ReviewItem]], excluded_reviewer: str | None = None) -> int:
        """Stores the items not stored before, each with its audit row; returns how many were new."""
        rows = [c.record.model_dump(mode="json") | {"source": c.source, "excluded_reviewer": excluded_reviewer}
                for c in items]
        with self._db.transaction():
            return len(self._db.execute(_ENQUEUE, {"rows": Jsonb(rows)}).fetchall()) if rows else 0

    def enqueue_appeal(self, appeal: Consumed[Appeal]) -> bool:
        """Queues an appeal as an item above the ordinary queue, which the event's last reviewer may not
        claim; False if the event was appealed before. ``Rejected`` where there is nothing to appeal."""
        subject = appeal.record.subject_event_id
        original = self._db.execute("SELECT * FROM review_items WHERE event_id = %s", (subject,)).fetchone()
        last = self._db.execute("SELECT reviewer FROM verdicts v JOIN review_items i USING (event_id) "
                                "WHERE i.subject_event_id = %s ORDER BY v.decided_at DESC LIMIT 1", (subject,)).fetchone()
        self._db.commit()
        item = appeal_item(appeal.record, self._latest_decision(subject), None if original is None else _item(original),
                           self.config)
        return self.enqueue([Consumed(item, appeal.source)], last and last["reviewer"]) == 1

    def record_outputs(self, decisions: Sequence[Consumed[Decision]], alerts: Sequence[Consumed[ParentAlert]]) -> None:
        """Appends the job's decisions and parent alerts to the audit log (a re-delivered one adds nothing)."""
        rows = [_decision_row(c) for c in decisions] + [_alert_row(c) for c in alerts]
        if rows:
            with self._db.transaction():
                self._db.execute(_RECORD_OUTPUTS, {"rows": Jsonb(rows)})

    def record_engagement(self, records: Sequence[Consumed[Engagement]]) -> None:
        """Counts the views and shares of the records not counted before, per content event and minute,
        and appends each user report to the audit log."""
        rows = [{"event_id": c.record.event_id, "user_id": c.record.user_id, "subject_event_id": c.record.subject_event_id,
                 "minute": c.record.ts - c.record.ts % 60_000, "views": c.record.views, "shares": c.record.shares,
                 "report": c.record.report, "source": c.source} for c in records]
        if rows:
            with self._db.transaction():
                self._db.execute(_RECORD_ENGAGEMENT, {"rows": Jsonb(rows)})

    def rerank(self, now_ms: int) -> list[str]:
        """Sets each undecided item's live priority from its views per minute as of `now_ms`
        (`ReviewConfig.velocity_window_s`); returns the items whose priority moved materially."""
        window_ms = self.config.velocity_window_s * 1000
        since = now_ms - window_ms - now_ms % 60_000  # whole minutes, the current one included
        with self._db.transaction():
            rows = self._db.execute(_RERANK, {"window_minutes": window_ms / 60_000, "since": since,
                                              "material": self.config.material_change}).fetchall()
        return [row["event_id"] for row in rows]

    def claim_next(self, reviewer: str, senior: bool = False) -> ReviewItem | None:
        """The most urgent item `reviewer` may take, now claimed by them for `lease_s`; None if none waits."""
        with self._db.transaction():
            row = self._db.execute(self.claim_sql, {"reviewer": reviewer, "lease_s": self.lease_s, "senior": senior}).fetchone()
            if row is None:
                return None
            self._audit(row["subject_event_id"], reviewer, "claimed",
                        {"item": row["event_id"], "lease_expires": row["lease_expires"].isoformat()})
        return _item(row)

    def decide(self, event_id: str, reviewer: str, verdict: str, category: str | None = None,
               note: str = "") -> ModeratorDecision:
        """Ends `reviewer`'s live claim on `event_id` with a verdict, and returns the record to publish on
        moderator-decisions (already in the outbox). Refused without a live claim: the lease lapsed (the item
        may be someone else's now), the item was decided, or it was never claimed by this reviewer."""
        if verdict == "confirm" and not category:
            raise ReviewError("a confirmed violation needs its category")
        with self._db.transaction():
            ended = self._db.execute(_END_CLAIM, {"event_id": event_id, "reviewer": reviewer, "verdict": verdict}).fetchone()
            if ended is None:
                raise ReviewError(f"{reviewer} holds no live claim on {event_id}: claim it again from the queue")
            item, subject = _item(ended), ended["subject_event_id"]
            decision = ModeratorDecision(schema_version=SCHEMA_VERSION, event_id=f"md-{uuid.uuid4().hex}",
                                         moderator_id=reviewer, subject_event_id=subject, verdict=verdict,
                                         category=category, note=note, user_id=item.user_id)
            records = consequences(decision, item, self._latest_decision(subject), self._alerts(subject),
                                   self.config, int(time.time() * 1000))
            self._db.execute("INSERT INTO verdicts (decision_id, event_id, reviewer, verdict, category, note, outbox) "
                             "VALUES (%s, %s, %s, %s, %s, %s, %s)",
                             (decision.event_id, event_id, reviewer, verdict, category, note,
                              Jsonb([_outbox_json(r) for r in records])))
            self._audit(subject, reviewer, verdict, {"decision_id": decision.event_id, "item": event_id,
                                                     "category": category, "note": note,
                                                     "sends": [r.topic for r in records]})
        return decision

    def pending_publication(self, limit: int = 500) -> list[Publication]:
        """Verdicts not yet published, oldest first."""
        rows = self._db.execute("SELECT v.*, i.user_id, i.subject_event_id FROM verdicts v JOIN review_items i USING (event_id) "
                                "WHERE v.published_at IS NULL ORDER BY v.decided_at LIMIT %s", (limit,)).fetchall()
        self._db.commit()
        return [Publication(ModeratorDecision(schema_version=SCHEMA_VERSION, event_id=r["decision_id"],
                                              moderator_id=r["reviewer"], subject_event_id=r["subject_event_id"],
                                              verdict=r["verdict"], category=r["category"], note=r["note"],
                                              user_id=r["user_id"]), r["outbox"])
                for r in rows]

    def mark_published(self, decision_ids: Sequence[str]) -> None:
        with self._db.transaction():
            self._db.execute("UPDATE verdicts SET published_at = clock_timestamp() WHERE decision_id = ANY(%s)",
                             (list(decision_ids),))

    def undecided(self, limit: int = 50) -> list[tuple[ReviewItem, str]]:
        """The undecided items most urgent first, as claims take them, each with who holds it ("" if nobody)."""
        rows = self._db.execute("SELECT *, CASE WHEN state = 'claimed' AND lease_expires >= clock_timestamp() "
                                "THEN claimed_by ELSE '' END AS holder FROM review_items WHERE state <> 'decided' "
                                "ORDER BY priority DESC, created_ts LIMIT %s", (limit,)).fetchall()
        self._db.commit()
        return [(_item(row), row["holder"]) for row in rows]

    def claimed_item(self, event_id: str, reviewer: str) -> ReviewItem | None:
        """`event_id`'s item if `reviewer` holds a live claim on it."""
        row = self._db.execute("SELECT * FROM review_items WHERE event_id = %s AND state = 'claimed' AND claimed_by = %s "
                               "AND lease_expires >= clock_timestamp()", (event_id, reviewer)).fetchone()
        self._db.commit()
        return None if row is None else _item(row)

    def add_reviewer(self, name: str, role: str, password_hash: str) -> None:
        """Creates or replaces the account `name` (its role and password hash)."""
        with self._db.transaction():
            self._db.execute("INSERT INTO reviewers (name, role, password_hash) VALUES (%s, %s, %s) ON CONFLICT (name) "
                             "DO UPDATE SET role = EXCLUDED.role, password_hash = EXCLUDED.password_hash",
                             (name, role, password_hash))
            self._audit(f"reviewer:{name}", "lifeguard", "account set", {"role": role})

    def reviewers(self) -> list[dict]:
        rows = self._db.execute("SELECT name, role FROM reviewers ORDER BY name").fetchall()
        self._db.commit()
        return rows

    def reviewer(self, name: str) -> dict | None:
        """The account `name` ({name, role, password_hash}), or None."""
        row = self._db.execute("SELECT name, role, password_hash FROM reviewers WHERE name = %s", (name,)).fetchone()
        self._db.commit()
        return row

    def labels(self) -> list[dict]:
        """Every label the verdicts sent out (`review.verdicts`: confirmed or overturned messages), oldest
        first, as the labels topic carries them: the offline copy retraining reads."""
        rows = self._db.execute("SELECT entry -> 'value' AS label FROM verdicts, jsonb_array_elements(outbox) AS entry "
                                "WHERE entry ->> 'topic' = 'labels' ORDER BY decided_at").fetchall()
        self._db.commit()
        return [row["label"] for row in rows]

    def audit_between(self, start: datetime, end: datetime) -> list[dict]:
        """The audit log's rows from `start` to `end` (event_id, at, actor, action, record_kind, record), in order."""
        rows = self._db.execute("SELECT event_id, at, actor, action, record_kind, record FROM audit_log "
                                "WHERE at >= %s AND at < %s ORDER BY id", (start, end)).fetchall()
        self._db.commit()
        return rows

    def history(self, event_id: str) -> list[AuditEntry]:
        """Everything the audit log holds on `event_id`, in the order it happened."""
        rows = self._db.execute("SELECT at, actor, action, detail FROM audit_log WHERE event_id = %s ORDER BY id",
                                (event_id,)).fetchall()
        self._db.commit()
        return [AuditEntry(**row) for row in rows]

    def _latest_decision(self, event_id: str) -> Decision | None:
        row = self._db.execute("SELECT record FROM audit_log WHERE event_id = %s AND record_kind = 'decision' "
                               "ORDER BY id DESC LIMIT 1", (event_id,)).fetchone()
        return None if row is None else Decision.model_validate_json(json.dumps(row["record"]))

    def _alerts(self, event_id: str) -> list[ParentAlert]:
        rows = self._db.execute("SELECT record FROM audit_log WHERE event_id = %s AND record_kind = 'parent_alert' "
                                "ORDER BY id", (event_id,)).fetchall()
        return [ParentAlert.model_validate_json(json.dumps(row["record"])) for row in rows]

    def _audit(self, event_id: str, actor: str, action: str, detail: dict) -> None:
        self._db.execute("INSERT INTO audit_log (event_id, actor, action, detail) VALUES (%s, %s, %s, %s)",
                         (event_id, actor, action, Jsonb(detail)))


def _item(row: dict) -> ReviewItem:
    fields = {name: row[name] for name in ITEM_FIELDS if name in row} | {"schema_version": SCHEMA_VERSION}
    if row["subject_event_id"] == row["event_id"]:  # an item on its own event, not an appeal
        fields["subject_event_id"] = None
    return ReviewItem.model_validate(fields)


def _outbox_json(record: OutboxRecord) -> dict:
    return {"topic": record.topic, "key": record.key, "value": record.value.model_dump(mode="json")}


def _decision_row(consumed: Consumed[Decision]) -> dict:
    decision = consumed.record
    correction = decision.supersedes is not None
    return {"event_id": decision.event_id, "source": consumed.source, "record_kind": "decision",
            "record": decision.model_dump(mode="json"),
            "actor": "lifeguard review" if correction else f"policy {decision.policy_version}, model {decision.model_version}",
            "action": f"decided {decision.action.value}" + (" (correction)" if correction else ""),
            "detail": {"reasons": decision.reasons, "age_band": decision.age_band.value,
                       **({"supersedes": decision.supersedes.decided_ts} if correction else {})}}


def _alert_row(consumed: Consumed[ParentAlert]) -> dict:
    alert = consumed.record
    return {"event_id": alert.event_id, "source": consumed.source, "record_kind": "parent_alert",
            "record": alert.model_dump(mode="json"), "actor": "lifeguard",
            "action": f"alerted parent {alert.parent_id} ({alert.kind}, {alert.severity})",
            "detail": {"child_role": alert.child_role, "summary": alert.summary}}
