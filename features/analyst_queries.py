"""Point-in-time questions analysts ask of Feast's offline store (docs/analysts.md walks through them).

Both build an entity frame (who, as of when) and let ``get_historical_features`` pick, for each row, the
latest feature values at or before that time: no value from the future leaks into a past answer.
"""
from __future__ import annotations

from datetime import date, timedelta

import pandas as pd

from features.screen_time import local_day_end_ms


def stranger_minutes_per_day(store, children: pd.DataFrame, last_day: date, days: int = 7) -> pd.DataFrame:
    """Stranger minutes per child per local day, for ``days`` days up to ``last_day``.

    ``children``: columns ``user_id`` and ``timezone`` (e.g. the under-13s from ``user_profile``). Each
    (child, day) is asked as of the last millisecond of that local day, so the answer is the day's total
    as the job had computed it by then; a row whose ``day`` is not the day asked means the child had no
    activity that day (0 minutes).
    """
    rows = []
    for child in children.itertuples():
        for back in range(days):
            day = (last_day - timedelta(days=back)).isoformat()
            as_of = pd.Timestamp(local_day_end_ms(day, child.timezone) - 1, unit="ms", tz="UTC")
            rows.append({"user_id": child.user_id, "event_timestamp": as_of, "asked_day": day})
    entities = pd.DataFrame(rows)
    features = [f"child_daily:{name}" for name in ("day", "stranger_minutes", "older_stranger_minutes",
                                                   "stranger_dm_minutes", "screen_minutes")]
    found = store.get_historical_features(entity_df=entities, features=features).to_df()
    # The file offline store leaves out entity rows older than a child's first row: put them back.
    frame = entities.merge(found.drop(columns="event_timestamp"), on=["user_id", "asked_day"], how="left")
    same_day = frame["day"] == frame["asked_day"]
    for column in ("stranger_minutes", "older_stranger_minutes", "stranger_dm_minutes", "screen_minutes"):
        frame[column] = frame[column].where(same_day, 0).fillna(0)
    return (frame[["user_id", "asked_day", "stranger_minutes", "older_stranger_minutes", "stranger_dm_minutes",
                   "screen_minutes"]].rename(columns={"asked_day": "day"})
            .sort_values(["user_id", "day"]).reset_index(drop=True))


def rising_violation_rate(store, user_ids: list[str], as_of: pd.Timestamp, min_decisions: int = 3,
                          factor: float = 2.0) -> pd.DataFrame:
    """Users whose violation rate over the last 24 h is at least ``factor`` times their 7-day rate a day
    earlier (with at least ``min_decisions`` decisions in the last 24 h), as of ``as_of``."""
    entities = pd.DataFrame({"user_id": list(user_ids) * 2,
                             "event_timestamp": [as_of] * len(user_ids) + [as_of - pd.Timedelta(days=1)] * len(user_ids)})
    frame = store.get_historical_features(entity_df=entities, features=[
        "user_behaviour:violation_rate_24h", "user_behaviour:violation_rate_7d", "user_behaviour:decisions_24h",
        "user_behaviour:violations_24h"]).to_df()
    now = frame[frame["event_timestamp"] == as_of].set_index("user_id")
    before = frame[frame["event_timestamp"] == as_of - pd.Timedelta(days=1)].set_index("user_id")
    joined = now.join(before["violation_rate_7d"].rename("baseline_rate_7d")).fillna(0)
    rising = joined[(joined["decisions_24h"] >= min_decisions)
                    & (joined["violation_rate_24h"] >= factor * joined["baseline_rate_7d"])
                    & (joined["violation_rate_24h"] > 0)]
    return (rising[["violation_rate_24h", "baseline_rate_7d", "violations_24h", "decisions_24h"]]
            .sort_values("violation_rate_24h", ascending=False).reset_index())
