"""tools.simulator: a platform that looks like the spec, events that are valid, truth that is honest."""
from __future__ import annotations

import base64
import collections
import dataclasses
import hashlib
import json
import os
import subprocess
import sys
import zoneinfo

import pytest
from pydantic import ValidationError

from lifeguard.profiles import UserProfile
from lifeguard import PROJECT_ROOT
from lifeguard.config import LimitsConfig
from lifeguard.schemas import INPUT_SCHEMAS, AgeBand
from tools.simulator import AGE_MIX, CASES, DEFAULT_DATA_DIR, MALFORMED_KINDS, MIN_UNRELATED_DISTANCE, \
    HarmMix, SimEvent, blocklist_hashes, build_platform, generate_events, malformed_records, play_day, refang
from models.datasets import DATA_SETS, load
from models.splits import split_of
from udfs.images import decode_image, hamming, image_hashes, match_bank

START_MS = 1_767_225_600_000  # 2026-01-01T00:00:00Z
MAX_REUPLOAD_DISTANCE = 12  # see tests/test_images.py: pHash moves up to this much under a 2% crop
NOT_FROM_DATA = ("synthetic:", "blocklist:", "urlhaus-malicious-urls:")


@pytest.fixture(scope="module")
def platform():
    return build_platform(n_users=1000, seed=11, now_ms=START_MS)


@pytest.fixture(scope="module")
def events(platform) -> list[SimEvent]:
    return list(generate_events(platform, duration_s=600, events_per_s=100, seed=11, start_ms=START_MS))


def _injected(events: list[SimEvent]) -> list[SimEvent]:
    return [event for event in events if event.truth is not None]


def _digest(platform, events) -> str:
    payload = json.dumps([[dataclasses.asdict(p) for p in platform.profiles],
                          [[e.topic, e.key, e.value, e.truth and dataclasses.asdict(e.truth)] for e in events]],
                         sort_keys=True, default=str)
    return hashlib.sha256(payload.encode()).hexdigest()


# ---- determinism ------------------------------------------------------------------------------------------

def test_same_seed_same_platform_and_events():
    runs = [(p := build_platform(300, seed=4, now_ms=START_MS),
             list(generate_events(p, duration_s=30, events_per_s=200, seed=4, start_ms=START_MS))) for _ in range(2)]
    assert runs[0][0] == runs[1][0]
    assert runs[0][1] == runs[1][1]
    assert len(runs[0][1]) > 5_000


def test_another_seed_gives_other_events():
    platform = build_platform(300, seed=4, now_ms=START_MS)
    first = list(generate_events(platform, duration_s=20, events_per_s=100, seed=4, start_ms=START_MS))
    second = list(generate_events(platform, duration_s=20, events_per_s=100, seed=5, start_ms=START_MS))
    assert [e.value for e in first] != [e.value for e in second]
    assert build_platform(300, seed=4, now_ms=START_MS) != build_platform(300, seed=5, now_ms=START_MS)


_DIGEST_SCRIPT = """
import sys
sys.path.insert(0, {tests!r})
from test_simulator import START_MS, _digest
from tools.simulator import build_platform, generate_events
platform = build_platform(300, seed=4, now_ms=START_MS)
print(_digest(platform, list(generate_events(platform, duration_s=30, events_per_s=200, seed=4, start_ms=START_MS))))
"""


def test_same_seed_same_output_in_another_process():
    """Catches any dependence on str hashing (set order), which differs between processes."""
    platform = build_platform(300, seed=4, now_ms=START_MS)
    here = _digest(platform, list(generate_events(platform, duration_s=30, events_per_s=200, seed=4,
                                                  start_ms=START_MS)))
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    script = _DIGEST_SCRIPT.format(tests=str(PROJECT_ROOT / "tests"))
    there = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, check=True,
                           cwd=PROJECT_ROOT)
    assert there.stdout.strip() == here


# ---- the platform ---------------------------------------------------------------------------------------

def test_age_mix_is_as_specified():
    platform = build_platform(5000, seed=2, now_ms=START_MS)
    counts = collections.Counter(p.age_band for p in platform.profiles)
    for band, share in AGE_MIX:
        # Groomers who declare a teen age move at most 0.3% of users from adult to 13-15.
        assert abs(counts[band] / 5000 - share) <= 0.005, band


