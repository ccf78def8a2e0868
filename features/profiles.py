"""The user profile that Feast serves, and the fallback used when it cannot be had.

``UserProfile`` is the one definition of the profile feature view: the Feast repo, the loader, the
simulator and the job all derive from it.
"""
from __future__ import annotations

from dataclasses import dataclass, field, fields

from lifeguard.schemas import AgeBand


@dataclass(frozen=True)
class UserProfile:
    user_id: str
    # None: the platform does not know the user's age; the policy then acts as for the youngest band.
    age_band: AgeBand | None
    age_verified: bool = False
    account_created_ts: int = 0
    reputation: float = 0.5
    friend_ids: tuple[str, ...] = ()
    parent_id: str | None = None
    # Parental settings.
    dm_policy: str = "friends"  # "everyone", "friends" or "nobody"
    daily_limit_minutes: int = 0  # 0: no limit set
    timezone: str = "UTC"
    # Why this profile is a fallback rather than what Feast holds (None: it came from Feast).
    fallback_reason: str | None = field(default=None, compare=False)

    @property
    def effective_age_band(self) -> AgeBand:
        return self.age_band or AgeBand.youngest()

    def is_friend(self, other_user_id: str) -> bool:
        return other_user_id in self.friend_ids


# Feature names as stored in Feast (everything but the entity key and the fallback marker).
PROFILE_FEATURES: tuple[str, ...] = tuple(
    f.name for f in fields(UserProfile) if f.name not in ("user_id", "fallback_reason"))


def fallback_profile(user_id: str, reason: str) -> UserProfile:
    """What the policy assumes about a user it knows nothing of: the youngest band, no friends."""
    return UserProfile(user_id=user_id, age_band=None, fallback_reason=reason)
