import base64
import json

import pytest

from lifeguard.schemas import ChatMessage, EXAMPLES
from udfs.parse import Rejected, SourceRef, dead_letter, parse_event

CHAT = EXAMPLES["chat"]


def raw(**changes) -> bytes:
    return json.dumps({**CHAT, **changes}).encode()


def test_valid_chat_parses():
    event = parse_event("chat", raw(), 10_000)
    assert isinstance(event, ChatMessage) and event.is_direct and event.text == CHAT["text"]


@pytest.mark.parametrize("value, kind, says", [
    (b"", "invalid", "empty"),
    (b"not json", "not_json", "JSON"),
    (b"\xff\xfe{}", "not_utf8", "UTF-8"),
    (b"[1, 2]", "invalid", "JSON object"),
    (raw(schema_version=2), "unknown_version", "schema_version 2"),
    (raw(ts="yesterday"), "invalid", "ts"),
    (raw(text=None), "invalid", "text"),
    (raw(room_id="r-1"), "invalid", "exactly one of room_id"),
    (raw(channel="sms"), "invalid", "channel"),
    (json.dumps({k: v for k, v in CHAT.items() if k != "user_id"}).encode(), "invalid", "user_id"),
    (raw(text="x" * 20_000), "oversize", "limit"),
])
def test_bad_records_are_rejected_with_a_reason(value, kind, says):
    with pytest.raises(Rejected) as caught:
        parse_event("chat", value, 10_000)
    assert caught.value.error_kind == kind
    assert says in caught.value.reason


def test_dead_letter_keeps_original_bytes_and_position():
    value = b"\xff not json"
    with pytest.raises(Rejected) as caught:
        parse_event("chat", value, 10_000)
    letter = dead_letter(SourceRef("chat", 1, 42, 0), value, caught.value, now_ms=5)
    assert base64.b64decode(letter.original_b64) == value
    assert (letter.source_topic, letter.source_partition, letter.source_offset) == ("chat", 1, 42)


def test_rejected_record_keeps_its_event_id_when_readable():
    with pytest.raises(Rejected) as caught:
        parse_event("chat", raw(schema_version=9), 10_000)
    assert caught.value.event_id == CHAT["event_id"]


CHAT_WITH_TEXT = ('{"schema_version": 1, "event_id": "c-1", "ts": 1, "user_id": "u", "channel": "text", '
                  '"room_id": "r", "text": "%s"}')


@pytest.mark.parametrize("value, error_kind, reason_part", [
    (b"[" * 100_000, "not_json", "RecursionError"),                        # nesting past the recursion limit
    (b'{"schema_version": 1, "n": ' + b"9" * 5_000 + b"}", "not_json", "4300 digits"),  # past int's digit cap
    ((CHAT_WITH_TEXT % "hi \\ud800").encode(), "not_utf8", "lone surrogate"),  # fails every later encode
    ((CHAT_WITH_TEXT % "\\udfff").encode(), "not_utf8", "lone surrogate"),
])
def test_hostile_records_are_rejected_with_a_reason_not_an_exception(value, error_kind, reason_part):
    with pytest.raises(Rejected) as rejected:
        parse_event("chat", value, 10 ** 7)
    assert rejected.value.error_kind == error_kind and reason_part in rejected.value.reason


def test_a_surrogate_pair_escape_is_one_character_and_passes():
    event = parse_event("chat", (CHAT_WITH_TEXT % "gg \\ud83d\\ude00").encode(), 10 ** 7)
    assert event.text == "gg \U0001F600"
