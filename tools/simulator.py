"""A seeded simulation of a children's game platform: its users, its rooms and the events they produce.

Plain Python: no Kafka, Flink or Feast here. The demo turns ``SimEvent`` values into Kafka records (topic,
key, value) and ``Platform.profiles`` into Feast rows; the tests use both directly.

- ``build_platform``: users by age band (about 45% under 13, 25% 13-15, 10% 16-17, 15% adults, 5% of
  unknown age), parents linked to most children and some teens, symmetric friendships mostly between
  similar ages, parental settings, time zones, reputations and account ages; rooms with a long-tailed
  popularity; a few offenders (most harmful cases come from them) and groomers (adults, some of whom
  declare a teen age).
- ``generate_events``: sessions (login, join, leave, heartbeat, logout), room chat, DMs between friends
  and image uploads, plus, at ``HarmMix.rate`` of steps, injected harmful cases, each labelled with an
  ``InjectedCase`` saying what a good moderator would at least do with it.
- ``blocklist_images`` / ``blocklist_hashes``: the images of the block bank, for loading it before a run.
- ``malformed_records``: bad input for the dead-letter path.
- ``play_day``: a day of play sessions for some children, with friends and strangers in their rooms.

Real text, from the test split only, so the demo's catch rate is not measured on text the model learnt.
Injected harmful text comes only from rows with ``models.splits.split_of(row text) == "test"``, and each
message (a whole short text, or a passage cut to a few sentences) must be part of a test-split record as
``models.datasets`` reads it for training and part of no training or validation record (which also rules
out near-duplicates, such as a spam text seen with one more link). Benign real text mixed into chat comes
from test-split rows too. The data is read at run time from ``shared/data`` (never copied into this
repository); each ``InjectedCase`` names its row as ``"<data set>:<row key>"``. Licences of what is used:

| data set | used for | licence |
|---|---|---|
| jigsaw-toxic-multilabel-sample | identity hate, benign | labels CC0; text CC BY-SA 3.0 (Wikipedia) |
| openai-moderation-eval | sexual, sexual/minors, self-harm | MIT, (c) 2022 OpenAI |
| davidson-hate-offensive | hate speech | MIT, (c) 2017 Tom Davidson |
| toxigen-seed-statements | implicit hate | CDLA-Permissive-2.0 |
| reddit-cssrs-suicide | self-harm (Ideation/Behavior/Attempt users) | CC BY, Gaur et al. 2019 |
| sms-spam-collection | scams; benign messages | free use, (c) Almeida and Gomez Hidalgo |
| urlhaus-malicious-urls | hazardous links | CC0 1.0 |
| models/child_directed/test_set.jsonl (project-written, synthetic) | insults, threats and personal-information requests to children | the project's |

Not used: olid-offensive (no licence stated) and ethos-multilabel-hate (GPL-3.0, copyleft).

Synthetic, and labelled ``source="synthetic:..."``: insults, threats and requests for personal information
as said to children (the child-directed test set, written apart from everything the models learnt from, and
sent by a user of the age its author wrote each message for), requests to move to another app, shares of
personal information, and grooming conversations (no redistributable real data exists; see
shared/data/README.md, "Gaps"); the lures around real URLhaus entries; all images. Phone numbers are in
the fictional 555-01xx range; handles, streets and schools are made up. The "blocklisted" images are
procedural stand-ins: no real harmful image is involved anywhere.

Deterministic: the same arguments give the same output in any process (no ``hash()`` or set order).
"""
from __future__ import annotations

import ast
import base64
import bisect
import csv
import heapq
import html
import io
import itertools
import json
import math
import random
import re
from dataclasses import dataclass, field
from functools import cached_property, lru_cache
from pathlib import Path
from typing import Callable, Iterable, Iterator, Literal

import numpy as np
from PIL import Image, ImageDraw

from lifeguard.profiles import UserProfile
from lifeguard import PROJECT_ROOT
from lifeguard.config import LimitsConfig
from lifeguard.schemas import AgeBand, ChatMessage, SessionEvent, Upload
from models import child_directed
from models.datasets import DATA_SETS, split_for
from models.datasets import load as load_data_set
from models.splits import split_of
from udfs.images import ImageHashes, decode_image, hamming, image_hashes
from udfs.policy import contact_allowed

DEFAULT_DATA_DIR = PROJECT_ROOT.parent / "shared" / "data"

Topic = Literal["chat", "uploads", "sessions"]
SessionType = Literal["login", "logout", "join", "leave", "heartbeat"]
Expect = Literal["block", "review"]

DAY_MS = 86_400_000

# ---- the platform ----------------------------------------------------------------------------------

AGE_MIX: tuple[tuple[AgeBand | None, float], ...] = (
    (AgeBand.UNDER_13, 0.45),
    (AgeBand.TEEN_13_15, 0.25),
    (AgeBand.TEEN_16_17, 0.10),
    (AgeBand.ADULT, 0.15),
    (None, 0.05),  # the platform does not know the age
)
PARENT_LINK_RATE: dict[AgeBand | None, float] = {
    AgeBand.UNDER_13: 0.85, AgeBand.TEEN_13_15: 0.5, AgeBand.TEEN_16_17: 0.2, AgeBand.ADULT: 0.0, None: 0.3}
# Mean friends per user, before symmetry roughly doubles it.
FRIEND_DEGREE: dict[AgeBand | None, float] = {
    AgeBand.UNDER_13: 4.0, AgeBand.TEEN_13_15: 5.0, AgeBand.TEEN_16_17: 5.0, AgeBand.ADULT: 3.0, None: 2.0}
SAME_BAND_FRIEND_RATE = 0.8
ADJACENT_BAND_FRIEND_RATE = 0.15  # the rest are any age: siblings, cousins, family friends
OFFENDER_RATE = 0.04
OFFENDER_BAND_WEIGHT: dict[AgeBand | None, float] = {
    AgeBand.UNDER_13: 1.0, AgeBand.TEEN_13_15: 2.0, AgeBand.TEEN_16_17: 3.0, AgeBand.ADULT: 4.0, None: 2.0}
GROOMER_RATE = 0.01  # a share of all users, drawn from the adults
GROOMER_DECLARED_TEEN_RATE = 0.3  # groomers who signed up claiming to be 13-15
TIMEZONES: tuple[tuple[str, float], ...] = (
    ("America/New_York", 0.22), ("America/Chicago", 0.10), ("America/Los_Angeles", 0.14),
    ("America/Sao_Paulo", 0.07), ("Europe/London", 0.12), ("Europe/Berlin", 0.10),
    ("Asia/Kolkata", 0.06), ("Asia/Tokyo", 0.05), ("Australia/Sydney", 0.06), ("UTC", 0.08))
_TIMEZONE_NAMES = [tz for tz, _ in TIMEZONES]
_TIMEZONE_CUMULATIVE_WEIGHTS = list(itertools.accumulate(weight for _, weight in TIMEZONES))
ROOM_THEMES: tuple[str, ...] = ("obby", "tycoon", "pets", "racing", "roleplay", "build", "horror", "sports")
USERS_PER_ROOM = 40
FAVOURITE_ROOMS = 3


@dataclass(frozen=True)
class Room:
    room_id: str
    theme: str  # picks the room's chat templates
    popularity: float  # relative chance that a user favours or joins it


@dataclass(frozen=True)
class Platform:
    seed: int  # also seeds the block bank's images: blocklist_images(seed)
    now_ms: int
    profiles: list[UserProfile]
    rooms: list[Room]
    favourite_rooms: dict[str, tuple[str, ...]]
    # Ground truth for account-level checks; the pipeline must find these on its own.
    offender_ids: tuple[str, ...]
    groomer_ids: tuple[str, ...]

    @cached_property
    def by_id(self) -> dict[str, UserProfile]:
        return {profile.user_id: profile for profile in self.profiles}


def build_platform(n_users: int, seed: int, now_ms: int) -> Platform:
    if n_users < 2:
        raise ValueError("a platform needs at least 2 users")
    rng = random.Random(f"lifeguard-platform:{seed}")
    user_ids = [f"u-{i}" for i in range(n_users)]
    bands = _age_bands(n_users, rng)
    offenders = _pick_offenders(user_ids, bands, rng)
    adults = [u for u, band in zip(user_ids, bands) if band is AgeBand.ADULT]
    groomers = sorted(rng.sample(adults, min(len(adults), max(1, round(GROOMER_RATE * n_users)))), key=_user_index)
    # Groomers who lie about their age: the declared band is what the platform (and Feast) knows.
    declared = dict(zip(user_ids, bands))
    for groomer in groomers:
        if rng.random() < GROOMER_DECLARED_TEEN_RATE:
            declared[groomer] = AgeBand.TEEN_13_15
    friends = _friendships(user_ids, bands, set(groomers), rng)
    rooms = _rooms(n_users)
    room_weights = list(itertools.accumulate(room.popularity for room in rooms))
    favourite_rooms = {u: _favourite_rooms(rooms, room_weights, rng) for u in user_ids}
    offender_set, groomer_set = set(offenders), set(groomers)
    profiles = [
        _profile(i, u, declared[u], friends[u], u in offender_set, u in groomer_set, now_ms, rng)
        for i, u in enumerate(user_ids)]
    return Platform(seed=seed, now_ms=now_ms, profiles=profiles, rooms=rooms, favourite_rooms=favourite_rooms,
                    offender_ids=tuple(offenders), groomer_ids=tuple(groomers))


