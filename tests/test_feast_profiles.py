import time

import pytest

from conftest import isolated_environ
from feature_repo.definitions import user_profile
from features.behaviour import BehaviourRow
from features.feast_store import ProfileLookup, apply_definitions, load_profiles, open_store
from features.feature_push import FeaturePusher
from lifeguard.profiles import PROFILE_FEATURES, UserProfile
from lifeguard.config import load_config
from lifeguard.schemas import AgeBand

CHILD = UserProfile("kid-1", AgeBand.UNDER_13, friend_ids=("kid-2",), parent_id="p-kid-1", daily_limit_minutes=90)
ADULT = UserProfile("adult-1", AgeBand.ADULT, age_verified=True, reputation=0.9)
OFFENDER = UserProfile("adult-2", AgeBand.ADULT)


def test_feast_view_declares_exactly_the_profile_fields():
    assert sorted(f.name for f in user_profile.schema) == sorted(PROFILE_FEATURES)


@pytest.fixture(scope="module")
def loaded(services, tmp_path_factory):
    cfg = load_config(environ=isolated_environ(tmp_path_factory.mktemp("feast")))
    store = open_store(cfg)
    apply_definitions(cfg, store)
    load_profiles(cfg, store, [CHILD, ADULT, OFFENDER])
    return cfg, store


def test_profiles_round_trip_through_redis(loaded):
    cfg, store = loaded
    found = ProfileLookup(store, 60, 100, 5).profiles(["kid-1", "adult-1"])
    assert found["kid-1"] == CHILD and found["adult-1"] == ADULT
    assert found["kid-1"].fallback_reason is None


def test_unknown_user_is_treated_as_youngest(loaded):
    _, store = loaded
    stranger = ProfileLookup(store, 60, 100, 5).profiles(["nobody"])["nobody"]
    assert stranger.fallback_reason == "unknown user"
    assert stranger.effective_age_band is AgeBand.UNDER_13


def test_offline_store_answers_point_in_time_queries(loaded):
    import pandas as pd

    _, store = loaded
    entities = pd.DataFrame({"user_id": ["kid-1"], "event_timestamp": [pd.Timestamp.now(tz="UTC")]})
    frame = store.get_historical_features(entity_df=entities, features=["user_profile:age_band",
                                                                       "user_profile:parent_id"]).to_df()
    assert frame.loc[0, "age_band"] == "under_13" and frame.loc[0, "parent_id"] == "p-kid-1"


class CountingStore:
    def __init__(self, store):
        self.store, self.calls = store, 0

    def get_online_features(self, **kwargs):
        self.calls += 1
        return self.store.get_online_features(**kwargs)


def test_cache_spares_redis_a_round_trip(loaded):
    _, store = loaded
    counting = CountingStore(store)
    lookup = ProfileLookup(counting, 60, 100, 5)
    lookup.profiles(["kid-1"])
    lookup.profiles(["kid-1"])
    assert counting.calls == 1


def test_dead_redis_falls_back_quickly_and_stops_asking(loaded, tmp_path):
    cfg, _ = loaded
    dead = load_config(environ={**isolated_environ(tmp_path), "LIFEGUARD_REDIS__PORT": "1",
                                "LIFEGUARD_FEAST__DATA_DIR": str(cfg.path(cfg.feast.data_dir)),
                                "LIFEGUARD_FEAST__PROJECT": cfg.feast.project})
    lookup = ProfileLookup.from_config(dead)
    started = time.monotonic()
    first = lookup.profiles(["kid-1"])["kid-1"]
    second = lookup.profiles(["adult-1"])["adult-1"]
    assert time.monotonic() - started < 2.0
    assert first.fallback_reason.startswith("feature store unavailable")
    assert second.effective_age_band is AgeBand.UNDER_13
    assert lookup.failures == 1  # the breaker kept the second batch from waiting on Redis again


def behaviour_row(user_id: str, violations_7d: int) -> BehaviourRow:
    return BehaviourRow(user_id=user_id, event_ts=int(time.time() * 1000), messages_1h=4, messages_per_minute_1h=0.07,
                        decisions_24h=6, violations_1h=1, violations_24h=2, violations_7d=violations_7d, flagged_24h=0,
                        violation_rate_24h=0.33, violation_rate_7d=0.3, violations_by_category_7d='{"toxicity": 3}',
                        new_contacts_24h=1, minor_dm_share_24h=0.0, minors_contacted_24h=0)


def test_lookup_reads_pushed_behaviour_with_the_profile_in_one_call(loaded):
    _, store = loaded
    pusher = FeaturePusher(store, batch_rows=100, interval_ms=1000)
    pusher.add("user_behaviour", behaviour_row("adult-2", violations_7d=3))
    pusher.add("user_behaviour", behaviour_row("no-profile", violations_7d=5))
    assert pusher.flush() == 2 and pusher.failures == 0
    counting = CountingStore(store)
    found = ProfileLookup(counting, 60, 100, 5).profiles(["adult-2", "kid-1", "no-profile"])
    assert counting.calls == 1
    assert found["adult-2"].violations_7d == 3 and found["adult-2"].age_band is AgeBand.ADULT
    assert found["adult-2"].has_history and found["adult-2"].fallback_reason is None
    assert found["kid-1"].violations_7d is None and not found["kid-1"].has_history  # nothing pushed: no history
    # A user Feast has no profile for still brings its behaviour (and is treated as the youngest).
    assert found["no-profile"].violations_7d == 5 and found["no-profile"].fallback_reason == "unknown user"


def test_a_parents_changed_contact_setting_reaches_a_running_lookup_after_the_cache_time(loaded):
    cfg, store = loaded
    ttl_s = 0.5
    lookup = ProfileLookup(store, ttl_s, 100, 5)
    assert (lookup.profiles(["kid-1"])["kid-1"].dm_policy, lookup.profiles(["kid-1"])["kid-1"].image_policy) == \
        ("friends", "friends")
    relaxed = UserProfile("kid-1", AgeBand.UNDER_13, friend_ids=("kid-2",), parent_id="p-kid-1",
                          daily_limit_minutes=90, dm_policy="everyone", image_policy="nobody")
    load_profiles(cfg, store, [relaxed])
    try:
        time.sleep(ttl_s + 0.1)
        changed = lookup.profiles(["kid-1"])["kid-1"]
        assert (changed.dm_policy, changed.image_policy) == ("everyone", "nobody")
    finally:
        load_profiles(cfg, store, [CHILD])
