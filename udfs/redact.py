"""Personal information masked in what people read: review items, parent alerts and decision reasons.

A rule that finds a phone number quotes it in its reason (`rule:personal_information_shared matched
'555-123-4567'`), and a review excerpt is the message itself; reviewers and parents need to know that a
number, an address or another app's handle was given, not what it was. The patterns follow the policy's
personal-information and off-platform rules (flink-conf/policy.yaml); they run on a decision's few
reasons and on the excerpt of a message sent to review, not on the text of every message.
"""
from __future__ import annotations

import re

# Longest first: a phone number written with a country code is one number, not a code and a number.
_MASKS = (
    (re.compile(r"\+\d{1,3}[ .-]?\d(?:[ .-]?\d){6,12}\b"), "[phone]"),
    (re.compile(r"\(?\b\d{3}\)?[ .-]?\d{3}[ .-]?\d{4}\b"), "[phone]"),
    (re.compile(r"\b\d(?: \d){9,11}\b"), "[phone]"),
    (re.compile(r"\b[\w.%+-]+@[\w-]+(?:\.[\w-]+)*\.[a-z]{2,}\b", re.IGNORECASE), "[e-mail]"),
    (re.compile(r"\b\d{1,5} [a-z]+(?: [a-z]+)? (?:street|avenue|road|lane|drive|court|boulevard|blvd|crescent|"
                r"terrace)\b", re.IGNORECASE), "[address]"),
    # A handle given for another app keeps the app's name: "snap: coolkid12" -> "snap: [handle]".
    (re.compile(r"\b((?:snap|snapchat|sc|insta|instagram|ig|discord|tiktok|kik|telegram)\s*(?::|=|-|\bis\b)\s*)"
                r"@?[a-z0-9][a-z0-9._#]{2,}", re.IGNORECASE), r"\1[handle]"),
    (re.compile(r"(?<![\w.])@[a-z0-9._]{3,30}", re.IGNORECASE), "@[handle]"),
)


def redact(text: str) -> str:
    """`text` with phone numbers, e-mail addresses, street addresses and other apps' handles masked."""
    for pattern, mask in _MASKS:
        text = pattern.sub(mask, text)
    return text