def test_friendships_are_symmetric_and_mostly_between_similar_ages(platform):
    by_id, order = platform.by_id, [band for band, _ in AGE_MIX if band is not None]
    similar = total = 0
    for profile in platform.profiles:
        assert profile.user_id not in profile.friend_ids
        assert len(set(profile.friend_ids)) == len(profile.friend_ids)
        for friend_id in profile.friend_ids:
            friend = by_id[friend_id]
            assert profile.user_id in friend.friend_ids, (profile.user_id, friend_id)
            if profile.age_band is not None and friend.age_band is not None:
                total += 1
                similar += abs(order.index(profile.age_band) - order.index(friend.age_band)) <= 1
    assert total > 1000
    assert similar / total >= 0.9


def test_parents_settings_and_accounts(platform):
    by_band = collections.defaultdict(list)
    for profile in platform.profiles:
        by_band[profile.age_band].append(profile)
        number = profile.user_id.removeprefix("u-")
        assert profile.parent_id in (None, f"p-{number}")
        assert profile.dm_policy in ("everyone", "friends", "nobody")
        assert profile.daily_limit_minutes == 0 or profile.parent_id is not None
        assert profile.account_created_ts < platform.now_ms
        assert 0 <= profile.reputation <= 1
        zoneinfo.ZoneInfo(profile.timezone)
        assert set(platform.favourite_rooms[profile.user_id]) <= {room.room_id for room in platform.rooms}

    def linked(band):
        return sum(p.parent_id is not None for p in by_band[band]) / len(by_band[band])

    assert linked(AgeBand.UNDER_13) >= 0.75
    assert 0.3 <= linked(AgeBand.TEEN_13_15) <= 0.7
    assert linked(AgeBand.ADULT) == 0
    assert any(p.daily_limit_minutes > 0 for p in by_band[AgeBand.UNDER_13])
    assert any(p.dm_policy == "nobody" for p in by_band[AgeBand.UNDER_13])
    assert len({room.room_id for room in platform.rooms}) == len(platform.rooms) >= 9


def test_offenders_and_groomers(platform):
    assert 20 <= len(platform.offender_ids) <= 60
    assert platform.groomer_ids
    for groomer_id in platform.groomer_ids:
        groomer = platform.by_id[groomer_id]
        assert groomer.age_band in (AgeBand.ADULT, AgeBand.TEEN_13_15)  # some lie about their age
        assert groomer.parent_id is None
        assert all(platform.by_id[f].age_band is AgeBand.ADULT for f in groomer.friend_ids)


def test_profiles_are_the_feast_profile(platform):
    assert all(type(p) is UserProfile for p in platform.profiles)


# ---- the events -----------------------------------------------------------------------------------------

def test_every_value_validates_against_its_topic_schema(events):
    assert {e.topic for e in events} == set(INPUT_SCHEMAS)
    for event in events:
        record = INPUT_SCHEMAS[event.topic].model_validate_json(json.dumps(event.value))
        assert record.user_id == event.key


def test_rate_time_order_and_unique_ids(events):
    assert 60_000 * 0.9 <= len(events) <= 60_000 * 1.4  # one step may bring a join or a leave with it
    timestamps = [e.value["ts"] for e in events]
    assert timestamps == sorted(timestamps)
    assert START_MS <= timestamps[0] and timestamps[-1] < START_MS + 600_000
    assert len({e.value["event_id"] for e in events}) == len(events)


def test_mostly_ordinary_chat_and_play(events):
    topics = collections.Counter(e.topic for e in events)
    assert 0.5 <= topics["chat"] / len(events) <= 0.7
    assert 0.3 <= topics["sessions"] / len(events) <= 0.45
    assert 0.01 <= topics["uploads"] / len(events) <= 0.04
    chat = [e.value for e in events if e.topic == "chat"]
    direct = sum(v["recipient_id"] is not None for v in chat)
    assert 0.15 <= direct / len(chat) <= 0.35
    assert any(v["channel"] == "voice" for v in chat)
    assert len(collections.Counter(e.value["type"] for e in events if e.topic == "sessions")) == 5


def test_sessions_are_consistent(events):
    """Every message comes from a user who logged in and, in a room, joined it; joins and leaves pair up."""
    room_of: dict[str, str | None] = {}
    for event in events:
        value, user = event.value, event.key
        if event.topic == "sessions":
            kind = value["type"]
            if kind == "login":
                assert user not in room_of
                room_of[user] = None
            elif kind == "join":
                assert room_of[user] is None
                room_of[user] = value["room_id"]
            elif kind == "leave":
                assert room_of[user] == value["room_id"]
                room_of[user] = None
            elif kind == "logout":
                assert room_of.pop(user) is None
            else:
                assert user in room_of
        else:
            assert user in room_of, value["event_id"]
            if value["room_id"] is not None:
                assert room_of[user] == value["room_id"], value["event_id"]