def _user_index(user_id: str) -> int:
    return int(user_id.removeprefix("u-"))


def _age_bands(n_users: int, rng: random.Random) -> list[AgeBand | None]:
    """Exactly the AGE_MIX shares (largest remainder), shuffled: even a small platform has the mix."""
    quotas = [share * n_users for _, share in AGE_MIX]
    counts = [math.floor(q) for q in quotas]
    by_remainder = sorted(range(len(quotas)), key=lambda i: quotas[i] - counts[i], reverse=True)
    for i in by_remainder[: n_users - sum(counts)]:
        counts[i] += 1
    bands = [band for (band, _), count in zip(AGE_MIX, counts) for _ in range(count)]
    rng.shuffle(bands)
    return bands


def _pick_offenders(user_ids: list[str], bands: list[AgeBand | None], rng: random.Random) -> list[str]:
    count = max(1, round(OFFENDER_RATE * len(user_ids)))
    cumulative_weights = list(itertools.accumulate(OFFENDER_BAND_WEIGHT[band] for band in bands))
    chosen: dict[str, None] = {}  # insertion-ordered, unlike a set
    while len(chosen) < count:
        chosen[rng.choices(user_ids, cum_weights=cumulative_weights)[0]] = None
    return sorted(chosen, key=_user_index)


def _friendships(user_ids: list[str], bands: list[AgeBand | None], groomers: set[str],
                 rng: random.Random) -> dict[str, tuple[str, ...]]:
    """Symmetric friend lists, mostly within the same or an adjacent age band.

    Groomers start with adult friends only: befriending a child is what the simulation then shows them doing.
    """
    band_order = [band for band, _ in AGE_MIX]
    by_band: dict[AgeBand | None, list[str]] = {band: [] for band in band_order}
    for user, band in zip(user_ids, bands):
        by_band[band].append(user)
    adjacent = {band: [b for b in band_order[max(0, i - 1): i + 2] if b is not band and by_band[b]]
                for i, band in enumerate(band_order)}
    edges: dict[str, set[str]] = {user: set() for user in user_ids}
    for user, band in zip(user_ids, bands):
        for _ in range(_poisson(FRIEND_DEGREE[band], rng)):
            r = rng.random()
            if user in groomers or r < SAME_BAND_FRIEND_RATE or not adjacent[band]:
                pool = by_band[AgeBand.ADULT] if user in groomers else by_band[band]
            elif r < SAME_BAND_FRIEND_RATE + ADJACENT_BAND_FRIEND_RATE:
                pool = by_band[rng.choice(adjacent[band])]
            else:
                pool = user_ids
            friend = rng.choice(pool)
            if friend != user and friend not in groomers:
                edges[user].add(friend)
                edges[friend].add(user)
    return {user: tuple(sorted(friends, key=_user_index)) for user, friends in edges.items()}


def _poisson(mean: float, rng: random.Random) -> int:
    """Knuth's method: fine for the small means used here, and driven by the seeded ``rng``."""
    limit, k, product = math.exp(-mean), 0, rng.random()
    while product > limit:
        k += 1
        product *= rng.random()
    return k


