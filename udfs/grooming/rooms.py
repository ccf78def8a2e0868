"""Rooms: who meets whom. Each recent speaker's last message is kept per room; a child and a much older
user writing there close together meet, and the meeting goes to their pair."""
from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Iterable, Sequence

from lifeguard.schemas import AgeBand
from udfs.grooming.settings import GroomingSettings, JsonRecord
from udfs.grooming.turns import band_index, pair_key


@dataclass(frozen=True)
class RoomSpeaker:
    """A room message's sender, as the room's state keeps it."""

    user_id: str
    band: AgeBand  # the effective band (unknown: the youngest)
    ts: int


# A room's speakers travel and are kept as JSON lists of [user_id, band, ts]: the room step reads and
# writes its whole state on every batch, where dataclasses.asdict cost more than the meetings themselves.
def speakers_to_json(speakers: Sequence[RoomSpeaker]) -> str:
    return json.dumps(_speaker_rows(speakers))


def speakers_from_json(text: str) -> list[RoomSpeaker]:
    return _speakers(json.loads(text))


def _speaker_rows(speakers: Iterable[RoomSpeaker]) -> list[list]:
    return [[s.user_id, s.band.value, s.ts] for s in speakers]


def _speakers(rows: Iterable[list]) -> list[RoomSpeaker]:
    return [RoomSpeaker(user_id, AgeBand(band), ts) for user_id, band, ts in rows]


@dataclass(frozen=True)
class RoomMeeting(JsonRecord):
    pair: str
    room_id: str
    ts: int

    @classmethod
    def from_json(cls, text: str) -> "RoomMeeting":
        return cls(**json.loads(text))


@dataclass(frozen=True)
class RoomState:
    speakers: tuple[RoomSpeaker, ...] = ()  # the last message of each recent speaker, oldest first

    def to_json(self) -> str:
        return speakers_to_json(self.speakers)

    @classmethod
    def from_json(cls, text: str) -> "RoomState":
        return cls(tuple(speakers_from_json(text)))


def much_older_pair(a: AgeBand, b: AgeBand, min_gap: int) -> bool:
    """One of the two is a minor and the other at least ``min_gap`` age bands older."""
    gap = abs(band_index(a) - band_index(b))
    return gap >= min_gap and (a.is_minor or b.is_minor)


def room_meetings(state: RoomState | None, room_id: str, speakers: Sequence[RoomSpeaker],
                  settings: GroomingSettings) -> tuple[RoomState, list[RoomMeeting]]:


    """Adds a batch of a room's speakers to its state; returns the state and the meetings they make: a
    minor and a much older user meet when one writes within ``room_meeting_window_ms`` of the other's last
    message, unless the writer's previous message was already that close to it (they met then). The state
    keeps only each speaker's last message, the ``room_speakers_max`` latest within the window."""
    window = settings.configured.room_meeting_window_ms
    latest = {s.user_id: s for s in (state or RoomState()).speakers}
    meetings = []
    for speaker in sorted(speakers, key=lambda s: s.ts):
        previous = latest.get(speaker.user_id)
        for other in latest.values():
            if (other.user_id != speaker.user_id and abs(speaker.ts - other.ts) <= window
                    and (previous is None or abs(previous.ts - other.ts) > window)
                    and much_older_pair(speaker.band, other.band, settings.configured.room_meeting_min_gap)):
                meetings.append(RoomMeeting(pair_key(speaker.user_id, other.user_id), room_id, speaker.ts))
        if previous is None or speaker.ts >= previous.ts:
            latest[speaker.user_id] = speaker
    newest = max((s.ts for s in latest.values()), default=0)
    kept = sorted((s for s in latest.values() if newest - s.ts <= window), key=lambda s: s.ts)
    return RoomState(tuple(kept[-settings.configured.room_speakers_max:])), meetings
