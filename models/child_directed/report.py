"""The child-directed test: what the policy path does to messages said to children, on SYNTHETIC text.

    python -m models.child_directed.report [--before models/reports/child_directed_before.json]

Each message of `test_set.jsonl` (written apart from the training seeds and the val set, never used to
choose anything) goes through the full text tier (`udfs.backtest.policy_actions`: normalisation,
rules, links, models, the policy in force) in two contexts: a direct message from an adult to an under-13
child whose parents allow direct messages from everyone (the message judged on its content), and a room
message between under-13 children. Per kind: the share acted on (any action but allow, warn included),
and in the direct message the share reviewed or blocked. `models.evaluate` puts this in its report as
part 5, beside the figures saved from before the child-directed training (``--save``).
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Mapping, Sequence

from lifeguard import PROJECT_ROOT
from lifeguard.config import load_config
from lifeguard.schemas import AgeBand
from udfs.backtest import policy_actions
from models.child_directed import KIND_CATEGORIES, PAIRS, ROOM_KINDS, TEST_SET, Message, read
from udfs.screening import Screener

BEFORE = PROJECT_ROOT / "models" / "reports" / "child_directed_before.json"
DM, ROOM = "adult to under_13, direct message", "under_13 to under_13, room"
CONTEXTS: Mapping[str, Mapping[str, str]] = {
    DM: {"sender_age_band": AgeBand.ADULT.value, "recipient_age_band": AgeBand.UNDER_13.value,
         "recipient_dm_policy": "everyone"},
    ROOM: {"sender_age_band": AgeBand.UNDER_13.value},
}
# The harmful kinds each context is judged on: in a room between children, what children do to each other.
JUDGED_KINDS = {DM: tuple(KIND_CATEGORIES), ROOM: ROOM_KINDS}
# The bars: share of judged harmful acted on, and of benign acted on at most; in the direct message,
# sexual approaches and meeting requests reviewed or blocked.
TARGETS = {"harmful_acted": 0.90, "benign_acted_at_most": 0.03, "review_or_block": 0.95}
REVIEW_OR_BLOCK_KINDS = ("sexual_approach", "meetup")


def _share(flags: Sequence[bool]) -> float | None:
    return sum(flags) / len(flags) if flags else None


def measure(screener: Screener, messages: Sequence[Message]) -> dict:
    """Per context: per kind the rows and the shares acted on (and reviewed or blocked), then the judged
    harmful kinds and the benign ones pooled, overall and per age pair the text was written for."""
    texts = [m.text for m in messages]
    section = {"rows": {"harmful": sum(m.harmful for m in messages), "benign": sum(not m.harmful for m in messages)},
               "contexts": {}}
    for name, context in CONTEXTS.items():
        actions = policy_actions(screener, texts, context)
        acted = [a != "allow" for a in actions]
        strong = [a in ("review", "block") for a in actions]
        kinds = {}
        for kind in sorted({m.kind for m in messages}):
            rows = [i for i, m in enumerate(messages) if m.kind == kind]
            kinds[kind] = {"harmful": messages[rows[0]].harmful, "rows": len(rows),
                           "acted": _share([acted[i] for i in rows]),
                           "review_or_block": _share([strong[i] for i in rows])}
        judged = [i for i, m in enumerate(messages) if m.harmful and m.kind in JUDGED_KINDS[name]]
        benign = [i for i, m in enumerate(messages) if not m.harmful]
        section["contexts"][name] = {
            "context": dict(context),
            "judged_kinds": list(JUDGED_KINDS[name]),
            "harmful_acted": _share([acted[i] for i in judged]),
            "benign_acted": _share([acted[i] for i in benign]),
            "by_pair": {pair: {"harmful_acted": _share([acted[i] for i in judged if messages[i].pair == pair]),
                               "benign_acted": _share([acted[i] for i in benign if messages[i].pair == pair])}
                        for pair in PAIRS},
            "kinds": kinds,
            "benign_acted_examples": sorted(texts[i] for i in benign if acted[i])[:12],
        }
    dm_kinds = section["contexts"][DM]["kinds"]
    chosen = [dm_kinds[kind] for kind in REVIEW_OR_BLOCK_KINDS if kind in dm_kinds]
    section["sexual_approach_and_meetup_review_or_block"] = (
        sum(k["review_or_block"] * k["rows"] for k in chosen) / sum(k["rows"] for k in chosen))
    section["meets_targets"] = {
        "dm_harmful_acted": section["contexts"][DM]["harmful_acted"] >= TARGETS["harmful_acted"],
        "dm_review_or_block": section["sexual_approach_and_meetup_review_or_block"] >= TARGETS["review_or_block"],
        "dm_benign": section["contexts"][DM]["benign_acted"] <= TARGETS["benign_acted_at_most"],
        "room_harmful_acted": section["contexts"][ROOM]["harmful_acted"] >= TARGETS["harmful_acted"],
        "room_benign": section["contexts"][ROOM]["benign_acted"] <= TARGETS["benign_acted_at_most"],
    }
    return section


def _pct(value: float | None) -> str:
    return "—" if value is None else f"{value:.1%}"


def render(section: dict, before: dict | None) -> list[str]:
    """Markdown lines of part 5: per context and kind, now beside before."""
    def then(path: Sequence[str]) -> str:
        value = before
        for key in path:
            value = None if value is None else value.get(key)
        return _pct(value)

    rows = section["rows"]
    out = ["## 5. Child-directed messages (SYNTHETIC)", "",
           f"Data: `models/child_directed/test_set.jsonl`, {rows['harmful']} harmful and {rows['benign']} benign "
           "messages **written for the purpose (synthetic)** by an author who never saw the training seeds, their "
           "augmentation or the val set; no real corpus of such messages may be used here. Nothing was trained, "
           "calibrated or chosen on it. Acted on: any action but allow (warn included). Through the full text tier "
           f"in two contexts: **{DM}** (parents allowing direct messages from everyone, so the message is judged on "
           f"its content; sender with no history, so the no-history tightening applies) and **{ROOM}**. "
           f"Bars (issue 17): judged harmful acted on >= {TARGETS['harmful_acted']:.0%}, benign acted on <= "
           f"{TARGETS['benign_acted_at_most']:.0%}, sexual approaches and meeting requests in the direct message "
           f"reviewed or blocked >= {TARGETS['review_or_block']:.0%}. \"Before\": the same code on the models and "
           "policy before the child-directed training (`text-linear-2+text-minilm-4`, policy 2026-11-24.3).", "",
           "| context | judged harmful acted on (before) | benign acted on (before) |", "|---|---|---|"]
    for name, c in section["contexts"].items():
        out.append(f"| {name} | **{_pct(c['harmful_acted'])}** ({then(['contexts', name, 'harmful_acted'])}) | "
                   f"**{_pct(c['benign_acted'])}** ({then(['contexts', name, 'benign_acted'])}) |")
    out += ["", f"Sexual approaches and meeting requests, {DM}, reviewed or blocked: "
            f"**{_pct(section['sexual_approach_and_meetup_review_or_block'])}** "
            f"(before {then(['sexual_approach_and_meetup_review_or_block'])}).", "",
            "Per kind (harmful kinds judged in the room: " + ", ".join(ROOM_KINDS) + "):", "",
            f"| kind | rows | {DM}: acted on (before) | reviewed or blocked (before) | {ROOM}: acted on (before) |",
            "|---|---|---|---|---|"]
    dm, room = section["contexts"][DM]["kinds"], section["contexts"][ROOM]["kinds"]
    for kind in sorted(dm, key=lambda k: (not dm[k]["harmful"], k)):
        label = kind if dm[kind]["harmful"] else f"{kind} (benign)"
        out.append(f"| {label} | {dm[kind]['rows']} | {_pct(dm[kind]['acted'])} ({then(['contexts', DM, 'kinds', kind, 'acted'])}) | "
                   f"{_pct(dm[kind]['review_or_block'])} ({then(['contexts', DM, 'kinds', kind, 'review_or_block'])}) | "
                   f"{_pct(room[kind]['acted'])} ({then(['contexts', ROOM, 'kinds', kind, 'acted'])}) |")
    out += ["", "By the age pair each message was written for (judged harmful / benign acted on):", "",
            "| context | " + " | ".join(PAIRS) + " |", "|---|" + "---|" * len(PAIRS)]
    for name, c in section["contexts"].items():
        out.append(f"| {name} | " + " | ".join(f"{_pct(c['by_pair'][p]['harmful_acted'])} / {_pct(c['by_pair'][p]['benign_acted'])}"
                                             for p in PAIRS) + " |")
    for name, c in section["contexts"].items():
        if c["benign_acted_examples"]:
            out += ["", f"Benign messages acted on, {name} (up to 12): "
                    + "; ".join(f"\"{text}\"" for text in c["benign_acted_examples"]) + "."]
    return out


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m models.child_directed.report", description=__doc__.splitlines()[0])
    parser.add_argument("--save", type=Path, help="write the figures as JSON here (the 'before' of a later report)")
    args = parser.parse_args(argv)
    section = measure(Screener.from_config(load_config()), read(TEST_SET))
    print("\n".join(render(section, json.loads(BEFORE.read_text()) if BEFORE.is_file() else None)))
    if args.save:
        args.save.write_text(json.dumps(section, indent=2) + "\n")


if __name__ == "__main__":
    main()
