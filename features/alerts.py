"""Parent alerts for the child-safety features: named parent, de-duplication, daily digest.

A feature raises an ``AlertCandidate`` for a child; ``AlertGate`` (one per child, kept in the job's keyed
state) turns it into a ``ParentAlert`` for the parent linked in the child's Feast profile:
- no parent linked: no alert (the job counts it in a metric);
- the same child, kind and severity already alerted within ``alert_dedup_ms``: suppressed (counted);
- the parent chose a daily digest (profile ``alert_delivery == "daily_digest"``): held, and sent as one
  alert per kind when the child's local day ends (``flush_digest``).
Alert ids are derived from the child, kind, severity and day, so a repeat after a restore is recognisable.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field

from lifeguard.profiles import UserProfile
from lifeguard.schemas import ParentAlert

DIGEST = "daily_digest"


@dataclass(frozen=True)
class AlertCandidate:
    child_id: str
    kind: str  # a ParentAlert kind: stranger_time, screen_time, age_mismatch
    severity: str  # info, warning, urgent
    day: str  # the child's local day
    summary: str
    reasons: tuple[str, ...]
    event_ts: int


@dataclass
class AlertGate:
    dedup_ms: int
    last_sent: dict[str, int] = field(default_factory=dict)  # "kind:severity" -> event time sent
    digest: list[dict] = field(default_factory=list)  # held candidates (asdict)
    no_parent: int = 0
    suppressed: int = 0

    def admit(self, candidate: AlertCandidate, child: UserProfile, now_ms: int) -> list[ParentAlert]:
        if not child.parent_id:
            self.no_parent += 1
            return []
        key = f"{candidate.kind}:{candidate.severity}"
        last = self.last_sent.get(key)
        if last is not None and candidate.event_ts - last < self.dedup_ms:
            self.suppressed += 1
            return []
        self.last_sent[key] = candidate.event_ts
        if child.alert_delivery == DIGEST:
            self.digest.append(asdict(candidate))
            return []
        return [_alert(candidate, child.parent_id, now_ms)]

    def flush_digest(self, child: UserProfile, day: str, now_ms: int) -> list[ParentAlert]:
        """One alert per kind for the candidates held for ``day`` (and any earlier day)."""
        due = [AlertCandidate(**{**c, "reasons": tuple(c["reasons"])}) for c in self.digest if c["day"] <= day]
        self.digest = [c for c in self.digest if c["day"] > day]
        if not due or not child.parent_id:
            return []
        alerts = []
        for kind in sorted({c.kind for c in due}):
            of_kind = [c for c in due if c.kind == kind]
            worst = max(of_kind, key=lambda c: _SEVERITY.index(c.severity))
            digest = AlertCandidate(
                child.user_id, kind, worst.severity, day,
                f"Daily digest for {day}: {len(of_kind)} notice(s). " + " ".join(c.summary for c in of_kind),
                tuple(r for c in of_kind for r in c.reasons), max(c.event_ts for c in of_kind))
            alerts.append(_alert(digest, child.parent_id, now_ms, suffix="digest"))
        return alerts

    def to_dict(self) -> dict:
        return {"last_sent": self.last_sent, "digest": self.digest}

    def forget_before(self, ts_ms: int) -> None:
        """Drops de-duplication entries older than the window: they can no longer suppress anything."""
        self.last_sent = {k: t for k, t in self.last_sent.items() if t >= ts_ms - self.dedup_ms}


_SEVERITY = ["info", "warning", "urgent"]


def _alert(candidate: AlertCandidate, parent_id: str, now_ms: int, suffix: str = "") -> ParentAlert:
    event_id = f"{candidate.kind}:{candidate.child_id}:{candidate.day}"
    alert_id = f"{event_id}:{candidate.severity}" + (f":{suffix}" if suffix else "")
    return ParentAlert(alert_id=alert_id, event_id=event_id, parent_id=parent_id, child_id=candidate.child_id,
                       kind=candidate.kind, severity=candidate.severity, child_role="subject",
                       summary=candidate.summary, reasons=list(candidate.reasons), created_ts=now_ms)
