"""The user profile that Feast serves, and the fallback used when it cannot be had.

``UserProfile`` is the one definition of the profile feature view: the Feast repo, the loader, the
simulator and the job all derive from it. It also carries the user's recent behaviour as the feature job
pushed it to the ``user_behaviour`` view (``BEHAVIOUR_FEATURES``), which the policy reads; those are not
profile features and are never loaded with the profile.
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
    # Who may send the child direct messages, and images sent to the child alone: "everyone", "friends"
    # or "nobody" (udfs.policy.contact_signals). The defaults are the platform's for the youngest band.
    dm_policy: str = "friends"
    image_policy: str = "friends"
    daily_limit_minutes: int = 0  # 0: no limit set
    timezone: str = "UTC"
    # How the parent gets Lifeguard's feature alerts: "instant", or "daily_digest" (one per kind a day).
    alert_delivery: str = "instant"
    # From the user_behaviour view: warn, shadow or block decisions on the user's messages in the last 7 days.
    # None: no behaviour on record (nothing from the user in the view's 7-day time-to-live), "no history".
    violations_7d: int | None = None
    # Why this profile is a fallback rather than what Feast holds (None: it came from Feast).
    fallback_reason: str | None = field(default=None, compare=False)

    @property
    def effective_age_band(self) -> AgeBand:
        return self.age_band or AgeBand.youngest()

    @property
    def has_history(self) -> bool:
        return self.violations_7d is not None

    def is_friend(self, other_user_id: str) -> bool:
        return other_user_id in self.friend_ids


# Fields read from the user_behaviour view, by the same names.
BEHAVIOUR_FEATURES: tuple[str, ...] = ("violations_7d",)

# Feature names of the user_profile view (everything but the entity key, the fallback marker and behaviour).
PROFILE_FEATURES: tuple[str, ...] = tuple(
    f.name for f in fields(UserProfile) if f.name not in ("user_id", "fallback_reason", *BEHAVIOUR_FEATURES))


def fallback_profile(user_id: str, reason: str) -> UserProfile:
    """What the policy assumes about a user it knows nothing of: the youngest band, no friends."""
    return UserProfile(user_id=user_id, age_band=None, fallback_reason=reason)
