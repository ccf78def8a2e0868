"""Pair-level figures for conversation grooming detection on simulated traffic, through the job's code:
``Screener.screen`` per batch (its conversation turns carry the bank match), its room speakers through
``udfs.grooming.rooms.room_meetings`` per room, then ``udfs.grooming.pairs.step`` per (child, contact) pair.

    python -m tools.evaluate_grooming [--minutes 30] [--events-per-s 20] [--seed 5]

The data are the simulator's (``tools.simulator``): its grooming conversations are project-written
synthetic arcs, written apart from the bank (tests/test_grooming.py checks that none of their lines is
in it), mixed into simulated platform traffic whose benign direct messages come from templates and the
test splits of the real data sets. No real grooming conversation exists here, so these figures say how
the detector behaves on synthetic arcs, not how it would do on a platform: say so wherever they go.
"""
from __future__ import annotations

import argparse
import statistics
from collections import defaultdict

from lifeguard.config import load_config
from lifeguard.schemas import ChatMessage, ParentAlert, ReviewItem
from tools.simulator import HarmMix, build_platform, generate_events
from udfs.grooming.pairs import add_meeting, step
from udfs.grooming.rooms import room_meetings
from udfs.grooming.turns import pair_key
from udfs.parse import SourceRef
from udfs.screening import ScreeningInput, Screener

START_MS = 1_767_261_600_000  # 2026-01-01 10:00 UTC
BATCH = 64
GROOMING_CASE = "grooming_conversation"


def evaluate(minutes: float, events_per_s: float, seed: int) -> dict[str, float]:
    cfg = load_config(environ={})
    screener = Screener.from_config(cfg)
    settings = screener.grooming
    platform = build_platform(n_users=2000, seed=seed, now_ms=START_MS)
    # Only grooming is injected, at a rate that gives a few dozen conversations in half an hour.
    harm = HarmMix(rate=0.004, weights=((GROOMING_CASE, 1.0),))
    events = [e for e in generate_events(platform, minutes * 60, events_per_s, seed, START_MS, harm=harm)
              if e.topic == "chat"]

    items, grooming_pairs = [], set()
    for offset, e in enumerate(events):
        message = ChatMessage.model_validate(e.value)
        sender = platform.by_id[message.user_id]
        recipient = platform.by_id.get(message.recipient_id) if message.recipient_id else None
        items.append(ScreeningInput(message, SourceRef("chat", 0, offset, message.ts), b"", sender, recipient))
    states, rooms, reviewed, alerted, turns_seen, has_parent = {}, {}, {}, set(), defaultdict(int), set()
    for start in range(0, len(items), BATCH):
        batch = items[start:start + BATCH]
        screened = screener.screen(batch, batch[-1].event.ts)
        for room_id, speakers in screened.room_speakers.items():
            rooms[room_id], meetings = room_meetings(rooms.get(room_id), room_id, speakers, settings)
            for meeting in meetings:
                states[meeting.pair] = add_meeting(states.get(meeting.pair), meeting)
        for turn in screened.turns:
            states[turn.pair], _, outputs = step(states.get(turn.pair), turn, settings, turn.message.ts)
            turns_seen[turn.pair] += 1
            if turn.parent_to_alert:
                has_parent.add(turn.pair)
            for output in outputs:
                if isinstance(output, ReviewItem):
                    reviewed.setdefault(turn.pair, turns_seen[turn.pair])
                elif isinstance(output, ParentAlert):
                    alerted.add(turn.pair)
    truth = {e.value["event_id"]: e.truth for e in events if e.truth is not None}
    for item in items:
        if (case := truth.get(item.event.event_id)) and case.case == GROOMING_CASE and item.event.is_direct:
            grooming_pairs.add(pair_key(item.event.user_id, item.event.recipient_id))
    benign_pairs = set(turns_seen) - grooming_pairs  # pairs that wrote directly, not those that only met
    return {
        "chat messages": len(items),
        "direct messages with a minor (encoded)": sum(turns_seen.values()),
        "grooming conversations (synthetic)": len(grooming_pairs),
        "  reviewed": len(grooming_pairs & set(reviewed)),
        "  with a parent to alert (linked, child in the policy's alert bands)": len(grooming_pairs & has_parent),
        "  parent alerted": len(grooming_pairs & alerted),
        "  median messages in the pair before the review":
            statistics.median([reviewed[p] for p in grooming_pairs & set(reviewed)] or [0]),
        "other pairs with a minor": len(benign_pairs),
        "  reviewed (false positives)": len(benign_pairs & set(reviewed)),
        "  parent alerted (false positives)": len(benign_pairs & alerted),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=30)
    parser.add_argument("--events-per-s", type=float, default=20)
    parser.add_argument("--seed", type=int, default=5)
    args = parser.parse_args()
    for name, value in evaluate(args.minutes, args.events_per_s, args.seed).items():
        print(f"{name:70s} {value}")


if __name__ == "__main__":
    main()
