"""Feast access for Lifeguard: opening the store, loading profiles, and the job's profile look-up.

The job calls ``ProfileLookup.profiles`` once per batch: one Feast read for the batch's users, of their
profiles (``user_profile``) and their recent behaviour (``user_behaviour``, pushed by the feature job).
Look-ups are cached for a short while (``cache_ttl_s``: profiles change rarely, and behaviour a minute old
is recent enough to judge by), bounded by a Redis socket timeout, and guarded by a circuit breaker: after
a failure, Feast is not asked again for ``retry_after_s``, so an outage costs one timeout rather than one
per batch. Whatever cannot be looked up is returned as the youngest-band fallback profile with the reason;
a user with no behaviour row (nothing in the view's 7 days) has no history (``violations_7d`` None).
"""
from __future__ import annotations

import dataclasses
import time
from collections import OrderedDict
from datetime import datetime, timezone
from typing import Iterable, Sequence

import pandas as pd
import yaml

from feature_repo.definitions import PROFILES_PARQUET
from lifeguard.profiles import BEHAVIOUR_FEATURES, PROFILE_FEATURES, UserProfile, fallback_profile
from lifeguard.config import LifeguardConfig
from lifeguard.schemas import AgeBand

PROFILE_VIEW = "user_profile"
BEHAVIOUR_VIEW = "user_behaviour"


def open_store(cfg: LifeguardConfig):
    """A FeatureStore for the repo in ``feature_repo/``, pointed at the configured Redis."""
    from feast import FeatureStore, RepoConfig

    repo_path = cfg.path(cfg.feast.repo_path)
    raw = yaml.safe_load((repo_path / "feature_store.yaml").read_text())
    raw["project"] = cfg.feast.project
    raw["registry"] = str(cfg.path(cfg.feast.data_dir) / "registry.db")
    raw["online_store"]["connection_string"] = cfg.redis.connection_string()
    config = RepoConfig(**raw)
    config.repo_path = repo_path
    return FeatureStore(repo_path=str(repo_path), config=config)


def apply_definitions(cfg: LifeguardConfig, store) -> None:
    """`feast apply` for the objects declared in feature_repo/definitions.py, with empty parquet files for
    the pushed views (Feast's file offline store appends to them)."""
    from feature_repo.definitions import declare
    from features.feature_push import ensure_push_files

    ensure_push_files(cfg.path(cfg.feast.data_dir))
    store.apply(list(declare(cfg.path(cfg.feast.data_dir))))


def profiles_frame(profiles: Iterable[UserProfile], as_of: datetime) -> pd.DataFrame:
    rows = []
    for p in profiles:
        row = {name: getattr(p, name) for name in PROFILE_FEATURES}
        row["age_band"] = p.age_band.value if p.age_band else ""
        row["parent_id"] = p.parent_id or ""
        row["friend_ids"] = list(p.friend_ids)
        rows.append({"user_id": p.user_id, **row, "event_timestamp": as_of, "created": as_of})
    return pd.DataFrame(rows)


def load_profiles(cfg: LifeguardConfig, store, profiles: Sequence[UserProfile]) -> int:
    """Writes profiles to the offline store (parquet, appended) and the online store (Redis)."""
    frame = profiles_frame(profiles, datetime.now(timezone.utc))
    path = cfg.path(cfg.feast.data_dir) / PROFILES_PARQUET
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.exists():
        frame = pd.concat([pd.read_parquet(path), frame], ignore_index=True)
    frame.to_parquet(path, index=False)
    store.write_to_online_store(PROFILE_VIEW, frame.tail(len(profiles)))
    return len(profiles)


def profile_from_features(user_id: str, values: dict) -> UserProfile:
    band = values.get("age_band")
    return UserProfile(
        user_id=user_id,
        age_band=AgeBand(band) if band else None,
        age_verified=bool(values.get("age_verified")),
        account_created_ts=int(values.get("account_created_ts") or 0),
        reputation=float(values.get("reputation") if values.get("reputation") is not None else 0.5),
        friend_ids=tuple(values.get("friend_ids") or ()),
        parent_id=values.get("parent_id") or None,
        dm_policy=values.get("dm_policy") or UserProfile.dm_policy,
        image_policy=values.get("image_policy") or UserProfile.image_policy,
        daily_limit_minutes=int(values.get("daily_limit_minutes") or 0),
        timezone=values.get("timezone") or "UTC",
        alert_delivery=values.get("alert_delivery") or "instant",
    )


def behaviour_from_features(values: dict) -> dict:
    """The UserProfile fields from the user_behaviour view; a missing row (None) is no history."""
    violations = values.get("violations_7d")
    return {"violations_7d": None if violations is None else int(violations)}


class ProfileLookup:
    """Batched, cached, time-bounded profile look-ups; never raises for a Feast or Redis failure."""

    def __init__(self, store, cache_ttl_s: float, cache_max_users: int, retry_after_s: float,
                 clock=time.monotonic):
        self._store = store
        self._ttl = cache_ttl_s
        self._max = cache_max_users
        self._retry_after = retry_after_s
        self._clock = clock
        self._cache: OrderedDict[str, tuple[float, UserProfile]] = OrderedDict()
        self._down_until = 0.0
        self._features = ([f"{PROFILE_VIEW}:{name}" for name in PROFILE_FEATURES]
                          + [f"{BEHAVIOUR_VIEW}:{name}" for name in BEHAVIOUR_FEATURES])
        self.failures = 0

    @classmethod
    def from_config(cls, cfg: LifeguardConfig) -> "ProfileLookup":
        return cls(open_store(cfg), cfg.feast.cache_ttl_s, cfg.feast.cache_max_users, cfg.feast.retry_after_s)

    def profiles(self, user_ids: Iterable[str]) -> dict[str, UserProfile]:
        now = self._clock()
        found: dict[str, UserProfile] = {}
        missing: list[str] = []
        for user_id in dict.fromkeys(user_ids):
            cached = self._cache.get(user_id)
            if cached and now - cached[0] < self._ttl:
                found[user_id] = cached[1]
            else:
                missing.append(user_id)
        if missing:
            found.update(self._fetch(missing, now))
        return found

    def _fetch(self, user_ids: list[str], now: float) -> dict[str, UserProfile]:
        if now < self._down_until:
            return {u: fallback_profile(u, "feature store unavailable") for u in user_ids}
        try:
            columns = self._store.get_online_features(
                features=self._features, entity_rows=[{"user_id": u} for u in user_ids]).to_dict()
        except Exception as exc:  # any Feast or Redis failure: fall back, never fail the batch
            self.failures += 1
            self._down_until = now + self._retry_after
            reason = f"feature store unavailable ({type(exc).__name__})"
            return {u: fallback_profile(u, reason) for u in user_ids}
        result = {}
        for i, user_id in enumerate(user_ids):
            values = {name: columns[name][i] for name in PROFILE_FEATURES + BEHAVIOUR_FEATURES}
            known = any(values[name] is not None for name in PROFILE_FEATURES)
            profile = profile_from_features(user_id, values) if known else fallback_profile(user_id, "unknown user")
            result[user_id] = dataclasses.replace(profile, **behaviour_from_features(values))
            if known:
                self._remember(user_id, result[user_id], now)
        return result

    def _remember(self, user_id: str, profile: UserProfile, now: float) -> None:
        self._cache[user_id] = (now, profile)
        self._cache.move_to_end(user_id)
        while len(self._cache) > self._max:
            self._cache.popitem(last=False)
