"""Age signals in chat: what users say about their own age, against the age band their profile declares.

A claim is a first-person statement: "I'm 11", "im 12 years old", "i just turned 9", "I'm in 6th grade",
"year 7" (a US grade G is age G+5, a UK year Y is age Y+4), or an adult signal ("my wife", "my kids",
"my mortgage", "at work today"). Numbers that are scores, levels, times or percentages are not claims.
A claim contradicts the profile when one side is adult and the other a minor, or the bands are two or
more apart. A user of unknown declared age has nothing to contradict. Contradictions go to review, never
to an automatic action: people joke, role-play and quote.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

from lifeguard.schemas import AgeBand

_BANDS = list(AgeBand)
_NOT_AN_AGE = r"(?!\s*(?:%|k\b|x\b|points?\b|pts\b|levels?\b|lvl\b|mins?\b|minutes\b|hours?\b|hrs?\b|times\b|" \
              r"am\b|pm\b|[:.,]\d|\d|th\b|st\b|nd\b|rd\b|kills?\b|wins?\b|robux\b|coins?\b|gems?\b))"
_STATED_AGE = re.compile(
    r"\b(?:i'?m|i\s+am|im)\s+(?:only\s+|just\s+|almost\s+|nearly\s+)?(\d{1,2})\b" + _NOT_AN_AGE
    + r"|\bi\s+(?:just\s+)?turned\s+(\d{1,2})\b" + _NOT_AN_AGE
    + r"|\bmy\s+age\s+is\s+(\d{1,2})\b", re.IGNORECASE)
_GRADE = re.compile(r"\b(\d{1,2})(?:st|nd|rd|th)\s+grade\b|\bgrade\s+(\d{1,2})\b", re.IGNORECASE)
_UK_YEAR = re.compile(r"\b(?:i'?m|im|i\s+am)\s+in\s+year\s+(\d{1,2})\b", re.IGNORECASE)
_ADULT = re.compile(
    r"\bmy\s+(?:wife|husband|kids|mortgage|boss|coworkers?|colleagues?|landlord|paycheck)\b"
    r"|\b(?:at|from|after)\s+work\s+today\b|\bi'?m\s+a\s+(?:dad|mom|father|mother)\s+of\b", re.IGNORECASE)
MIN_AGE, MAX_AGE = 5, 80


@dataclass(frozen=True)
class AgeClaim:
    band: AgeBand
    age: int | None  # None: an adult signal without a number
    evidence: str  # the words that made the claim


def band_of_age(age: int) -> AgeBand:
    if age < 13:
        return AgeBand.UNDER_13
    if age < 16:
        return AgeBand.TEEN_13_15
    if age < 18:
        return AgeBand.TEEN_16_17
    return AgeBand.ADULT


def age_claims(text: str) -> list[AgeClaim]:
    claims = []
    for match in _STATED_AGE.finditer(text):
        age = int(next(g for g in match.groups() if g))
        if MIN_AGE <= age <= MAX_AGE:
            claims.append(AgeClaim(band_of_age(age), age, match.group(0)))
    for match in _GRADE.finditer(text):
        grade = int(next(g for g in match.groups() if g))
        if 1 <= grade <= 12:
            claims.append(AgeClaim(band_of_age(grade + 5), grade + 5, match.group(0)))
    for match in _UK_YEAR.finditer(text):
        year = int(match.group(1))
        if 1 <= year <= 13:
            claims.append(AgeClaim(band_of_age(year + 4), year + 4, match.group(0)))
    claims += [AgeClaim(AgeBand.ADULT, None, m.group(0)) for m in _ADULT.finditer(text)]
    return claims


def contradiction(declared: AgeBand | None, verified: bool, claim: AgeClaim) -> str | None:
    """Why ``claim`` contradicts the declared band, or None."""
    if declared is None:
        return None
    gap = abs(_BANDS.index(declared) - _BANDS.index(claim.band))
    if (declared is AgeBand.ADULT) == (claim.band is AgeBand.ADULT) and gap < 2:
        return None
    said = f"age {claim.age}" if claim.age is not None else "an adult"
    return (f"age:declared {declared.value}{' (verified)' if verified else ''} but wrote "
            f"'{claim.evidence}' ({said}, {claim.band.value})")