def test_ordinary_direct_messages_go_to_friends(platform, events):
    for event in events:
        if event.topic == "chat" and event.truth is None and event.value["recipient_id"] is not None:
            sender, recipient = platform.by_id[event.key], event.value["recipient_id"]
            # Groomed children answer their groomer: not a friend, and not injected.
            assert sender.is_friend(recipient) or recipient in platform.groomer_ids


# ---- injected cases -------------------------------------------------------------------------------------

def test_injected_cases_are_rare_and_all_kinds_appear(events):
    injected = _injected(events)
    assert 0.005 <= len(injected) / len(events) <= 0.03
    assert {e.truth.case for e in injected} == {case for case, _ in HarmMix().weights}


def test_truth_labels_are_well_formed(events):
    for event in _injected(events):
        truth = event.truth
        assert truth.event_id == event.value["event_id"]
        assert truth.expect in ("block", "review")
        assert truth.case in CASES
        assert truth.category == CASES[truth.case].category or (truth.case, truth.category) == (
            "sexual_to_child", "sexual_minors")
        assert (truth.conversation_id is not None) == (truth.case == "grooming_conversation")
        assert truth.source


def test_grooming_conversations(platform, events):
    conversations = collections.defaultdict(list)
    for event in _injected(events):
        if event.truth.conversation_id:
            conversations[event.truth.conversation_id].append(event)
    assert len(conversations) >= 3
    for messages in conversations.values():
        groomer = messages[0].key
        children = {m.value["recipient_id"] for m in messages} - {None}
        assert groomer in platform.groomer_ids and all(m.key == groomer for m in messages)
        assert len(children) == 1
        child = platform.by_id[children.pop()]
        assert child.effective_age_band in (AgeBand.UNDER_13, AgeBand.TEEN_13_15)
        assert not child.is_friend(groomer)
        assert messages[0].value["room_id"] is not None  # first contact in a room, then DMs
        assert [m.truth.expect for m in messages][-1] == "block"
        assert all(m.truth.source.startswith("synthetic:grooming/") for m in messages)


@pytest.fixture(scope="module")
def trainer_texts() -> dict[str, dict[str, str]]:
    """Per data set, what the model's training code reads: test-split texts and all others, each joined
    into one lower-cased, whitespace-collapsed string (one record a line) for substring checks."""
    joined = {}
    for data_set in DATA_SETS:
        parts = collections.defaultdict(list)
        for record in load(data_set, DEFAULT_DATA_DIR):
            parts["test" if split_of(record.text) == "test" else "seen"].append(" ".join(record.text.lower().split()))
        joined[data_set.name] = {side: "\n".join(texts) for side, texts in parts.items()}
    return joined


def test_injected_real_text_comes_only_from_the_test_split(events, trainer_texts):
    """Each message from a data set is part of a test-split record as the trainer reads it, and of no
    training or validation record: the demo's catch rate is not measured on text the model learnt."""
    messages = {(e.truth.source.split(":")[0], e.value["text"]) for e in _injected(events)
                if not e.truth.source.startswith(NOT_FROM_DATA)}
    assert len({data_set for data_set, _ in messages}) >= 5
    for data_set, text in messages:
        message = " ".join(text.lower().split())
        assert message in trainer_texts[data_set]["test"], (data_set, text)
        assert message not in trainer_texts[data_set]["seen"], (data_set, text)


def test_injected_links_are_test_split_urlhaus_entries(events):
    entries = (DEFAULT_DATA_DIR / "urlhaus-malicious-urls" / "urlhaus-filter-online.txt").read_text().splitlines()
    links = [e for e in _injected(events) if e.truth.case == "malicious_link"]
    assert links
    for event in links:
        entry = event.truth.source.removeprefix("urlhaus-malicious-urls:")
        assert entry in entries
        assert split_of(entry) == "test"
        target = entry.removeprefix("||").removesuffix("^$all")
        assert target in refang(event.value["text"])


