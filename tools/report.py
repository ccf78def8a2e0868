"""`lifeguard report`: what moderation did over a time range, from the review store's audit log.

- Actions by category: the automated decisions (the latest on each event, so a reviewer's correction
  replaces the decision it supersedes), by action and by the category in their reasons.
- Appeal overturn rate: overturned appeals / harmful items detected (events decided with any action but
  allow), and overturned / decided appeals beside it.
- Proactive rate: detected / (detected + reported by users), "reported" being the events users reported
  (``engagement`` records with ``report``) that the automated decision had allowed: what the models missed.
- Time to claim: from an item's queueing to its first claim, p50 / p90 / p99, with a histogram (`--chart`).
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import numpy as np
from tabulate import tabulate

from features.behaviour import decision_categories


@dataclass
class Report:
    start: datetime
    end: datetime
    actions: Counter = field(default_factory=Counter)  # (action, category) -> events
    detected: int = 0
    appeals_decided: int = 0
    appeals_overturned: int = 0
    reported_by_users: int = 0
    claim_waits_s: list[float] = field(default_factory=list)

    @property
    def appeal_overturn_rate(self) -> float | None:
        return self.appeals_overturned / self.detected if self.detected else None

    @property
    def proactive_rate(self) -> float | None:
        total = self.detected + self.reported_by_users
        return self.detected / total if total else None


def build_report(rows: list[dict], start: datetime, end: datetime) -> Report:
    """The report of the audit rows (`ReviewStore.audit_between`), pure."""
    report = Report(start, end)
    latest: dict[str, dict] = {}
    queued: dict[str, datetime] = {}
    claimed: set[str] = set()
    appeal_items: set[str] = set()
    reported: set[str] = set()
    for row in rows:
        if row["record_kind"] == "decision":
            latest[row["event_id"]] = row["record"]
        elif row["action"] in ("queued for review", "appealed"):
            queued.setdefault(row["event_id"], row["at"])
        elif row["action"] == "claimed" and row["event_id"] in queued and row["event_id"] not in claimed:
            claimed.add(row["event_id"])
            report.claim_waits_s.append((row["at"] - queued[row["event_id"]]).total_seconds())
        if row["action"] == "reported by a user":
            reported.add(row["event_id"])
        if row["action"] == "appealed":
            appeal_items.add(row["event_id"])
            claimed.discard(row["event_id"])  # the appeal's own first claim counts too
            queued[row["event_id"]] = row["at"]
        elif row["action"] in ("overturn", "confirm") and row["event_id"] in appeal_items:
            report.appeals_decided += 1
            report.appeals_overturned += row["action"] == "overturn"
            appeal_items.discard(row["event_id"])
    for event_id, record in latest.items():
        first = record["supersedes"] if record.get("supersedes") else record
        if first["action"] != "allow":
            report.detected += 1
        elif event_id in reported:
            report.reported_by_users += 1
        for category in decision_categories(record["reasons"]) if record["action"] != "allow" else ["-"]:
            report.actions[record["action"], category] += 1
    return report


def render(report: Report, chart: Path | None = None) -> str:
    def share(value: float | None) -> str:
        return "n/a (nothing detected)" if value is None else f"{value:.1%}"

    waits = np.array(report.claim_waits_s)
    lines = [f"Moderation report {report.start.isoformat()} to {report.end.isoformat()} (the review store's audit log)",
             "", tabulate([[a, c, n] for (a, c), n in sorted(report.actions.items())],
                          headers=["action (latest decision)", "category", "events"], tablefmt="github"), "",
             f"harmful items detected (first decision not allow): {report.detected}",
             f"appeal overturn rate (overturned appeals / detected): {share(report.appeal_overturn_rate)} "
             f"({report.appeals_overturned} of {report.appeals_decided} decided appeals overturned)",
             f"proactive rate (detected / (detected + reported by users)): {share(report.proactive_rate)} "
             f"({report.reported_by_users} allowed events reported by users)"]
    if len(waits):
        p50, p90, p99 = np.percentile(waits, [50, 90, 99])
        lines.append(f"time to claim, {len(waits)} items: p50 {p50:.1f} s, p90 {p90:.1f} s, p99 {p99:.1f} s")
    else:
        lines.append("time to claim: no item was claimed in the range")
    if chart is not None and len(waits):
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        figure, axis = plt.subplots(figsize=(7, 3.5))
        axis.hist(waits / 60, bins=30, color="#14365d")
        axis.set_xlabel("minutes from queueing to first claim")
        axis.set_ylabel("items")
        axis.set_title("Time to claim")
        figure.tight_layout()
        figure.savefig(chart, dpi=110)
        plt.close(figure)
        lines.append(f"chart: {chart}")
    return "\n".join(lines)