def _rooms(n_users: int) -> list[Room]:
    count = max(len(ROOM_THEMES) + 1, n_users // USERS_PER_ROOM)
    rooms = [Room("r-lobby", "lobby", 1.0)]
    for rank in range(1, count):
        theme = ROOM_THEMES[(rank - 1) % len(ROOM_THEMES)]
        # A long tail: a few popular games, many quiet ones.
        rooms.append(Room(f"r-{theme}-{rank}", theme, round(1.0 / (rank + 1) ** 0.9, 6)))
    return rooms


def _favourite_rooms(rooms: list[Room], cumulative_weights: list[float], rng: random.Random) -> tuple[str, ...]:
    picked = rng.choices(rooms, cum_weights=cumulative_weights, k=FAVOURITE_ROOMS)
    return tuple(dict.fromkeys(room.room_id for room in picked))


def _profile(index: int, user_id: str, band: AgeBand | None, friends: tuple[str, ...], is_offender: bool,
             is_groomer: bool, now_ms: int, rng: random.Random) -> UserProfile:
    parent_id = f"p-{index}" if rng.random() < PARENT_LINK_RATE[band] and not is_groomer else None
    account_age_days = _account_age_days(band, is_groomer, rng)
    if account_age_days < 14:
        reputation = 0.5  # too new to know
    elif is_offender or is_groomer:
        reputation = rng.betavariate(2, 5)
    else:
        reputation = rng.betavariate(8, 3)
    return UserProfile(
        user_id=user_id,
        age_band=band,
        age_verified=(band is AgeBand.ADULT and not is_groomer and rng.random() < 0.35)
        or (parent_id is not None and rng.random() < 0.5),
        account_created_ts=now_ms - int(account_age_days * DAY_MS),
        reputation=round(reputation, 3),
        friend_ids=friends,
        parent_id=parent_id,
        dm_policy=_dm_policy(band, parent_id is not None, rng),
        daily_limit_minutes=_daily_limit(band, parent_id is not None, rng),
        timezone=rng.choices(_TIMEZONE_NAMES, cum_weights=_TIMEZONE_CUMULATIVE_WEIGHTS)[0],
    )


def _account_age_days(band: AgeBand | None, is_groomer: bool, rng: random.Random) -> float:
    if is_groomer:
        # Many throwaway accounts: a new account befriending children is itself a signal.
        return rng.uniform(0.5, 10) if rng.random() < 0.4 else rng.uniform(30, 400)
    mean_days = 700 if band is AgeBand.ADULT else 300
    return min(rng.expovariate(1 / mean_days), 8 * 365) + 0.5


def _dm_policy(band: AgeBand | None, has_parent: bool, rng: random.Random) -> str:
    if band is AgeBand.ADULT:
        return rng.choices(["everyone", "friends"], [0.8, 0.2])[0]
    if band in (AgeBand.UNDER_13, None) and has_parent:
        return rng.choices(["friends", "nobody", "everyone"], [0.65, 0.2, 0.15])[0]
    if has_parent:
        return rng.choices(["friends", "everyone"], [0.6, 0.4])[0]
    return rng.choices(["friends", "everyone"], [0.5, 0.5])[0]


def _daily_limit(band: AgeBand | None, has_parent: bool, rng: random.Random) -> int:
    if not has_parent:
        return 0
    if band in (AgeBand.UNDER_13, None) and rng.random() < 0.45:
        return rng.choice([30, 45, 60, 90, 120])
    if band is AgeBand.TEEN_13_15 and rng.random() < 0.2:
        return rng.choice([120, 180])
    return 0


# ---- injected cases ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class InjectedCase:
    event_id: str
    case: str  # what was injected, a key of CASES
    category: str  # the harm, e.g. "harassment", "sexual_minors", "known_bad_image"
    expect: Expect  # the least a good moderator would do with this event
    # "<data set>:<row key>" for real text, "synthetic:<template set>", or "blocklist:<index>:<edit>".
    source: str = ""
    conversation_id: str | None = None  # groups the messages of a multi-message case (grooming)


@dataclass(frozen=True)
class CaseSpec:
    category: str
    expect: Expect
    description: str


CASES: dict[str, CaseSpec] = {
    "insult_to_child": CaseSpec("harassment", "block", "an insult or harassment aimed at a child (synthetic "
                                "child-directed test text)"),
    "hate_speech": CaseSpec("hate", "block", "explicit hate speech (real text)"),
    "implicit_hate": CaseSpec("hate", "review", "slur-free, implicit hate (real text)"),
    "threat": CaseSpec("threat", "block", "a threat of violence to a child, a school or a home (synthetic "
                       "child-directed test text)"),
    "sexual_to_child": CaseSpec("sexual", "block", "sexual text sent to a child (real text; category "
                                "sexual_minors where the row is labelled S3)"),
    "self_harm": CaseSpec("self_harm", "review", "a minor writing about self-harm or suicide (real text)"),
    "scam": CaseSpec("scam", "review", "a prize or premium-rate scam message (real text)"),
    "malicious_link": CaseSpec("malicious_link", "block", "a real URLhaus malware link in a synthetic lure"),
    "off_platform_request": CaseSpec("off_platform", "review", "asking a child to move to another app (synthetic)"),
    "personal_info_request": CaseSpec("pii", "review", "asking a child for address, phone or school (synthetic "
                                      "child-directed test text)"),
    "personal_info_share": CaseSpec("pii", "block", "a child posting their own address or phone (synthetic)"),
    "grooming_conversation": CaseSpec("grooming", "review", "an adult befriending a child over days, DMs "
                                      "escalating to secrecy, another app and photos (synthetic; late stages block)"),
    "banked_image_reupload": CaseSpec("known_bad_image", "block", "a blocklisted image re-uploaded, exact or "
                                      "edited (resize, recompression, colour shift, small crop)"),
}


@dataclass(frozen=True)
class HarmMix:
    # The chance that one simulation step injects a case: about 1% of events (under 2% of chat), rare as
    # on a real platform yet enough to count in a short demo. A grooming draw adds a whole conversation.
    rate: float = 0.01
    weights: tuple[tuple[str, float], ...] = (
        ("insult_to_child", 0.30), ("hate_speech", 0.04), ("implicit_hate", 0.03), ("threat", 0.05),
        ("sexual_to_child", 0.05), ("self_harm", 0.05), ("scam", 0.07), ("malicious_link", 0.10),
        ("off_platform_request", 0.08), ("personal_info_request", 0.06), ("personal_info_share", 0.04),
        ("grooming_conversation", 0.03), ("banked_image_reupload", 0.10),
    )

    def __post_init__(self):
        unknown = [case for case, _ in self.weights if case not in CASES]
        if unknown:
            raise ValueError(f"unknown cases in HarmMix: {unknown}")
        if not 0 <= self.rate <= 1:
            raise ValueError(f"rate {self.rate} is not a probability")


@dataclass(frozen=True)
class SimEvent:
    topic: Topic
    key: str  # the acting user's id: the Kafka record key
    value: dict  # the record, as the topic's schema dumps it to JSON
    truth: InjectedCase | None = None


# ---- real text, test split only ---------------------------------------------------------------------

MAX_CHAT_CHARS = 280
MIN_CHAT_CHARS = 12
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")
# First-person statements only: the users' labels cover many posts, most of them replies to others.
_SELF_HARM_CUE = re.compile(
    r"\b(kill(ing)? myself|end(ing)? my (own )?life|take my (own )?life|hang(ing)? myself|cut(ting)? myself|"
    r"hurt(ing)? myself|i (want|wanted|wish) (to die|i was dead|i were dead)|no reason (for me )?to (keep )?liv\w*|"
    r"i('m| am) (so )?suicidal)\b", re.IGNORECASE)


@dataclass(frozen=True)
class SourcedText:
    text: str  # the message as emitted
    source: str  # "<data set>:<row key>"
    category: str
    pair: str | None = None  # who says it to whom, where the text was written for an age pair


@dataclass(frozen=True)
class LinkEntry:
    entry: str  # the blocklist line, verbatim
    target: str  # host, or host/path


@dataclass(frozen=True)
class TextPools:
    by_pool: dict[str, tuple[SourcedText, ...]]
    links: tuple[LinkEntry, ...]


def as_chat(text: str) -> str | None:
    """``text`` as one chat message: whitespace collapsed; None if it is too short or too long for chat."""
    collapsed = " ".join(text.split())
    return collapsed if MIN_CHAT_CHARS <= len(collapsed) <= MAX_CHAT_CHARS else None


def passage_cuts(text: str) -> list[str]:
    """Chat-sized cuts of a passage: the first one to four sentences, then the first MAX_CHAT_CHARS
    characters at a word boundary, each a substring of the whitespace-collapsed text. A label covers the
    whole passage, so only cuts that keep at least half of it are offered (fewer rows, truer labels)."""
    collapsed = " ".join(text.split())
    sentences = _SENTENCE_END.split(collapsed)
    cuts = [" ".join(sentences[:k]) for k in range(1, 5)] + [collapsed[:MAX_CHAT_CHARS].rsplit(" ", 1)[0]]
    return [collapsed] + [cut for cut in cuts if 2 * len(cut) >= len(collapsed)]


_RETWEETED_HANDLE = re.compile(r"^\w+:?")
_LEADING_MENTIONS = re.compile(r"^[\s!\"]*(@\w+:?\s*)*")


def tweet_as_chat(tweet: str) -> str:
    """A tweet as chat: entities decoded (as the trainer reads it), then only what follows the last
    retweet marker and any leading @handles, so the message is still a piece of what the trainer reads."""
    text = html.unescape(tweet)
    if "RT @" in text:
        text = _RETWEETED_HANDLE.sub("", text.rpartition("RT @")[2])
    return _LEADING_MENTIONS.sub("", text)


def load_text_pools(data_dir: Path = DEFAULT_DATA_DIR) -> TextPools:
    """Every pool the simulator draws real text from, test split only. Loaded once per data directory."""
    return _load_text_pools(Path(data_dir).resolve())


@lru_cache(maxsize=4)
def _load_text_pools(data_dir: Path) -> TextPools:
    trainer = _trainer_view(data_dir)
    pools: dict[str, list[SourcedText]] = {name: [] for name in (
        "insult", "hate", "implicit_hate", "threat", "sexual", "self_harm", "scam", "personal_info", "benign")}
    for pool, item in itertools.chain(
            _jigsaw_texts(data_dir, trainer), _openai_texts(data_dir, trainer), _davidson_texts(data_dir, trainer),
            _toxigen_texts(data_dir, trainer), _cssrs_texts(data_dir, trainer), _sms_texts(data_dir, trainer),
            _child_directed_texts()):
        pools[pool].append(item)
    return TextPools(by_pool={name: tuple(items) for name, items in pools.items()}, links=_urlhaus_links(data_dir))


def _normalised(text: str) -> str:
    """As ``split_of`` sees text: lower-cased, whitespace collapsed."""
    return " ".join(text.lower().split())


@dataclass(frozen=True)
class _TrainerView:
    """Each data set as ``models.datasets`` reads it for the model, as two strings of normalised records
    (one a line): the test split, and everything the model trains or calibrates on."""

    test: dict[str, str]
    seen: dict[str, str]

    def unseen(self, data_set: str, message: str) -> bool:
        """Part of a test record and of no other: not even a near-duplicate (a spam text with one more
        link, a comment quoted in a longer one) of something the model learnt from."""
        normalised = _normalised(message)
        return normalised in self.test[data_set] and normalised not in self.seen[data_set]


def _trainer_view(data_dir: Path) -> _TrainerView:
    test, seen = {}, {}
    for data_set in (d for d in DATA_SETS if d.usage == "train"):
        sides: dict[bool, list[str]] = {True: [], False: []}
        for record in load_data_set(data_set, data_dir):
            sides[split_for(record) == "test"].append(_normalised(record.text))
        test[data_set.name], seen[data_set.name] = "\n".join(sides[True]), "\n".join(sides[False])
    return _TrainerView(test, seen)


def _sourced(pool: str, trainer: _TrainerView, data_set: str, row_text: str, candidates: Iterable[str | None],
             row_key: str, category: str) -> Iterator[tuple[str, SourcedText]]:
    """The first chat-sized candidate message from a test-split row that the model has not seen.

    Benign text is only held to the split itself (the near-duplicate scan is the slow part, and what
    matters is that the catch rate is not measured on learnt text).
    """
    if split_of(row_text) != "test":
        return
    for candidate in candidates:
        message = as_chat(candidate) if candidate else None
        if message and (trainer.unseen(data_set, message) if pool != "benign" else split_of(message) == "test"):
            yield pool, SourcedText(message, f"{data_set}:{row_key}", category)
            return


def _jigsaw_texts(data_dir: Path, trainer: _TrainerView) -> Iterator[tuple[str, SourcedText]]:
    """Whole comments only: a label covers the comment, and a cut could drop the part that earned it."""
    name = "jigsaw-toxic-multilabel-sample"
    with open(data_dir / name / "jigsaw_toxic_sample.csv", newline="", encoding="utf-8") as f:
        for row in csv.DictReader(f):
            text, labels = row["comment_text"], {k: row[k] == "1" for k in (
                "toxic", "severe_toxic", "obscene", "threat", "insult", "identity_hate")}
            chat = [text.strip().strip('"')]
            if labels["identity_hate"] and not labels["threat"]:
                yield from _sourced("hate", trainer, name, text, chat, row["id"], "hate")
            elif not any(labels.values()):
                yield from _sourced("benign", trainer, name, text, chat, row["id"], "none")


def _openai_texts(data_dir: Path, trainer: _TrainerView) -> Iterator[tuple[str, SourcedText]]:
    """Passages, so cut to a few sentences (the label is the passage's: a cut can be milder than it).
    Labels may be missing (unknown): only an explicit 1 counts."""
    name = "openai-moderation-eval"
    with open(data_dir / name / "samples-1680.jsonl", encoding="utf-8") as f:
        for line_number, line in enumerate(f, start=1):
            row = json.loads(line)
            text, key, cuts = row["prompt"], f"line-{line_number}", passage_cuts(row["prompt"])
            if row.get("S3") == 1:
                yield from _sourced("sexual", trainer, name, text, cuts, key, "sexual_minors")
            elif row.get("S") == 1:
                yield from _sourced("sexual", trainer, name, text, cuts, key, "sexual")
            elif row.get("SH") == 1:
                yield from _sourced("self_harm", trainer, name, text, cuts, key, "self_harm")


# The child-directed test set's kinds the simulator injects, by pool, with the category each case names.
CHILD_DIRECTED_POOLS = {"bullying": ("insult", "harassment"), "threat": ("threat", "threat"),
                        "personal_info": ("personal_info", "pii")}


def _child_directed_texts() -> Iterator[tuple[str, SourcedText]]:
    """Insults, threats and personal-information requests as they are said to children: the synthetic
    child-directed TEST set (models.child_directed), written apart from all training text."""
    for number, message in enumerate(child_directed.read(child_directed.TEST_SET), start=1):
        if message.harmful and message.kind in CHILD_DIRECTED_POOLS:
            pool, category = CHILD_DIRECTED_POOLS[message.kind]
            yield pool, SourcedText(message.text, f"synthetic:child-directed-test:line-{number}", category, message.pair)


def _davidson_texts(data_dir: Path, trainer: _TrainerView) -> Iterator[tuple[str, SourcedText]]:
    name = "davidson-hate-offensive"
    with open(data_dir / name / "labeled_data.csv", newline="", encoding="utf-8") as f:
        for row in csv.DictReader(f):
            if row["class"] == "0":
                yield from _sourced("hate", trainer, name, row["tweet"], [tweet_as_chat(row["tweet"])], row[""], "hate")


def _toxigen_texts(data_dir: Path, trainer: _TrainerView) -> Iterator[tuple[str, SourcedText]]:
    name = "toxigen-seed-statements"
    with open(data_dir / name / "toxigen_seed_statements.csv", newline="", encoding="utf-8") as f:
        for row_number, row in enumerate(csv.DictReader(f), start=1):
            if row["label"] == "hate":
                yield from _sourced("implicit_hate", trainer, name, row["text"], [row["text"]], f"row-{row_number}",
                                    "hate")


def _cssrs_texts(data_dir: Path, trainer: _TrainerView) -> Iterator[tuple[str, SourcedText]]:
    """Labels are per user over many posts, so only sentences that state self-harm or suicide are taken
    (with the sentence before for context, or alone) from users rated Ideation, Behavior or Attempt."""
    name = "reddit-cssrs-suicide"
    with open(data_dir / name / "500_Reddit_users_posts_labels.csv", newline="", encoding="utf-8") as f:
        for row in csv.DictReader(f):
            if row["Label"] not in ("Ideation", "Behavior", "Attempt"):
                continue
            for post in cssrs_posts(row["Post"]):
                sentences = _SENTENCE_END.split(" ".join(post.split()))
                for i, sentence in enumerate(sentences):
                    if _SELF_HARM_CUE.search(sentence):
                        with_context = " ".join(sentences[max(0, i - 1): i + 1])
                        yield from _sourced("self_harm", trainer, name, row["Post"], [with_context, sentence],
                                            row["User"], "self_harm")


def cssrs_posts(cell: str) -> list[str]:
    """The ``Post`` cell is a Python list literal; some were cut at a spreadsheet's cell limit, and
    closing the string and the list recovers them (as ``models.datasets`` does)."""
    for ending in ("", "']", '"]'):
        try:
            return list(ast.literal_eval(cell + ending))
        except SyntaxError:
            continue
    return []


def _sms_texts(data_dir: Path, trainer: _TrainerView) -> Iterator[tuple[str, SourcedText]]:
    name = "sms-spam-collection"
    with open(data_dir / name / "SMSSpamCollection", encoding="utf-8") as f:
        for line_number, line in enumerate(f, start=1):
            label, _, text = line.rstrip("\n").partition("\t")
            pool, category = ("scam", "scam") if label == "spam" else ("benign", "none")
            yield from _sourced(pool, trainer, name, text, [text], f"line-{line_number}", category)


def _urlhaus_links(data_dir: Path) -> tuple[LinkEntry, ...]:
    with open(data_dir / "urlhaus-malicious-urls" / "urlhaus_entries.csv", newline="", encoding="utf-8") as f:
        return tuple(LinkEntry(row["entry"], row["target"]) for row in csv.DictReader(f)
                     if split_of(row["entry"]) == "test")


# ---- synthetic text ----------------------------------------------------------------------------------

_NAMES = ("zoe", "Mason", "sky", "Lily", "jayden", "Ava", "leo", "Mia", "noah", "Ella", "kai", "Ruby")
_PETS = ("dragon", "unicorn", "cat", "puppy", "fox", "owl", "axolotl", "bunny")
_RARITIES = ("rare", "legendary", "mythic", "shiny", "neon")
_ITEMS = ("sword", "jetpack", "pickaxe", "hoverboard", "golden key", "crown")
_GAMES = ("the obby", "pet sim", "racing", "hide and seek", "tycoon", "roleplay")
_HANDLE_PARTS = (("cool", "xx", "real", "its", "the"), ("gamer", "mike", "jay", "kid", "star"))
_STREET_PARTS = (("Maple", "Oak", "Cedar", "Willow", "Birch"), ("Street", "Avenue", "Lane", "Road"))
_SCHOOL_PARTS = (("Lincoln", "Westbrook", "Hillside", "Parkview"), ("Elementary", "Middle School"))
_FILLS: dict[str, Callable[[random.Random], str]] = {
    "name": lambda r: r.choice(_NAMES), "pet": lambda r: r.choice(_PETS), "rarity": lambda r: r.choice(_RARITIES),
    "item": lambda r: r.choice(_ITEMS), "game": lambda r: r.choice(_GAMES), "n": lambda r: str(r.randint(2, 99)),
    "handle": lambda r: "".join(r.choice(part) for part in _HANDLE_PARTS) + str(r.randint(1, 999)),
    "app": lambda r: r.choice(("snap", "discord", "whatsapp", "insta", "telegram", "kik")),
    "phone_tail": lambda r: f"{r.randint(0, 99):02d}",
    "house": lambda r: str(r.randint(1, 240)),
    "street": lambda r: " ".join(r.choice(part) for part in _STREET_PARTS),
    "town": lambda r: r.choice(("Springfield", "Riverton", "Lakeview", "Fairhaven")),
    "school": lambda r: " ".join(r.choice(part) for part in _SCHOOL_PARTS),
    "grade": lambda r: r.choice(("4th", "5th", "6th", "7th")),
    "last": lambda r: r.choice(("Smith", "Garcia", "Nguyen", "Brown", "Miller")),
}
_FIELD = re.compile(r"{(\w+)}")


def fill_template(template: str, rng: random.Random, **given: str) -> str:
    """Fills each ``{field}`` from ``given`` or else with a random pick from _FILLS."""
    return _FIELD.sub(lambda m: given[m.group(1)] if m.group(1) in given else _FILLS[m.group(1)](rng), template)


GAME_CHAT: tuple[str, ...] = (
    "gg", "gg wp", "lol", "lmao", "brb", "back", "hi", "hii everyone", "hey {name}", "anyone wanna be friends?",
    "who wants to play {game}?", "can someone help me pls", "how do u get to level {n}?", "im level {n} now!!",
    "nice build!", "that was so fun", "wait for me", "follow me", "omg lag", "my wifi is so bad today",
    "brb dinner", "i have to go soon", "my mom says 10 more minutes", "whats ur fav game?", "same", "no way",
    "thats so cool", "how did u do that", "teach me pls", "ur so good at this", "noob lol", "ez",
    # Gaming trash talk that reads violent out of context: ordinary here, a false-positive test.
    "im gonna destroy u next round", "that boss killed me like {n} times", "ugh i died again",
    "i will end u in pvp lol",
    "who wants to trade?", "does anyone have a {item}?", "i just got a {rarity} {pet}!!", "can i join ur team",
    "lets go!!", "yay we won", "rematch?", "afk for a sec", "what server r u on", "this update is awesome",
    "ok", "haha", "can u stop pushing me", "pls dont steal my spot", "sorry my bad", "thx!", "np", "ttyl",
    "my little brother keeps bugging me", "i have school tomorrow", "happy birthday {name}!!",
)
THEME_CHAT: dict[str, tuple[str, ...]] = {
    "lobby": ("where is everyone", "anyone wanna play?", "join me in {game}", "whats the best game here"),
    "obby": ("stage {n} is impossible", "how do u do the jump on stage {n}", "i fell in the lava again",
             "the spinning thing got me", "almost at the end!!"),
    "tycoon": ("how much money do u have", "upgrade the conveyor first", "rebirth or keep going?",
               "my tycoon is almost done", "i have {n}k cash"),
    "pets": ("trade my {pet} for ur {pet}?", "is a {rarity} {pet} good?", "w or l?", "im hatching eggs",
             "my {pet} is level {n}"),
    "racing": ("that car is so fast", "race me", "i got 1st place!!", "who has nitro", "drift king lol"),
    "roleplay": ("can i be the mom", "im the teacher ok", "lets play school", "*walks into the house*",
                 "whos the baby", "ill be the doctor"),
    "build": ("look at my house", "how do u make stairs", "need more wood", "i built a castle!",
              "can u help me with the roof"),
    "horror": ("omg that jumpscare", "im so scared rn", "dont open that door", "who turned off the lights", "run!!!"),
    "sports": ("pass the ball", "goal!!!", "im goalie", "we need one more player", "offside lol"),
}
CAPTIONS: tuple[str, ...] = ("my castle", "look at my build", "new avatar!", "my pet", "drew this",
                             "screenshot lol", "", "rate it 1-10", "my base", "so pretty")
OFF_PLATFORM_REQUESTS: tuple[str, ...] = (
    "add me on snap its {handle}", "do u have discord? add {handle}", "this chat is boring lets talk on whatsapp",
    "msg me on insta {handle}", "download telegram and text me there", "we should video call on facetime",
    "r u on tiktok? dm me {handle}", "lets move to kik its more private", "add me on snapchat so we can talk more",
)
PERSONAL_INFO_SHARES: tuple[str, ...] = (
    "my number is 555-01{phone_tail} text me", "i live at {house} {street} come over",
    "my address is {house} {street}, {town}", "i go to {school}, {grade} grade",
    "call me 555-01{phone_tail}", "my real name is {name} {last} and i go to {school}",
)
LINK_LURES: tuple[str, ...] = (
    "free robux here {url}", "omg this gives u unlimited gems {url}", "download the new mod menu {url}",
    "{url} best skins", "click {url} for a free {rarity} {pet}", "my friend made a hack {url}", "{url}",
)


@dataclass(frozen=True)
class GroomingStage:
    name: str
    to_room: bool  # the first contact is in a shared room; the rest are DMs
    expect: Expect
    lines: tuple[str, ...]
    replies: tuple[str, ...]  # what the child may answer (ordinary messages, not injected)


# A synthetic arc following the stages in the grooming literature (friendship, trust, secrecy, isolation,
# escalation). Deliberately non-graphic: the point is the pattern, which no single message shows.
GROOMING_STAGES: tuple[GroomingStage, ...] = (
    GroomingStage("rapport", True, "review", (
        "ur really good at this game", "wanna team up? i can help u get to the next level",
        "nice {pet}! i have a {rarity} one i could give u"), ()),
    GroomingStage("attention", False, "review", (
        "hey its me from {game} :) ur fun to play with", "how old r u? u seem really mature for ur age",
        "i dont really get along with people my age, ur different"), ("haha thanks", "11", "12", "really?")),
    GroomingStage("gifts", False, "review", (
        "i can buy u robux if u want", "i got u a gift in the shop, check ur inventory",
        "want me to send u the {item}? no one else gets one"), ("omg thank u!!", "really?? thanks", "ok")),
    GroomingStage("secrecy", False, "review", (
        "dont tell ur parents we talk ok? they wouldnt understand", "this is our secret ok",
        "delete our messages after u read them"), ("ok i wont tell", "why?", "ok")),
    GroomingStage("isolation", False, "review", (
        "its easier to talk on {app}, add me {handle}", "ur friends r kind of mean to u, i get u better",
        "lets talk on {app} where ur mom cant see"), ("im not allowed to have snap", "my mom checks my phone", "ok")),
    GroomingStage("escalation", False, "block", (
        "send me a pic of u, just for me", "what are u wearing rn", "can we video call on {app}? just us",
        "where do u live? i could pick u up after school", "i could come see u this weekend, dont tell anyone"),
        ("idk", "i dont think i should", "why?")),
)
GROOMING_MAX_SPAN_MS = 3 * DAY_MS


# ---- images -----------------------------------------------------------------------------------------

BLOCKLIST_SIZE = 12
BENIGN_POOL_SIZE = 48
# Any two procedural images used as distinct content are at least this many pHash bits apart, so that a
# benign upload can never be a "true" bank match and the truth labels stay right at any sane threshold.
MIN_UNRELATED_DISTANCE = 20
_DECODE_LIMIT_BYTES = 10_000_000
_DECODE_LIMIT_PIXELS = 10_000_000
_IMAGE_STREAM_BLOCKLIST, _IMAGE_STREAM_BENIGN = 1, 2
ImageFormat = Literal["PNG", "JPEG"]
CONTENT_TYPES: dict[ImageFormat, str] = {"PNG": "image/png", "JPEG": "image/jpeg"}


def procedural_image(rng: np.random.Generator) -> Image.Image:
    """A benign picture of 128-256 px: a gradient, a few large shapes, a word.

    Large shapes carry the low-frequency structure pHash sees, so unrelated images land far apart and
    small edits of one image stay close.
    """
    size = int(rng.integers(128, 257))
    start, end = rng.integers(0, 256, 3), rng.integers(0, 256, 3)
    angle = rng.uniform(0, 2 * np.pi)
    yy, xx = np.mgrid[0:size, 0:size] / size
    t = np.cos(angle) * xx + np.sin(angle) * yy
    t = (t - t.min()) / (np.ptp(t) + 1e-9)
    gradient = start[None, None, :] * (1 - t[..., None]) + end[None, None, :] * t[..., None]
    image = Image.fromarray(gradient.astype(np.uint8), "RGB")
    draw = ImageDraw.Draw(image)
    for _ in range(int(rng.integers(3, 7))):
        x0, y0 = rng.uniform(-0.2, 0.8, 2) * size
        width, height = rng.uniform(0.2, 0.6, 2) * size
        colour = tuple(int(v) for v in rng.integers(0, 256, 3))
        shape = int(rng.integers(0, 3))
        if shape == 0:
            draw.ellipse([x0, y0, x0 + width, y0 + height], fill=colour)
        elif shape == 1:
            draw.rectangle([x0, y0, x0 + width, y0 + height], fill=colour)
        else:
            draw.polygon([tuple(p) for p in rng.uniform(-0.1, 1.1, (3, 2)) * size], fill=colour)
    word = str(rng.choice(["gg", "hi", "lol", "my base", "wow", "pets"]))
    draw.text(tuple(rng.uniform(0.05, 0.6, 2) * size), word, fill=tuple(int(v) for v in rng.integers(0, 256, 3)),
              font_size=size // 8)
    return image


def encode_image(image: Image.Image, fmt: ImageFormat, quality: int = 85) -> bytes:
    buffer = io.BytesIO()
    if fmt == "JPEG":
        image.save(buffer, "JPEG", quality=quality)
    else:
        image.save(buffer, "PNG")
    return buffer.getvalue()


def _hash_bytes(data: bytes) -> ImageHashes:
    return image_hashes(decode_image(data, _DECODE_LIMIT_BYTES, _DECODE_LIMIT_PIXELS), data)


def _distinct_images(rng: np.random.Generator, formats: Iterator[ImageFormat], count: int,
                     avoid: list[str]) -> list[tuple[bytes, str]]:
    """Draws images until ``count`` are at least MIN_UNRELATED_DISTANCE from each other and from ``avoid``:
    (bytes, content type), each encoded in the next of ``formats``."""
    chosen: list[tuple[bytes, str]] = []
    taken = list(avoid)
    while len(chosen) < count:
        fmt = next(formats)
        data = encode_image(procedural_image(rng), fmt)
        phash = _hash_bytes(data).phash
        if all(hamming(phash, other) >= MIN_UNRELATED_DISTANCE for other in taken):
            chosen.append((data, CONTENT_TYPES[fmt]))
            taken.append(phash)
    return chosen


@lru_cache(maxsize=8)
def _blocklist(seed: int) -> tuple[bytes, ...]:
    rng = np.random.default_rng([seed, _IMAGE_STREAM_BLOCKLIST])
    return tuple(data for data, _ in _distinct_images(rng, itertools.repeat("PNG"), BLOCKLIST_SIZE, []))


def blocklist_images(seed: int) -> list[bytes]:
    """The originals of the block bank's images (PNG; procedural stand-ins), the same for the same seed."""
    return list(_blocklist(seed))


def blocklist_hashes(seed: int) -> list[ImageHashes]:
    """``blocklist_images(seed)``'s hashes, in the same order: what the demo loads into the bank."""
    return [_hash_bytes(data) for data in _blocklist(seed)]


@lru_cache(maxsize=8)
def benign_images(seed: int) -> tuple[tuple[bytes, str], ...]:
    """Ordinary uploads, as (bytes, content type): far from every banked image and from each other."""
    rng = np.random.default_rng([seed, _IMAGE_STREAM_BENIGN])
    bank = [hashes.phash for hashes in blocklist_hashes(seed)]
    formats: Iterator[ImageFormat] = itertools.cycle(("PNG", "PNG", "JPEG"))
    return tuple(_distinct_images(rng, formats, BENIGN_POOL_SIZE, bank))


IMAGE_EDITS: tuple[str, ...] = ("exact", "resize", "jpeg", "colour_shift", "crop", "crop_resize_jpeg")


def edited_reupload(original: bytes, edit: str, rng: random.Random) -> tuple[bytes, str]:
    """The re-upload an evader would make: (bytes, content type). Crops stay at 0.5-2% a side, where pHash
    mostly moves 0-8 bits (12 at worst seen); bigger crops are pHash's known blind spot (PDQ covers more)."""
    if edit == "exact":
        return original, "image/png"
    image = Image.open(io.BytesIO(original)).convert("RGB")
    width, height = image.size
    if edit == "resize":
        scale = rng.uniform(0.6, 1.4)
        return encode_image(image.resize((round(width * scale), round(height * scale))), "PNG"), "image/png"
    if edit == "jpeg":
        return encode_image(image, "JPEG", quality=rng.randint(40, 80)), "image/jpeg"
    if edit == "colour_shift":
        shift = np.array([rng.randint(-20, 20) for _ in range(3)])
        shifted = np.clip(np.asarray(image).astype(int) + shift, 0, 255).astype(np.uint8)
        return encode_image(Image.fromarray(shifted, "RGB"), "PNG"), "image/png"
    left, top, right, bottom = (rng.uniform(0.005, 0.02) for _ in range(4))
    cropped = image.crop((round(width * left), round(height * top),
                          width - round(width * right), height - round(height * bottom)))
    if edit == "crop":
        return encode_image(cropped, "PNG"), "image/png"
    if edit == "crop_resize_jpeg":
        return encode_image(cropped.resize((width, height)), "JPEG", quality=rng.randint(60, 85)), "image/jpeg"
    raise ValueError(f"unknown edit {edit!r}")


# ---- the event stream ------------------------------------------------------------------------------

TARGET_ONLINE_SHARE = 0.25
VOICE_SHARE = 0.08
REAL_BENIGN_SHARE = 0.15
ORDINARY_ACTIONS: tuple[tuple[str, float], ...] = (
    ("switch_room", 0.06), ("heartbeat", 0.16), ("room_chat", 0.47), ("direct_message", 0.16), ("upload", 0.02))


def generate_events(platform: Platform, duration_s: float, events_per_s: float, seed: int, start_ms: int,
                    *, harm: HarmMix = HarmMix(), data_dir: Path = DEFAULT_DATA_DIR) -> Iterator[SimEvent]:
    """About ``duration_s * events_per_s`` events in event-time order (ties allowed), from ``start_ms``.

    Steps arrive as a Poisson process; one step is one action (a login brings its room join with it, a
    logout its leave). Multi-day cases (grooming) are scheduled ahead and only kept while they fit in
    the run, so a short run compresses their days into the time it has.
    """
    if duration_s <= 0 or events_per_s <= 0:
        raise ValueError("duration_s and events_per_s must be positive")
    simulation = _Simulation(platform, seed, start_ms, start_ms + int(duration_s * 1000), harm,
                             load_text_pools(Path(data_dir).resolve()))
    yield from simulation.run(events_per_s)


@dataclass(frozen=True)
class _Truth:
    """An ``InjectedCase`` before its event has an id."""

    case: str
    source: str
    category: str
    expect: Expect
    conversation_id: str | None = None


def _truth(case: str, source: str, category: str | None = None, expect: Expect | None = None,
           conversation_id: str | None = None) -> _Truth:
    spec = CASES[case]
    return _Truth(case, source, category or spec.category, expect or spec.expect, conversation_id)


def _labelled(event_id: str, truth: _Truth | None) -> InjectedCase | None:
    if truth is None:
        return None
    return InjectedCase(event_id, truth.case, truth.category, truth.expect, truth.source, truth.conversation_id)


@dataclass(frozen=True)
class _Scheduled:
    sender: str
    recipient: str | None
    room_id: str | None
    text: str
    truth: _Truth | None


@dataclass
class _Presence:
    """Who is online and in which room; a list plus index so a random pick and a removal are O(1)."""

    online: list[str] = field(default_factory=list)
    position: dict[str, int] = field(default_factory=dict)
    room_of: dict[str, str] = field(default_factory=dict)

    def add(self, user: str, room_id: str) -> None:
        self.position[user] = len(self.online)
        self.online.append(user)
        self.room_of[user] = room_id

    def remove(self, user: str) -> None:
        index = self.position.pop(user)
        last = self.online.pop()
        if last != user:
            self.online[index] = last
            self.position[last] = index
        del self.room_of[user]


class _Simulation:
    def __init__(self, platform: Platform, seed: int, start_ms: int, end_ms: int, harm: HarmMix, pools: TextPools):
        self.platform, self.seed, self.start_ms, self.end_ms, self.pools = platform, seed, start_ms, end_ms, pools
        self.rng = random.Random(f"lifeguard-events:{seed}")
        self.presence = _Presence()
        self.target_online = max(1, round(TARGET_ONLINE_SHARE * len(platform.profiles)))
        self.scheduled: list[tuple[int, int, _Scheduled]] = []
        self.counter = itertools.count()
        self.last_ts = start_ms
        self.user_ids = [p.user_id for p in platform.profiles]
        self.children = [p.user_id for p in platform.profiles if p.age_band in (AgeBand.UNDER_13, None)]
        self.minors = [p.user_id for p in platform.profiles if p.effective_age_band.is_minor]
        self.adults_and_older_teens = [p.user_id for p in platform.profiles
                                       if p.age_band in (AgeBand.ADULT, AgeBand.TEEN_16_17)]
        groomers = set(platform.groomer_ids)  # some declare a teen age: never their own victims
        self.grooming_victims = [p.user_id for p in platform.profiles if p.user_id not in groomers
                                 and p.age_band in (AgeBand.UNDER_13, AgeBand.TEEN_13_15, None)]
        self.offenders = list(platform.offender_ids)
        older = set(self.adults_and_older_teens)
        self.offending_adults_and_older_teens = [u for u in self.offenders if u in older]
        self.room_theme = {room.room_id: room.theme for room in platform.rooms}
        self.room_ids = [room.room_id for room in platform.rooms]
        self.room_weights = list(itertools.accumulate(room.popularity for room in platform.rooms))
        self.dm_friends = {p.user_id: [f for f in p.friend_ids if platform.by_id[f].dm_policy != "nobody"]
                           for p in platform.profiles}
        self.ordinary_actions = [action for action, _ in ORDINARY_ACTIONS]
        self.ordinary_weights = list(itertools.accumulate(weight for _, weight in ORDINARY_ACTIONS))
        self.case_names = [case for case, _ in harm.weights]
        self.case_weights = list(itertools.accumulate(weight for _, weight in harm.weights))
        self.harm_rate = harm.rate
        self.injectors: dict[str, Callable[[int], list[SimEvent] | None]] = {
            "insult_to_child": lambda now: self._child_directed(now, "insult", "insult_to_child"),
            "hate_speech": lambda now: self._real_text_to_room(now, "hate", "hate_speech"),
            "implicit_hate": lambda now: self._real_text_to_room(now, "implicit_hate", "implicit_hate"),
            "threat": lambda now: self._child_directed(now, "threat", "threat"),
            "sexual_to_child": lambda now: self._real_text_to_child(now, "sexual", "sexual_to_child",
                                                                    adult_sender=True),
            "self_harm": self._self_harm,
            "scam": lambda now: self._real_text_to_room(now, "scam", "scam"),
            "malicious_link": self._malicious_link,
            "off_platform_request": lambda now: self._synthetic_to_child(
                now, OFF_PLATFORM_REQUESTS, "off_platform_request"),
            "personal_info_request": lambda now: self._child_directed(now, "personal_info", "personal_info_request"),
            "personal_info_share": self._personal_info_share,
            "grooming_conversation": self._grooming_conversation,
            "banked_image_reupload": self._banked_image_reupload,
        }

    # -- the loop --

    def run(self, events_per_s: float) -> Iterator[SimEvent]:
        now_s = 0.0
        while True:
            now_s += self.rng.expovariate(events_per_s)
            now = self.start_ms + int(now_s * 1000)
            if now >= self.end_ms:
                break
            yield from self._due(now)
            injected = self._inject(now) if self.rng.random() < self.harm_rate else None
            yield from injected if injected is not None else self._ordinary(now)
        yield from self._due(self.end_ms - 1)

    def _due(self, now: int) -> Iterator[SimEvent]:
        while self.scheduled and self.scheduled[0][0] <= now:
            ts, _, message = heapq.heappop(self.scheduled)
            yield from self._message(ts, message.sender, message.recipient, message.room_id, message.text,
                                     message.truth)

    def _ts(self, now: int) -> int:
        self.last_ts = max(now, self.last_ts)
        return self.last_ts

    def _event_id(self, prefix: str) -> str:
        return f"{prefix}-{self.seed}-{next(self.counter)}"

    # -- ordinary activity --

    def _ordinary_action(self) -> str:
        """Logins and logouts pull the number of users online towards ``target_online``."""
        online_share = len(self.presence.online) / self.target_online
        if online_share == 0:
            return "login"
        login = 0.03 + 0.5 * max(0.0, 1 - online_share)
        logout = 0.03 * online_share
        r = self.rng.random() * (login + logout + self.ordinary_weights[-1])
        if r < login:
            return "login"
        if r < login + logout:
            return "logout"
        return self.ordinary_actions[bisect.bisect(self.ordinary_weights, r - login - logout)]

    def _ordinary(self, now: int) -> list[SimEvent]:
        action = self._ordinary_action()
        if action == "login":
            return self._login_someone(now)
        user = self.rng.choice(self.presence.online)
        if action == "logout":
            return self._logout(now, user)
        if action == "switch_room":
            return self._join(now, user, self._pick_room(user))
        if action == "heartbeat":
            return [self._session(now, user, "heartbeat", self.presence.room_of[user])]
        if action == "direct_message" and self.dm_friends[user]:
            friend = self.rng.choice(self.dm_friends[user])
            return self._message(now, user, friend, None, self._ordinary_text("lobby"))
        if action == "upload":
            return self._benign_upload(now, user)
        room_id = self.presence.room_of[user]
        return self._message(now, user, None, room_id, self._ordinary_text(self.room_theme[room_id]))

    def _login_someone(self, now: int) -> list[SimEvent]:
        for _ in range(8):  # a few tries: most users are offline at any time
            user = self.rng.choice(self.user_ids)
            if user not in self.presence.position:
                return self._ensure_online(now, user)
        return [self._session(now, self.rng.choice(self.presence.online), "heartbeat")]

    def _pick_room(self, user: str) -> str:
        if self.rng.random() < 0.8:
            return self.rng.choice(self.platform.favourite_rooms[user])
        return self.rng.choices(self.room_ids, cum_weights=self.room_weights)[0]

    def _ordinary_text(self, theme: str) -> str:
        r = self.rng.random()
        if r < REAL_BENIGN_SHARE:
            return self.rng.choice(self.pools.by_pool["benign"]).text
        templates = THEME_CHAT[theme] if r < 0.55 else GAME_CHAT
        return fill_template(self.rng.choice(templates), self.rng)

    def _benign_upload(self, now: int, user: str) -> list[SimEvent]:
        data, content_type = self.rng.choice(benign_images(self.platform.seed))
        friends = self.dm_friends[user]
        recipient = self.rng.choice(friends) if friends and self.rng.random() < 0.2 else None
        room_id = None if recipient else self.presence.room_of[user]
        return [self._upload(now, user, recipient, room_id, data, content_type, self.rng.choice(CAPTIONS))]

    # -- sessions: every message comes from a user who is online and, for room messages, in the room --

    def _ensure_online(self, now: int, user: str, room_id: str | None = None) -> list[SimEvent]:
        if user in self.presence.position:
            if room_id is None or self.presence.room_of[user] == room_id:
                return []
            return self._join(now, user, room_id)
        room_id = room_id or self._pick_room(user)
        self.presence.add(user, room_id)
        return [self._session(now, user, "login"), self._session(now, user, "join", room_id)]

    def _join(self, now: int, user: str, room_id: str) -> list[SimEvent]:
        previous = self.presence.room_of[user]
        if previous == room_id:
            return [self._session(now, user, "heartbeat", room_id)]
        self.presence.room_of[user] = room_id
        return [self._session(now, user, "leave", previous), self._session(now, user, "join", room_id)]

    def _logout(self, now: int, user: str) -> list[SimEvent]:
        room_id = self.presence.room_of[user]
        self.presence.remove(user)
        return [self._session(now, user, "leave", room_id), self._session(now, user, "logout")]

    # -- records --

    def _session(self, now: int, user: str, event_type: SessionType, room_id: str | None = None) -> SimEvent:
        record = SessionEvent(schema_version=1, event_id=self._event_id("s"), ts=self._ts(now), user_id=user,
                              type=event_type, room_id=room_id)
        return SimEvent("sessions", user, record.model_dump(mode="json"))

    def _message(self, now: int, sender: str, recipient: str | None, room_id: str | None, text: str,
                 truth: _Truth | None = None) -> list[SimEvent]:
        """A chat message, after whatever session events put its sender online and in its room."""
        events = self._ensure_online(now, sender, room_id)
        # Injected text stays verbatim (it is checked against its source row); ordinary chat is
        # sometimes a voice transcript, which comes without case or punctuation.
        voice = truth is None and self.rng.random() < VOICE_SHARE
        if voice:
            text = re.sub(r"[^\w\s']", "", text.lower()).strip() or "hello"
        event_id = self._event_id("c")
        record = ChatMessage(schema_version=1, event_id=event_id, ts=self._ts(now), user_id=sender,
                             room_id=room_id, recipient_id=recipient, channel="voice" if voice else "text", text=text)
        events.append(SimEvent("chat", sender, record.model_dump(mode="json"), _labelled(event_id, truth)))
        return events

    def _upload(self, now: int, sender: str, recipient: str | None, room_id: str | None, data: bytes,
                content_type: str, caption: str, truth: _Truth | None = None) -> SimEvent:
        event_id = self._event_id("up")
        record = Upload(schema_version=1, event_id=event_id, ts=self._ts(now), user_id=sender, room_id=room_id,
                        recipient_id=recipient, content_type=content_type,
                        image_b64=base64.b64encode(data).decode("ascii"), caption=caption)
        return SimEvent("uploads", sender, record.model_dump(mode="json"), _labelled(event_id, truth))

    # -- injected cases: each returns None when it cannot be made here (then the step is ordinary) --

    def _inject(self, now: int) -> list[SimEvent] | None:
        case = self.rng.choices(self.case_names, cum_weights=self.case_weights)[0]
        return self.injectors[case](now)

    # Most harm comes from a few accounts: 60% of senders are offenders, where there are any to pick.

    def _any_sender(self) -> str:
        pool = self.offenders if self.offenders and self.rng.random() < 0.6 else self.user_ids
        return self.rng.choice(pool)

    def _older_sender(self) -> str | None:
        """An adult or a 16-17-year-old, for the cases that come from strangers older than the child."""
        offenders, candidates = self.offending_adults_and_older_teens, self.adults_and_older_teens
        pool = offenders if offenders and self.rng.random() < 0.6 else candidates
        return self.rng.choice(pool) if pool else None

    def _may_write(self, sender: str, child: str) -> bool:
        """Whether the child's contact setting lets `sender` send a direct message: where it does not, the
        platform's own client does not offer one, and an injected case would be caught by the setting
        rather than by what it says."""
        return contact_allowed(self.platform.by_id[sender], self.platform.by_id[child])

    def _to_child(self, now: int, sender: str, text: str, truth: _Truth) -> list[SimEvent] | None:
        """A DM to a child whose settings allow it, or a message in a child's room (the sender joins it first)."""
        child = self._child_other_than(sender)
        if child is None:
            return None
        if self.rng.random() < 0.6 and self._may_write(sender, child):
            return self._message(now, sender, child, None, text, truth)
        room_id = self.presence.room_of.get(child) or self.platform.favourite_rooms[child][0]
        return self._message(now, sender, None, room_id, text, truth)

    def _to_own_room(self, now: int, sender: str, text: str, truth: _Truth) -> list[SimEvent]:
        room_id = self.presence.room_of.get(sender) or self._pick_room(sender)
        return self._message(now, sender, None, room_id, text, truth)

    def _child_other_than(self, user: str) -> str | None:
        for _ in range(4):  # a child offender can draw themselves
            child = self.rng.choice(self.children) if self.children else None
            if child != user:
                return child
        return None

    def _real_text_to_child(self, now: int, pool: str, case: str, adult_sender: bool = False) -> list[SimEvent] | None:
        item = self._pick_text(pool)
        sender = self._older_sender() if adult_sender else self._any_sender()
        if item is None or sender is None:
            return None
        return self._to_child(now, sender, item.text, _truth(case, item.source, item.category))

    def _child_directed(self, now: int, pool: str, case: str) -> list[SimEvent] | None:
        """A child-directed test message to a child, from someone of the age its author wrote it for."""
        item = self._pick_text(pool)
        if item is None:
            return None
        if item.pair == "child_to_child":
            sender = self.rng.choice(self.children) if self.children else None
        else:
            sender = self._older_sender()
        if sender is None:
            return None
        return self._to_child(now, sender, item.text, _truth(case, item.source, item.category))

    def _real_text_to_room(self, now: int, pool: str, case: str) -> list[SimEvent] | None:
        item = self._pick_text(pool)
        if item is None:
            return None
        return self._to_own_room(now, self._any_sender(), item.text, _truth(case, item.source, item.category))

    def _pick_text(self, pool: str) -> SourcedText | None:
        items = self.pools.by_pool[pool]
        return self.rng.choice(items) if items else None

    def _self_harm(self, now: int) -> list[SimEvent] | None:
        item = self._pick_text("self_harm")
        if item is None or not self.minors:
            return None
        sender = self.rng.choice(self.minors)  # the child at risk writes it
        friends, truth = self.dm_friends[sender], _truth("self_harm", item.source)
        if friends and self.rng.random() < 0.6:
            return self._message(now, sender, self.rng.choice(friends), None, item.text, truth)
        return self._to_own_room(now, sender, item.text, truth)

    def _malicious_link(self, now: int) -> list[SimEvent] | None:
        if not self.pools.links:
            return None
        link = self.rng.choice(self.pools.links)
        text = fill_template(self.rng.choice(LINK_LURES), self.rng, url=render_link(link.target, self.rng))
        return self._to_own_room(now, self._any_sender(), text,
                                 _truth("malicious_link", f"urlhaus-malicious-urls:{link.entry}"))

    def _synthetic_to_child(self, now: int, templates: tuple[str, ...], case: str) -> list[SimEvent] | None:
        sender = self._older_sender()
        if sender is None:
            return None
        text = fill_template(self.rng.choice(templates), self.rng)
        return self._to_child(now, sender, text, _truth(case, f"synthetic:{case}"))

    def _personal_info_share(self, now: int) -> list[SimEvent] | None:
        if not self.children:
            return None
        text = fill_template(self.rng.choice(PERSONAL_INFO_SHARES), self.rng)
        return self._to_own_room(now, self.rng.choice(self.children), text,
                                 _truth("personal_info_share", "synthetic:personal_info_share"))

    def _banked_image_reupload(self, now: int) -> list[SimEvent]:
        bank = _blocklist(self.platform.seed)
        index = self.rng.randrange(len(bank))
        edit = self.rng.choice(IMAGE_EDITS)
        data, content_type = edited_reupload(bank[index], edit, self.rng)
        sender = self._any_sender()
        events = self._ensure_online(now, sender)
        child = self._child_other_than(sender) if self.rng.random() < 0.3 else None
        recipient, room_id = (child, None) if child else (None, self.presence.room_of[sender])
        caption = self.rng.choice(("lol look", "", "check this", "haha"))
        events.append(self._upload(now, sender, recipient, room_id, data, content_type, caption,
                                   _truth("banked_image_reupload", f"blocklist:{index}:{edit}")))
        return events

    def _grooming_conversation(self, now: int) -> list[SimEvent] | None:
        """Schedules the whole arc ahead (over up to three days) and emits its first message now."""
        span = min(GROOMING_MAX_SPAN_MS, int(0.8 * (self.end_ms - now)))
        groomers, victims = self.platform.groomer_ids, self.grooming_victims
        if span < 30_000 or not groomers or not victims:
            return None
        groomer, child = self.rng.choice(groomers), self.rng.choice(victims)
        if not self._may_write(groomer, child):  # this child's parents' setting keeps the groomer out
            return None
        conversation_id = f"groom-{self.seed}-{next(self.counter)}"
        room_id = self.platform.favourite_rooms[child][0]
        messages: list[_Scheduled] = []
        for stage in GROOMING_STAGES:
            for _ in range(self.rng.randint(1, 2)):
                text = fill_template(self.rng.choice(stage.lines), self.rng)
                truth = _truth("grooming_conversation", f"synthetic:grooming/{stage.name}", expect=stage.expect,
                               conversation_id=conversation_id)
                messages.append(_Scheduled(groomer, None if stage.to_room else child,
                                           room_id if stage.to_room else None, text, truth))
                if stage.replies and self.rng.random() < 0.6:
                    messages.append(_Scheduled(child, groomer, None, self.rng.choice(stage.replies), None))
        offsets = sorted(self.rng.randrange(1, span) for _ in messages[1:])
        for offset, message in zip(offsets, messages[1:]):
            heapq.heappush(self.scheduled, (now + offset, next(self.counter), message))
        first = messages[0]
        return self._message(now, first.sender, first.recipient, first.room_id, first.text, first.truth)


# ---- a child's day of play ------------------------------------------------------------------------

PLAY_HEARTBEAT_MS = 30_000


def play_day(platform: Platform, child_ids: Iterable[str], seed: int, day_start_ms: int,
             sessions_per_child: int = 2) -> list[SimEvent]:
    """A day of play for some children, in event-time order: each session the child logs in to a
    favourite room and is joined there by one or two friends and, for part of the time, by one or two
    strangers (users not on the child's friend list, any age); heartbeats every 30 s; the child chats with
    a friend, and sometimes a stranger writes to the child directly. For the feature job's demo and tests."""
    rng = random.Random(f"lifeguard-day:{seed}")
    ids = itertools.count()
    events: list[SimEvent] = []

    def session(ts: int, user: str, kind: SessionType, room: str | None = None) -> None:
        record = SessionEvent(schema_version=1, event_id=f"d{seed}-s-{next(ids)}", ts=ts, user_id=user, type=kind,
                              room_id=room)
        events.append(SimEvent("sessions", user, record.model_dump(mode="json")))

    def message(ts: int, user: str, text: str, room: str | None = None, to: str | None = None) -> None:
        record = ChatMessage(schema_version=1, event_id=f"d{seed}-c-{next(ids)}", ts=ts, user_id=user,
                             room_id=room, recipient_id=to, channel="text", text=text)
        events.append(SimEvent("chat", user, record.model_dump(mode="json")))

    def visit(user: str, room: str, start: int, end: int) -> None:
        session(start, user, "login")
        session(start, user, "join", room)
        for ts in range(start + PLAY_HEARTBEAT_MS, end, PLAY_HEARTBEAT_MS):
            session(ts, user, "heartbeat", room)
        session(end, user, "leave", room)
        session(end, user, "logout")

    for child_id in child_ids:
        child = platform.by_id[child_id]
        strangers = [p.user_id for p in platform.profiles if p.user_id != child_id and not child.is_friend(p.user_id)]
        # Afternoon and evening sessions, in the child's day (the day starts at day_start_ms).
        starts = sorted(rng.sample(range(15 * 60, 20 * 60, 30), sessions_per_child))
        for start_min in starts:
            start = day_start_ms + start_min * 60_000
            end = start + rng.randint(20, 50) * 60_000
            room = rng.choice(platform.favourite_rooms[child_id])
            visit(child_id, room, start, end)
            for friend in rng.sample(child.friend_ids, min(len(child.friend_ids), rng.randint(1, 2))):
                joined = start + rng.randint(0, 5) * 60_000
                visit(friend, room, joined, min(end, joined + rng.randint(10, 40) * 60_000))
                message(joined + 60_000, child_id, fill_template(rng.choice(GAME_CHAT), rng), room=room)
            for stranger in rng.sample(strangers, min(len(strangers), rng.randint(1, 2))):
                joined = start + rng.randint(5, 15) * 60_000
                left = min(end, joined + rng.randint(5, 20) * 60_000)
                visit(stranger, room, joined, left)
                if rng.random() < 0.3:
                    message(joined + 30_000, stranger, fill_template(rng.choice(GAME_CHAT), rng), to=child_id)
    events.sort(key=lambda e: e.value["ts"])
    return events


def render_link(target: str, rng: random.Random) -> str:
    """A link as users write it: with or without a scheme, sometimes defanged to slip past filters."""
    host, slash, path = target.partition("/")
    style = rng.choice(("http", "https", "bare", "hxxp", "brackets", "dot"))
    if style == "http":
        return f"http://{target}"
    if style == "https":
        return f"https://{target}"
    if style == "bare":
        return target
    if style == "hxxp":
        return f"hxxp://{host.replace('.', '[.]')}{slash}{path}"
    if style == "brackets":
        return f"{host.replace('.', '[.]')}{slash}{path}"
    return f"{host.replace('.', '(dot)')}{slash}{path}"


def refang(text: str) -> str:
    """Undoes ``render_link``'s defanging, for checks that a link's host is in a message."""
    return text.replace("[.]", ".").replace("(dot)", ".").replace("hxxp://", "http://")


# ---- malformed input ---------------------------------------------------------------------------------

def malformed_records(n: int, seed: int, oversize_bytes: int = LimitsConfig().max_record_bytes + 1
                      ) -> list[tuple[str, bytes]]:
    """``n`` (topic, raw value) records that a consumer must dead-letter, cycling through every kind of
    fault in MALFORMED_KINDS in a seeded order. Oversize records are otherwise valid chat messages of
    ``oversize_bytes`` bytes, so only a size check rejects them."""
    rng = random.Random(f"lifeguard-malformed:{seed}")
    kinds = list(MALFORMED_KINDS)
    records = []
    for i in range(n):
        if i % len(kinds) == 0:
            rng.shuffle(kinds)
        records.append(MALFORMED_KINDS[kinds[i % len(kinds)]](rng, oversize_bytes))
    return records


def _valid_record(topic: str, rng: random.Random) -> dict:
    base = {"schema_version": 1, "event_id": f"bad-{rng.randrange(10**9)}", "ts": 1767225600000 + rng.randrange(10**6),
            "user_id": f"u-{rng.randrange(1000)}"}
    if topic == "chat":
        return {**base, "room_id": "r-lobby", "recipient_id": None, "channel": "text", "text": "gg"}
    if topic == "uploads":
        return {**base, "room_id": "r-lobby", "recipient_id": None, "content_type": "image/png",
                "image_b64": "iVBORw0KGgo=", "uri": None, "caption": ""}
    return {**base, "type": "join", "room_id": "r-lobby"}


def _as_bytes(record: object) -> bytes:
    return json.dumps(record).encode("utf-8")


def _with(topic: str, rng: random.Random, **changes: object) -> tuple[str, bytes]:
    return topic, _as_bytes({**_valid_record(topic, rng), **changes})


def _without(topic: str, rng: random.Random, key: str) -> tuple[str, bytes]:
    record = _valid_record(topic, rng)
    del record[key]
    return topic, _as_bytes(record)


def _any_topic(rng: random.Random) -> str:
    return rng.choice(("chat", "uploads", "sessions"))


def _truncated_json(rng: random.Random, _: int) -> tuple[str, bytes]:
    topic = _any_topic(rng)
    raw = _as_bytes(_valid_record(topic, rng))
    return topic, raw[: rng.randrange(1, len(raw) - 1)]


def _not_utf8(rng: random.Random, _: int) -> tuple[str, bytes]:
    raw = _as_bytes({**_valid_record("chat", rng), "text": "PLACEHOLDER"})
    return "chat", raw.replace(b"PLACEHOLDER", rng.choice((b"caf\xe9", b"\xff\xfe gg", b"\xc3\x28")))


def _oversize(rng: random.Random, oversize_bytes: int) -> tuple[str, bytes]:
    record = _valid_record("chat", rng)
    padding = oversize_bytes - len(_as_bytes({**record, "text": ""}))
    return "chat", _as_bytes({**record, "text": "a" * max(padding, 1)})


MALFORMED_KINDS: dict[str, Callable[[random.Random, int], tuple[str, bytes]]] = {
    "not_json_text": lambda rng, _: (_any_topic(rng), rng.choice((b"hello", b"", b"{'user_id': 'u-1'}", b"<xml/>"))),
    "truncated_json": _truncated_json,
    "json_not_object": lambda rng, _: (_any_topic(rng), rng.choice((b"[1, 2, 3]", b"null", b"42", b'"chat"'))),
    "not_utf8": _not_utf8,
    "ts_wrong_type": lambda rng, _: _with(_any_topic(rng), rng,
                                          ts=rng.choice(("1767225600000", 1.7672256e12, True, -5))),
    "id_wrong_type": lambda rng, _: _with(_any_topic(rng), rng, user_id=rng.choice((17, None, "", ["u-1"]))),
    "text_wrong_type": lambda rng, _: _with("chat", rng, text=rng.choice((None, 42, ["gg"], {"t": "gg"}))),
    "version_as_string": lambda rng, _: _with(_any_topic(rng), rng, schema_version="1"),
    "unknown_version": lambda rng, _: _with(_any_topic(rng), rng, schema_version=rng.choice((0, 2, 99))),
    "missing_field": lambda rng, _: _without(_any_topic(rng), rng,
                                             rng.choice(("event_id", "user_id", "ts", "schema_version"))),
    "missing_chat_text": lambda rng, _: _without("chat", rng, rng.choice(("text", "channel"))),
    "both_destinations": lambda rng, _: _with(rng.choice(("chat", "uploads")), rng, room_id="r-lobby",
                                              recipient_id="u-5"),
    "no_destination": lambda rng, _: _with(rng.choice(("chat", "uploads")), rng, room_id=None, recipient_id=None),
    "upload_both_sources": lambda rng, _: _with("uploads", rng, uri="https://cdn.example/x.png"),
    "upload_no_source": lambda rng, _: _with("uploads", rng, image_b64=None),
    "unknown_channel": lambda rng, _: _with("chat", rng, channel=rng.choice(("sms", "TEXT", ""))),
    "unknown_session_type": lambda rng, _: _with("sessions", rng, type=rng.choice(("teleport", "LOGIN", ""))),
    "join_without_room": lambda rng, _: _with("sessions", rng, type=rng.choice(("join", "leave")), room_id=None),
    "oversize": _oversize,
}
