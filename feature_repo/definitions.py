"""Feast declarations, top to bottom: entity -> source -> view -> service.

Two kinds of view:
- ``user_profile``: snapshots loaded in bulk (``features.feast_store.load_profiles``).
- ``child_daily`` and ``user_behaviour``: features the feature job computes and pushes as it goes
  (``features.feature_push``), through push sources, to Redis for serving and to their parquet files for
  point-in-time queries (see docs/analysts.md). Their fields are those of ``features.child_day.DayTotals``
  and ``features.behaviour.BehaviourRow`` (a test checks they agree).

The profile view's fields are those of ``lifeguard.profiles.UserProfile`` (a test checks they agree).
Profiles land in the offline store as parquet (for point-in-time queries) and in the Redis online
store (for the job), both written by ``features.feast_store.load_profiles``. ``declare`` takes the
offline data directory so that the job, the tests and the ``feast`` CLI (module-level objects below,
from Lifeguard's configuration) each point at their own files.
"""
from datetime import timedelta
from pathlib import Path

from feast import Entity, FeatureService, FeatureView, Field, FileSource, PushSource, ValueType
from feast.types import Array, Bool, Float64, Int64, String

from lifeguard.config import load_config

PROFILES_PARQUET = "user_profiles.parquet"
CHILD_DAILY_PARQUET = "child_daily.parquet"
USER_BEHAVIOUR_PARQUET = "user_behaviour.parquet"


def declare(data_dir: Path) -> tuple:
    user = Entity(name="user", join_keys=["user_id"], value_type=ValueType.STRING,
                  description="A platform account (child, teen or adult).")

    user_profile_source = FileSource(
        name="user_profile_source",
        path=str(data_dir / PROFILES_PARQUET),
        timestamp_field="event_timestamp",
        created_timestamp_column="created",
    )

    user_profile = FeatureView(
        name="user_profile",
        entities=[user],
        # Profiles are snapshots that stay valid until replaced.
        ttl=timedelta(days=3650),
        schema=[
            Field(name="age_band", dtype=String, description="under_13, 13_15, 16_17, adult; empty: unknown"),
            Field(name="age_verified", dtype=Bool),
            Field(name="account_created_ts", dtype=Int64, description="epoch milliseconds"),
            Field(name="reputation", dtype=Float64, description="0 (bad) .. 1 (good)"),
            Field(name="friend_ids", dtype=Array(String)),
            Field(name="parent_id", dtype=String, description="linked parent account; empty: none"),
            Field(name="dm_policy", dtype=String, description="parental setting, direct messages: everyone, friends, nobody"),
            Field(name="image_policy", dtype=String, description="parental setting, images sent to the child: everyone, friends, nobody"),
            Field(name="daily_limit_minutes", dtype=Int64, description="parental screen-time limit; 0: none"),
            Field(name="timezone", dtype=String),
            Field(name="alert_delivery", dtype=String, description="parental setting: instant, daily_digest"),
        ],
        online=True,
        source=user_profile_source,
    )

    moderation = FeatureService(name="moderation", features=[user_profile])

    # Pushed by the feature job: one row per child and local day, updated as the day goes on. A row's
    # event_timestamp is the event time of its latest update, so "as of the end of day D" is D's total.
    child_daily_push = PushSource(name="child_daily_push", batch_source=FileSource(
        name="child_daily_source", path=str(data_dir / CHILD_DAILY_PARQUET), timestamp_field="event_timestamp"))
    child_daily = FeatureView(
        name="child_daily",
        entities=[user],
        # Serving today's (or yesterday's) totals; older days are for point-in-time queries.
        ttl=timedelta(days=2),
        schema=[
            Field(name="day", dtype=String, description="local date (profile time zone) the totals are for"),
            Field(name="screen_minutes", dtype=Float64, description="time online that day"),
            Field(name="stranger_minutes", dtype=Float64, description="time in a room with a non-friend"),
            Field(name="older_stranger_minutes", dtype=Float64,
                  description="time in a room with a non-friend adult or one two age bands older"),
            Field(name="stranger_dm_minutes", dtype=Int64,
                  description="clock minutes with a direct message to or from a non-friend"),
        ],
        online=True,
        source=child_daily_push,
    )

    user_behaviour_push = PushSource(name="user_behaviour_push", batch_source=FileSource(
        name="user_behaviour_source", path=str(data_dir / USER_BEHAVIOUR_PARQUET), timestamp_field="event_timestamp"))
    user_behaviour = FeatureView(
        name="user_behaviour",
        entities=[user],
        ttl=timedelta(days=7),
        schema=[
            Field(name="messages_1h", dtype=Int64),
            Field(name="messages_per_minute_1h", dtype=Float64),
            Field(name="decisions_24h", dtype=Int64),
            Field(name="violations_1h", dtype=Int64, description="decisions warn, shadow or block"),
            Field(name="violations_24h", dtype=Int64),
            Field(name="violations_7d", dtype=Int64),
            Field(name="flagged_24h", dtype=Int64, description="decisions review"),
            Field(name="violation_rate_24h", dtype=Float64, description="violations / decisions"),
            Field(name="violation_rate_7d", dtype=Float64),
            Field(name="violations_by_category_7d", dtype=String, description="JSON object category -> count"),
            Field(name="new_contacts_24h", dtype=Int64, description="first direct messages to someone"),
            Field(name="minor_dm_share_24h", dtype=Float64, description="share of direct messages sent to minors"),
            Field(name="minors_contacted_24h", dtype=Int64, description="distinct non-friend minors written to"),
        ],
        online=True,
        source=user_behaviour_push,
    )

    child_safety = FeatureService(name="child_safety", features=[user_profile, child_daily, user_behaviour])
    return (user, user_profile_source, user_profile, moderation, child_daily_push, child_daily,
            user_behaviour_push, user_behaviour, child_safety)


_cfg = load_config()
(user, user_profile_source, user_profile, moderation, child_daily_push, child_daily, user_behaviour_push,
 user_behaviour, child_safety) = declare(_cfg.path(_cfg.feast.data_dir))