def test_banked_reuploads_match_the_bank_and_benign_uploads_do_not(platform, events):
    bank = [hashes.phash for hashes in blocklist_hashes(platform.seed)]
    reuploads = benign = 0
    for event in events:
        if event.topic != "uploads":
            continue
        data = base64.b64decode(event.value["image_b64"])
        assert len(data) < 20_000  # small inline images
        phash = image_hashes(decode_image(data, 1_000_000, 1_000_000), data).phash
        if event.truth is None:
            benign += 1
            assert min(hamming(phash, banked) for banked in bank) >= MIN_UNRELATED_DISTANCE
        else:
            reuploads += 1
            index = int(event.truth.source.split(":")[1])
            assert match_bank(phash, bank, MAX_REUPLOAD_DISTANCE) == (bank[index], hamming(phash, bank[index]))
    assert reuploads >= 10 and benign >= 500


def test_no_harm_when_the_rate_is_zero(platform):
    quiet = generate_events(platform, duration_s=60, events_per_s=100, seed=1, start_ms=START_MS,
                            harm=HarmMix(rate=0.0))
    assert not any(event.truth for event in quiet)


def test_harm_mix_rejects_unknown_cases():
    with pytest.raises(ValueError):
        HarmMix(weights=(("insult_to_child", 1.0), ("made_up", 1.0)))


# ---- malformed records ----------------------------------------------------------------------------------

def _accepted(topic: str, raw: bytes) -> bool:
    """Accepted by either way a consumer might parse: json then the model, or the model's JSON parser."""
    schema = INPUT_SCHEMAS[topic]
    try:
        schema.model_validate(json.loads(raw.decode("utf-8")))
        return True
    except (UnicodeDecodeError, json.JSONDecodeError, ValidationError):
        pass
    try:
        schema.model_validate_json(raw)
        return True
    except ValidationError:
        return False


def test_malformed_records_are_all_rejected():
    limit = LimitsConfig().max_record_bytes
    records = malformed_records(2 * len(MALFORMED_KINDS), seed=3)
    oversize = [(topic, raw) for topic, raw in records if len(raw) > limit]
    assert len(oversize) == 2
    for topic, raw in records:
        assert topic in INPUT_SCHEMAS
        if len(raw) > limit:
            assert _accepted(topic, raw)  # valid but for its size: only the size check stops it
        else:
            assert not _accepted(topic, raw), (topic, raw[:200])


def test_malformed_records_cover_every_fault_and_are_deterministic():
    records = malformed_records(len(MALFORMED_KINDS), seed=8, oversize_bytes=5_000)
    assert len(records) == len(MALFORMED_KINDS)
    assert [len(raw) for _, raw in records].count(5_000) == 1
    assert records == malformed_records(len(MALFORMED_KINDS), seed=8, oversize_bytes=5_000)
    assert records != malformed_records(len(MALFORMED_KINDS), seed=9, oversize_bytes=5_000)
    assert any(raw.startswith(b"{") and not raw.endswith(b"}") for _, raw in records)  # truncated JSON
    with pytest.raises(UnicodeDecodeError):
        next(raw for _, raw in records if b"\xff" in raw or b"\xe9" in raw or b"\xc3\x28" in raw).decode("utf-8")


# ---- a day of play --------------------------------------------------------------------------------------

def test_play_day_puts_children_with_friends_and_strangers(platform):
    from features.sessions import UserSessions
    from features.stranger_time import stranger_time

    children = [p.user_id for p in platform.profiles if p.age_band is AgeBand.UNDER_13 and p.friend_ids][:4]
    events = play_day(platform, children, seed=3, day_start_ms=START_MS)
    assert events == play_day(platform, children, seed=3, day_start_ms=START_MS)
    assert [e.value["ts"] for e in events] == sorted(e.value["ts"] for e in events)
    trackers: dict[str, UserSessions] = {}
    for event in events:
        INPUT_SCHEMAS[event.topic].model_validate_json(json.dumps(event.value))
        if event.topic == "sessions":
            record = INPUT_SCHEMAS["sessions"].model_validate(event.value)
            trackers.setdefault(event.key, UserSessions(event.key)).offer(record, record.ts, 0)
    pieces = [p for tracker in trackers.values() for p in tracker.advance(START_MS + 2 * 86_400_000)]
    by_child = {s.child_id: s for s in stranger_time(pieces, platform.by_id)}
    for child in children:
        own = [p for p in pieces if p.user_id == child]
        friends_there = [p for p in pieces if platform.by_id[child].is_friend(p.user_id) and
                         any(p.room_id == o.room_id and p.start_ms < o.end_ms and o.start_ms < p.end_ms for o in own)]
        assert friends_there, child
        assert 0 < by_child[child].stranger_ms < sum(p.duration_ms for p in own), child
