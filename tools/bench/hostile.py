"""`lifeguard bench hostile`: the worst time one hostile record costs the cheap tiers, next to an ordinary one.

Each input is what an attacker would send to stall a screening instance (the shapes of issue 13's
reproductions and their neighbours), as a chat record of the largest size the job accepts. It goes
through the record parser (`udfs.parse.parse_event`) and then, if it parses, the text tier without the
models (`udfs.text_tier.TextTier`: normalisation, rules, link extraction and the URL model), as the job
runs them. The figure is the slowest of ``--repeats`` runs, beside an ordinary message of the same length
timed the same way: a linear-time path keeps the ratio near one. No assertion is made on time; the tests
check the results of these inputs (tests/test_normalize.py, test_links.py, test_parse.py).
"""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Callable

from tabulate import tabulate

from lifeguard.config import LifeguardConfig
from lifeguard.schemas import EXAMPLES, AgeBand
from udfs.parse import Rejected, parse_event
from udfs.policy import load_policy
from udfs.text_tier import TextTier


def _chat(text: str) -> bytes:
    return json.dumps({**EXAMPLES["chat"], "text": text}).encode()


def hostile_records(chars: int) -> dict[str, tuple[bytes, bytes]]:
    """Per shape: (the hostile record, an ordinary record of about the same size)."""
    ordinary = lambda n: _chat(("gg wp see you next round " * (n // 25 + 1))[:n])  # noqa: E731
    texts = {
        "whitespace run before a dot (link regex)": "a" + " " * (chars - 3) + ".b",
        "ffi ligatures (NFKD expands after the cap)": "\ufb03" * chars,
        "squared katakana U+3316 (NFKD x6)": "\u3316" * chars,
        "one long word (disguised-word scan)": "f" + "*" * (chars - 2) + "k",
        "dotted letters a.a.a.a (link hosts)": ".".join("a" * (chars // 2)),
        "combining marks on one letter": "a" + "\u0301" * (chars - 1),
        "spaced letters k i l l (joined runs)": " ".join("k" * (chars // 2)),
        "emoji run": "\U0001f52b" * (chars // 2),
        "one huge URL": "https://" + "a" * (chars - 20) + ".example.com",
    }
    shapes = {name: (_chat(text), ordinary(len(text))) for name, text in texts.items()}
    # Records that never parse: they must be refused fast.
    nested = b'{"schema_version": 1, "text": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    digits = b'{"schema_version": 1, "ts": ' + b"9" * 5_000 + b"}"
    shapes["nested JSON, 100,000 deep (parser)"] = (nested, ordinary(len(nested) // 2))
    shapes["5,000-digit number (parser)"] = (digits, ordinary(len(digits)))
    return shapes


def _slowest(run: Callable[[], object], repeats: int) -> float:
    worst = 0.0
    for _ in range(repeats):
        started = time.perf_counter()
        run()
        worst = max(worst, time.perf_counter() - started)
    return worst


def run_bench_hostile(cfg: LifeguardConfig, repeats: int) -> str:
    tier = TextTier(load_policy(cfg.path(cfg.policy)), cfg.path(Path(".")))
    max_bytes, max_chars = cfg.limits.max_record_bytes, cfg.limits.max_text_chars

    def screen(value: bytes) -> str:
        try:
            event = parse_event("chat", value, max_bytes)
        except Rejected as rejected:
            return f"dead letter ({rejected.error_kind})"
        signals, _ = tier.signals(event.text[:max_chars], {}, AgeBand.UNDER_13, False, True)
        return f"{len(signals)} signals"

    rows = []
    for name, (hostile, ordinary) in hostile_records(max_chars).items():
        outcome = screen(hostile)
        worst, usual = _slowest(lambda: screen(hostile), repeats), _slowest(lambda: screen(ordinary), repeats)
        rows.append([name, f"{len(hostile):,}", outcome, f"{worst * 1000:.2f}", f"{usual * 1000:.2f}",
                     f"{worst / usual:.1f}"])
    return (f"Hostile records through the parser and the text tier without models (slowest of {repeats}; "
            f"text capped at {max_chars} characters as the job caps it)\n"
            + tabulate(rows, headers=["input", "bytes", "outcome", "worst ms", "ordinary ms", "ratio"]))
