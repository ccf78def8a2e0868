"""Time with strangers: co-presence in rooms, and direct conversation with non-friends.

Definitions (the README's "Minutes with strangers" section says the same):
- A **stranger** of child C is any other user not on C's friend list (friends from the Feast profile;
  an unknown user is a stranger). C is a child when C's effective age band is a minor band (an unknown
  age counts as the youngest band).
- **Stranger minutes** of C: the length of time (in minutes, fractional) during which C was in a room
  together with at least one stranger, i.e. the measure of
  ``union over rooms R of (C's presence in R) ∩ (union of every stranger's presence in R)``.
  Presence comes from sessions (``features.sessions``): a user is in a room from join to leave, logout or
  session timeout.
- **Older-stranger minutes**: the same, counting only strangers who are adults, or at least two age bands
  older than C (a 16-17-year-old with an under-13 child). A stranger of unknown age is not counted as older.
- **Stranger conversation minutes**: the number of distinct clock minutes (UTC minute boundaries) in which
  a direct message passed between C and a stranger, in either direction.
- All three are summed per child per local day (the child's profile time zone); a piece of presence that
  spans local midnight is split there.

The job computes co-presence per room in one-minute buckets (bounded state); the pure functions below work
on any list of pieces.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Mapping

from lifeguard.profiles import UserProfile, fallback_profile
from features.sessions import Presence
from lifeguard.schemas import AgeBand

MINUTE_MS = 60_000
_BANDS = list(AgeBand)

Interval = tuple[int, int]


@dataclass(frozen=True)
class StrangerTime:
    child_id: str
    stranger_ms: int
    older_stranger_ms: int


def union(intervals: Iterable[Interval]) -> list[Interval]:
    """Sorted, disjoint intervals covering the same time; empty ones dropped."""
    merged: list[list[int]] = []
    for start, end in sorted(i for i in intervals if i[1] > i[0]):
        if merged and start <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], end)
        else:
            merged.append([start, end])
    return [(s, e) for s, e in merged]


def much_older(other: UserProfile, child: UserProfile) -> bool:
    """An adult, or at least two bands above the child's (unknown ages are the youngest band)."""
    if other.age_band is None:
        return False
    gap = _BANDS.index(other.age_band) - _BANDS.index(child.effective_age_band)
    return other.age_band is AgeBand.ADULT or gap >= 2


def is_child(profile: UserProfile) -> bool:
    return profile.effective_age_band.is_minor


def stranger_time(pieces: Iterable[Presence], profiles: Mapping[str, UserProfile]) -> list[StrangerTime]:
    """Stranger and older-stranger time of every child present in ``pieces`` (any rooms, any span)."""
    by_room_user: dict[str | None, dict[str, list[Interval]]] = {}
    for piece in pieces:
        if piece.room_id is not None:
            by_room_user.setdefault(piece.room_id, {}).setdefault(piece.user_id, []).append(
                (piece.start_ms, piece.end_ms))
    with_strangers: dict[str, list[Interval]] = {}
    with_older: dict[str, list[Interval]] = {}
    for users in by_room_user.values():
        present = {user: union(intervals) for user, intervals in users.items()}
        for child_id, child_time in present.items():
            child = profiles.get(child_id) or fallback_profile(child_id, "unknown user")
            if not is_child(child):
                continue
            strangers = [u for u in present if u != child_id and not child.is_friend(u)]
            stranger_spans = [span for u in strangers for span in present[u]]
            older_spans = [span for u in strangers
                           if much_older(profiles.get(u) or fallback_profile(u, "unknown user"), child)
                           for span in present[u]]
            with_strangers.setdefault(child_id, []).extend(_clip(child_time, union(stranger_spans)))
            with_older.setdefault(child_id, []).extend(_clip(child_time, union(older_spans)))
    return [StrangerTime(child, _length(union(spans)), _length(union(with_older[child])))
            for child, spans in sorted(with_strangers.items())]


def _clip(a: list[Interval], b: list[Interval]) -> list[Interval]:
    """The intersection of two unions, as intervals."""
    out, i, j = [], 0, 0
    while i < len(a) and j < len(b):
        start, end = max(a[i][0], b[j][0]), min(a[i][1], b[j][1])
        if end > start:
            out.append((start, end))
        if a[i][1] < b[j][1]:
            i += 1
        else:
            j += 1
    return out


def _length(intervals: list[Interval]) -> int:
    return sum(end - start for start, end in intervals)


def minute_buckets(piece: Presence) -> list[tuple[int, Presence]]:
    """``piece`` cut at UTC minute boundaries: (minute start, the part within that minute)."""
    parts, start = [], piece.start_ms
    while start < piece.end_ms:
        minute = start - start % MINUTE_MS
        end = min(piece.end_ms, minute + MINUTE_MS)
        parts.append((minute, Presence(piece.user_id, piece.room_id, start, end)))
        start = end
    return parts


def conversation_children(sender: UserProfile, recipient: UserProfile) -> list[str]:
    """The children for whom a direct message between these two is a conversation with a stranger."""
    return [child.user_id for child, other in ((sender, recipient), (recipient, sender))
            if is_child(child) and not child.is_friend(other.user_id)]
