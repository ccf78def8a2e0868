"""Hostile input, found by a machine (hypothesis): whatever bytes or text arrive, each parser and text step
either gives its result or refuses with its own error, so the next poison record is found here rather
than by an attacker. Each property states what the step must return, not only that it returns."""
from __future__ import annotations

import json

from hypothesis import HealthCheck, given, settings, strategies as st

from lifeguard import PROJECT_ROOT
from lifeguard.schemas import EXAMPLES, ChatMessage
from udfs.control import HASH_BANK_UPDATES, POLICY_UPDATES, parse_control
from udfs.images import ImageRejected, decode_frames
from udfs.links import extract_links
from udfs.normalize import match_forms, normalize
from udfs.parse import Rejected, parse_event
from udfs.policy import load_policy
from udfs.rules import RuleMatcher

POLICY = load_policy(PROJECT_ROOT / "flink-conf" / "policy.yaml")
RULES = RuleMatcher(POLICY.rules, POLICY.allowlist)
MAX_BYTES = 64_000
PROPERTY = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# JSON values of any shape, nesting included, for the fields of an otherwise valid record.
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=50),
    lambda children: st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=10), children, max_size=5),
    max_leaves=30)
# Text as chat holds it and as an attacker writes it: any code point, surrogates and controls included.
ANY_TEXT = st.text(st.characters(codec=None, exclude_categories=()), max_size=400)


@PROPERTY
@given(st.binary(max_size=2_000))
def test_any_bytes_parse_to_an_event_or_a_rejection(value):
    try:
        event = parse_event("chat", value, MAX_BYTES)
    except Rejected as rejected:
        assert rejected.error_kind in {"not_json", "not_utf8", "invalid", "unknown_version", "oversize"}
        assert rejected.reason
    else:
        assert isinstance(event, ChatMessage)


@PROPERTY
@given(st.sampled_from(sorted(EXAMPLES["chat"])), JSON_VALUES)
def test_a_chat_record_with_any_value_in_any_field_parses_or_is_rejected(field, value):
    record = json.dumps({**EXAMPLES["chat"], field: value}).encode()
    try:
        event = parse_event("chat", record, MAX_BYTES)
    except Rejected as rejected:
        assert rejected.error_kind in {"invalid", "unknown_version", "not_json"} and rejected.reason
    else:
        assert event.event_id == EXAMPLES["chat"]["event_id"] or field == "event_id"


@PROPERTY
@given(st.sampled_from([POLICY_UPDATES, HASH_BANK_UPDATES]), st.dictionaries(st.text(max_size=12), JSON_VALUES, max_size=6))
def test_any_control_record_applies_or_is_rejected(topic, body):
    try:
        parse_control(topic, json.dumps({"schema_version": 1, "event_id": "x", **body}).encode(), MAX_BYTES)
    except Rejected as rejected:
        assert rejected.reason


@PROPERTY
@given(ANY_TEXT)
def test_normalisation_gives_lower_case_words_on_one_line(text):
    forms = match_forms(text)
    assert isinstance(forms.plain, str) and isinstance(forms.folded, str)
    assert all(isinstance(word, str) and word for word in forms.disguised)
    folded = normalize(text)
    assert " ".join(folded.split()) == folded and folded.casefold() == folded


@PROPERTY
@given(ANY_TEXT, st.booleans())
def test_the_rules_matcher_reports_only_rules_of_the_policy(text, minor):
    ids = {rule.id for rule in POLICY.rules}
    for hit in RULES.match(text.encode("utf-8", "replace").decode("utf-8"), minor):
        assert hit.rule.id in ids and (minor or not hit.rule.minors_only)


@PROPERTY
@given(ANY_TEXT)
def test_links_found_in_any_text_have_a_host(text):
    for link in extract_links(text):
        assert link.host and "." in link.host


def decoded_or_refused(data: bytes) -> str:
    """What the decoder made of ``data``: "decoded" (frames within the limits) or the rejection's reason."""
    try:
        frames = decode_frames(data, 10_000, 100_000)
    except ImageRejected as rejected:
        return rejected.reason
    ok = frames and all(frame.mode == "RGB" and frame.width * frame.height <= 100_000 for frame in frames)
    return "decoded" if ok else "decoded outside the limits"


OUTCOMES = {"decoded", "empty", "too_many_bytes", "format_not_allowed", "too_many_pixels", "undecodable"}


@PROPERTY
@given(st.binary(max_size=3_000))
def test_any_bytes_decode_to_images_or_a_rejection(data):
    assert decoded_or_refused(data) in OUTCOMES


@PROPERTY
@given(st.sampled_from([b"GIF89a", b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff", b"BM", b"RIFF\x00\x00\x00\x00WEBP"]),
       st.binary(max_size=3_000))
def test_bytes_behind_an_image_signature_decode_or_are_rejected(signature, rest):
    assert decoded_or_refused(signature + rest) in OUTCOMES
