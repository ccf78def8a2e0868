"""`lifeguard score text FILE`: backtest the current policy on past messages, offline.

Reads JSON lines ``{"id", "text", "sender_age_band"?, "recipient_age_band"?, "recipient_dm_policy"?}`` and
writes one JSON line per input with the calibrated scores and the action the policy would take, through
``udfs.screening.Screener`` (the job's own code path). A missing age band is unknown, and so is
treated as the youngest, as in the job. No recipient band means a room message. A backtest judges
content: a line knows nothing of friendships, so the recipient's contact setting is "everyone" unless
``recipient_dm_policy`` names one (with no friends, "friends" then blocks every direct message to a minor).
"""
from __future__ import annotations

import json
from typing import IO, Iterable, Iterator, Mapping, Sequence

from lifeguard.profiles import UserProfile
from lifeguard.schemas import AgeBand, ChatMessage, DeadLetter, Decision
from udfs.parse import SourceRef
from udfs.screening import ScreeningInput, Screener

BATCH = 256


def _profile(user_id: str, band: str | None, dm_policy: str = "everyone") -> UserProfile:
    return UserProfile(user_id=user_id, age_band=AgeBand(band) if band else None, dm_policy=dm_policy)


def _input(line_number: int, row: dict) -> ScreeningInput:
    recipient_band = row.get("recipient_age_band")
    direct = "recipient_age_band" in row
    event = ChatMessage(schema_version=1, event_id=str(row["id"]), ts=0, user_id="sender", channel="text",
                        room_id=None if direct else "room", recipient_id="recipient" if direct else None,
                        text=row["text"])
    recipient = _profile("recipient", recipient_band, row.get("recipient_dm_policy", "everyone")) if direct else None
    return ScreeningInput(event, SourceRef("file", 0, line_number, 0), b"",
                          _profile("sender", row.get("sender_age_band")), recipient)


def _result(decision: Decision) -> dict:
    scores = dict(decision.scores)
    return {"id": decision.event_id, "scores": scores,
            # The riskiest link's probability of being malicious; null when the message has no link.
            "link_risk": scores.pop("link_risk", None),
            "action": decision.action.value, "reasons": decision.reasons}


def score_lines(screener: Screener, lines: Iterable[str]) -> Iterator[dict]:
    batch: list[ScreeningInput] = []
    for number, line in enumerate(lines, 1):
        if line.strip():
            batch.append(_input(number, json.loads(line)))
        if len(batch) == BATCH:
            yield from _screen(screener, batch)
            batch = []
    yield from _screen(screener, batch)


def _screen(screener: Screener, batch: list[ScreeningInput]) -> Iterator[dict]:
    for output in screener.screen(batch, now_ms=0).outputs:
        if isinstance(output, Decision):
            yield _result(output)
        elif isinstance(output, DeadLetter):  # a line that could not be screened says why, in its place
            yield {"id": output.event_id, "error": output.reason}


def policy_actions(screener: Screener, texts: Sequence[str], context: Mapping[str, str]) -> list[str]:
    """The action the current policy takes on each text, through the full text tier, in the `context` (the
    fields of an input line other than id and text)."""
    lines = (json.dumps({"id": str(i), "text": text, **context}) for i, text in enumerate(texts))
    actions = {result["id"]: result.get("action", "error") for result in score_lines(screener, lines)}
    return [actions[str(i)] for i in range(len(texts))]


def score_text_file(screener: Screener, source: IO[str], sink: IO[str]) -> int:
    count = 0
    for result in score_lines(screener, source):
        sink.write(json.dumps(result) + "\n")
        count += 1
    return count
