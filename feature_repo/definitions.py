"""Feast declarations, top to bottom: entity -> source -> view -> service.

The profile view's fields are those of ``features.profiles.UserProfile`` (a test checks they agree).
Profiles land in the offline store as parquet (for point-in-time queries) and in the Redis online
store (for the job), both written by ``features.feast_store.load_profiles``. ``declare`` takes the
offline data directory so that the job, the tests and the ``feast`` CLI (module-level objects below,
from Lifeguard's configuration) each point at their own files.
"""
from datetime import timedelta
from pathlib import Path

from feast import Entity, FeatureService, FeatureView, Field, FileSource, ValueType
from feast.types import Array, Bool, Float64, Int64, String

from lifeguard.config import load_config

PROFILES_PARQUET = "user_profiles.parquet"


def declare(data_dir: Path) -> tuple[Entity, FileSource, FeatureView, FeatureService]:
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
            Field(name="dm_policy", dtype=String, description="parental setting: everyone, friends, nobody"),
            Field(name="daily_limit_minutes", dtype=Int64, description="parental screen-time limit; 0: none"),
            Field(name="timezone", dtype=String),
        ],
        online=True,
        source=user_profile_source,
    )

    moderation = FeatureService(name="moderation", features=[user_profile])
    return user, user_profile_source, user_profile, moderation


_cfg = load_config()
user, user_profile_source, user_profile, moderation = declare(_cfg.path(_cfg.feast.data_dir))
