"""Per-child summary for the demo: today's screen time and stranger time from Feast, and the alerts raised."""
from __future__ import annotations

from collections import Counter
from typing import Iterable

from tabulate import tabulate

SUMMARY_FEATURES = ("day", "screen_minutes", "stranger_minutes", "older_stranger_minutes", "stranger_dm_minutes")


def child_rows(store, child_ids: list[str], alerts: Iterable[dict], limit: int = 10) -> list[list]:
    """One row per child with features or alerts (most screen time first, at most ``limit``): child, day,
    screen, stranger, older stranger and DM minutes, and the distinct alerts by kind."""
    online = store.get_online_features(features=[f"child_daily:{name}" for name in SUMMARY_FEATURES],
                                       entity_rows=[{"user_id": c} for c in child_ids]).to_dict()
    by_child: dict[str, Counter] = {}
    for alert in {a["alert_id"]: a for a in alerts}.values():  # delivery is at-least-once
        by_child.setdefault(alert["child_id"], Counter())[alert["kind"]] += 1
    rows = []
    for i, child in enumerate(child_ids):
        if online["day"][i] is None and child not in by_child:
            continue
        kinds = by_child.get(child, Counter())
        rows.append([child, online["day"][i] or "", round(online["screen_minutes"][i] or 0, 1),
                     round(online["stranger_minutes"][i] or 0, 1), round(online["older_stranger_minutes"][i] or 0, 1),
                     online["stranger_dm_minutes"][i] or 0,
                     ", ".join(f"{kind} x{n}" for kind, n in sorted(kinds.items())) or "-"])
    rows.sort(key=lambda row: (-row[2], row[0]))
    return rows[:limit]


def child_summary(store, child_ids: list[str], alerts: Iterable[dict], limit: int = 10) -> str:
    rows = child_rows(store, child_ids, alerts, limit)
    return tabulate(rows, headers=["child", "local day", "screen min", "stranger min", "older-stranger min",
                                   "stranger DM min", "alerts"], tablefmt="github")
