"""Pushed child-safety features in Feast (real Redis, real parquet): batching, online reads, point-in-time
offline reads, and the analysts' two queries."""
from __future__ import annotations

from dataclasses import fields
from datetime import date

import pandas as pd
import pytest

from conftest import isolated_environ
from feature_repo.definitions import child_daily, user_behaviour
from features.analyst_queries import rising_violation_rate, stranger_minutes_per_day
from features.behaviour import BehaviourRow
from features.child_day import DayTotals
from features.feast_store import apply_definitions, open_store
from features.feature_push import FeaturePusher
from lifeguard.config import load_config

MIN = 60_000
DAY1_END_NY = 1_767_330_000_000  # 2026-01-02T05:00Z: midnight 2026-01-01/02 in New York
H = 3_600_000


def behaviour(user, ts, rate_24h, rate_7d, decisions=10) -> BehaviourRow:
    return BehaviourRow(user, ts, 5, 0.08, decisions, 0, int(rate_24h * decisions), 3, 0, rate_24h, rate_7d, "{}",
                        1, 0.0, 0)


@pytest.mark.parametrize("view, row_type", [(child_daily, DayTotals), (user_behaviour, BehaviourRow)])
def test_views_declare_exactly_the_pushed_fields(view, row_type):
    pushed = {f.name for f in fields(row_type)} - {"user_id", "event_ts"}
    assert {f.name for f in view.schema} == pushed


class RecordingStore:
    def __init__(self):
        self.pushes = []

    def push(self, source, frame, to):
        self.pushes.append((source, frame))


def test_pusher_batches_and_keeps_the_latest_row_per_user_and_day():
    clock = [0.0]
    store = RecordingStore()
    pusher = FeaturePusher(store, batch_rows=3, interval_ms=1000, clock=lambda: clock[0])
    for minutes in range(100):  # a hundred updates of one child's day are one row
        pusher.add("child_daily", DayTotals("kid", "2026-01-01", minutes, 0, 0, 0, minutes * MIN))
    pusher.add("child_daily", DayTotals("kid", "2025-12-31", 5, 0, 0, 0, 0))
    assert pusher.waiting == 2 and not pusher.due()
    clock[0] = 1.0
    assert pusher.due() and pusher.flush() == 2
    (source, frame), = store.pushes
    assert source == "child_daily_push" and sorted(frame["screen_minutes"]) == [5, 99]
    pusher.add("user_behaviour", behaviour("a", 0, 0, 0))
    pusher.add("user_behaviour", behaviour("b", 0, 0, 0))
    pusher.add("child_daily", DayTotals("kid", "2026-01-02", 1, 0, 0, 0, 0))
    assert pusher.due() and pusher.flush() == 3 and len(store.pushes) == 3  # one push per view


@pytest.fixture(scope="module")
def store(services, tmp_path_factory):
    cfg = load_config(environ=isolated_environ(tmp_path_factory.mktemp("feast-features")))
    store = open_store(cfg)
    apply_definitions(cfg, store)
    return store


def test_pushed_rows_are_served_online_and_kept_offline(store):
    pusher = FeaturePusher(store, batch_rows=100, interval_ms=1000)
    # Day 1 (New York): 12 stranger minutes by its end; day 2: 3 so far.
    pusher.add("child_daily", DayTotals("kid", "2026-01-01", 50, 10, 4, 2, DAY1_END_NY - 10 * MIN))
    pusher.flush()
    pusher.add("child_daily", DayTotals("kid", "2026-01-01", 55, 12, 4, 2, DAY1_END_NY - MIN))
    pusher.add("child_daily", DayTotals("kid", "2026-01-02", 20, 3, 0, 0, DAY1_END_NY + 60 * MIN))
    pusher.add("user_behaviour", behaviour("adult", DAY1_END_NY, 0.5, 0.1))
    assert pusher.flush() == 3 and pusher.failures == 0
    online = store.get_online_features(features=["child_daily:day", "child_daily:stranger_minutes",
                                                 "user_behaviour:violation_rate_24h"],
                                       entity_rows=[{"user_id": "kid"}, {"user_id": "adult"}]).to_dict()
    assert online["day"][0] == "2026-01-02" and online["stranger_minutes"][0] == 3
    assert online["violation_rate_24h"][1] == 0.5
    # Point in time: as of just before the end of day 1, day 1's last total (not the earlier one, not day 2).
    entities = pd.DataFrame({"user_id": ["kid", "kid"], "event_timestamp": [
        pd.Timestamp(DAY1_END_NY - 5 * MIN, unit="ms", tz="UTC"), pd.Timestamp(DAY1_END_NY - 1, unit="ms", tz="UTC")]})
    offline = store.get_historical_features(entity_df=entities, features=[
        "child_daily:day", "child_daily:stranger_minutes"]).to_df().sort_values("event_timestamp")
    assert list(offline["stranger_minutes"]) == [10, 12] and set(offline["day"]) == {"2026-01-01"}


def test_analyst_queries(store):
    pusher = FeaturePusher(store, batch_rows=100, interval_ms=1000)
    pusher.add("child_daily", DayTotals("kid2", "2026-01-01", 30, 7, 2, 1, DAY1_END_NY - 30 * MIN))
    pusher.add("user_behaviour", behaviour("steady", DAY1_END_NY - 24 * H, 0.1, 0.1))
    pusher.add("user_behaviour", behaviour("rising", DAY1_END_NY - 24 * H, 0.1, 0.1))
    pusher.flush()
    pusher.add("user_behaviour", behaviour("steady", DAY1_END_NY - H, 0.1, 0.1))
    pusher.add("user_behaviour", behaviour("rising", DAY1_END_NY - H, 0.6, 0.2))
    pusher.flush()
    children = pd.DataFrame({"user_id": ["kid2"], "timezone": ["America/New_York"]})
    per_day = stranger_minutes_per_day(store, children, date(2026, 1, 2), days=3)
    assert list(per_day["day"]) == ["2025-12-31", "2026-01-01", "2026-01-02"]
    assert list(per_day["stranger_minutes"]) == [0, 7, 0]
    rising = rising_violation_rate(store, ["steady", "rising"], pd.Timestamp(DAY1_END_NY, unit="ms", tz="UTC"))
    assert list(rising["user_id"]) == ["rising"] and rising.loc[0, "baseline_rate_7d"] == 0.1


def test_rows_waiting_for_a_push_survive_a_restart_through_their_state_entries():
    before = FeaturePusher(RecordingStore(), batch_rows=100, interval_ms=1000)
    before.add("child_daily", DayTotals("kid", "2026-01-01", 40, 5, 1, 0, 40 * MIN))
    key = before.add("user_behaviour", behaviour("ad\x1fult|", 0, 0.5, 0.1))  # any character an id may hold
    entries = before.pending_entries()  # what the checkpoint holds
    assert set(before.pending_entries([key])) == {key} and len(entries) == 2
    store = RecordingStore()
    after = FeaturePusher(store, batch_rows=100, interval_ms=1000)
    after.restore(entries.values())
    assert after.pending_entries() == entries and after.flush() == 2
    pushed = {source: frame for source, frame in store.pushes}
    assert list(pushed["child_daily_push"]["screen_minutes"]) == [40]
    assert list(pushed["user_behaviour_push"]["violation_rate_24h"]) == [0.5]
    assert after.pending_entries() == {}
