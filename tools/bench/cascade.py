"""`lifeguard bench cascade`: how far the text funnel narrows on the simulator's chat, in one process.

The share of messages the cascade sends to stage 2, for all chat, where a minor is involved (a room
message, which is judged as if a child is present, or a direct message with a minor at either end) and
between adults; the score cache's hit rate on the same chat (the simulator's benign chat is templates
and real rows, so its repeats are only an indication of a platform's); then messages/s in batches as the
job scores them, for stage 1 alone (the baseline: the cheapest the text tier can be), the cascade, and the
cascade behind the score cache, in the same run.
"""
from __future__ import annotations

import time
from typing import Sequence

import numpy as np
from tabulate import tabulate

from lifeguard.config import LifeguardConfig
from tools.simulator import build_platform, generate_events
from udfs.score_cache import ScoreCache
from udfs.text_model import TextModel

SEED = 0
EVENTS_PER_S = 20.0


def simulated_chat(seconds: float) -> tuple[list[str], list[bool]]:
    """The simulator's chat texts and whether a minor is involved in each."""
    platform = build_platform(n_users=400, seed=SEED, now_ms=1_767_225_600_000)
    events = generate_events(platform, seconds, EVENTS_PER_S, seed=SEED, start_ms=platform.now_ms)
    chat = [event.value for event in events if event.topic == "chat"]
    profiles = platform.by_id

    def minor(message: dict) -> bool:
        if message.get("room_id") is not None:
            return True
        return any(profiles[user].effective_age_band.is_minor for user in (message["user_id"], message["recipient_id"]))

    return [m["text"] for m in chat], [minor(m) for m in chat]


def _messages_per_s(model: TextModel | ScoreCache, texts: Sequence[str], minors: Sequence[bool], batch: int,
                    warm_up: bool = True) -> float:
    def run(start: int) -> None:
        chunk = slice(start, start + batch)
        model.score_and_embed(texts[chunk], minors[chunk], [False] * len(texts[chunk]))

    if warm_up:  # sessions allocate on their first run
        run(0)
    started = time.perf_counter()
    for start in range(0, len(texts), batch):
        run(start)
    return len(texts) / (time.perf_counter() - started)


def _escalated(model: TextModel, texts: Sequence[str], minors: Sequence[bool], batch: int) -> int:
    """How many of `texts` the cascade sends to stage 2, scored in batches as the job scores them."""
    before = model.escalated
    for start in range(0, len(texts), batch):
        model.score_batch(texts[start:start + batch], minors[start:start + batch])
    return model.escalated - before


def run_bench_cascade(cfg: LifeguardConfig, seconds: float, batch: int) -> str:
    texts, minors = simulated_chat(seconds)
    models = cfg.models
    stage1 = TextModel.load(cfg.path(models.text_model), prefer_gpu=models.prefer_gpu)
    cascade = TextModel.load(cfg.path(models.text_model), prefer_gpu=models.prefer_gpu,
                             second_stage=cfg.path(models.text_second_stage), tokenizer=cfg.path(models.text_tokenizer))
    escalated = {}  # minor involved -> (messages, sent to stage 2)
    for minor in (True, False):
        subset = [text for text, m in zip(texts, minors) if m is minor]
        escalated[minor] = (len(subset), _escalated(cascade, subset, [minor] * len(subset), batch))
    everything = tuple(map(sum, zip(*escalated.values())))
    shares = [[label, count, f"{sent / count:.1%}" if count else "-"]
              for label, (count, sent) in (("all chat", everything), ("minor involved", escalated[True]),
                                           ("between adults", escalated[False]))]
    speeds = [[name, f"{_messages_per_s(model, texts, minors, batch):,.0f}"]
              for name, model in (("stage 1 alone (baseline)", stage1), (f"cascade {cascade.version}", cascade))]
    # The cascade underneath has just run: no warm-up, so the cache starts empty for one pass over the chat.
    cached = ScoreCache(cascade, cfg.models.score_cache_size)
    speeds.append([f"cascade behind the score cache ({cfg.models.score_cache_size:,} texts)",
                   f"{_messages_per_s(cached, texts, minors, batch, warm_up=False):,.0f}"])
    hit_rate = f"score cache hits: {cached.hits / max(cached.lookups, 1):.1%} of {cached.lookups:,} look-ups (one pass)"
    return "\n\n".join([
        f"The simulator's chat: {len(texts):,} messages ({seconds:.0f} s at {EVENTS_PER_S:.0f} events/s, seed {SEED}), "
        f"{np.mean(minors):.1%} with a minor involved; batches of {batch}; onnxruntime on this machine's "
        f"{'GPU if any' if models.prefer_gpu else 'CPU'}.",
        tabulate(shares, headers=["messages", "count", "sent to stage 2"]),
        tabulate(speeds, headers=["text tier", "messages/s"]),
        hit_rate,
    ])
