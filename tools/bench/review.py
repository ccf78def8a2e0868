"""`lifeguard bench review`: claims per second and time-to-claim under concurrent reviewers, on the review
store's PostgreSQL.

Each round gets a database of its own holding `items` waiting items (random priorities), and `reviewers`
threads, one connection each, claim and decide until the queue is empty: claims/s, the claim call's
latency and each item's time from the round's start to its claim (p50, p99), and how many items went to
two reviewers (must be 0). Next to it in the same run, the baseline: the same claim with plain
``FOR UPDATE`` (no ``SKIP LOCKED``), where reviewers queue behind each other's row locks.
"""
from __future__ import annotations

import random
import threading
import time
import uuid

import numpy as np
from tabulate import tabulate

from lifeguard.config import LifeguardConfig, ReviewConfig
from lifeguard.schemas import EXAMPLES, ReviewItem
from review.schema import drop_database, prepare_database
from review.store import Consumed, ReviewStore


class BlockingClaims(ReviewStore):
    """The baseline: a claim that waits for the row another reviewer has locked instead of skipping it."""

    claim_sql = ReviewStore.claim_sql.replace("FOR UPDATE SKIP LOCKED", "FOR UPDATE")


def _filled_database(cfg: ReviewConfig, items: int, seed: int) -> ReviewConfig:
    review = cfg.model_copy(update={"database": f"lifeguard_bench_{uuid.uuid4().hex[:8]}"})
    prepare_database(review)
    rng, now = random.Random(seed), int(time.time() * 1000)
    store = ReviewStore.connect(review)
    waiting = [Consumed(ReviewItem.model_validate(EXAMPLES["review-queue"] | {
        "event_id": f"bench-{i}", "priority": round(rng.uniform(0, 3), 4), "created_ts": now - rng.randrange(3_600_000)}),
        f"bench:{i}") for i in range(items)]
    for start in range(0, items, 2000):
        store.enqueue(waiting[start:start + 2000])
    store.close()
    return review


def _round(review: ReviewConfig, reviewers: int, store_type: type[ReviewStore]) -> dict:
    claims: dict[str, list[str]] = {}
    latencies: list[float] = []
    waited: list[float] = []
    started = time.perf_counter()

    def reviewer(name: str) -> None:
        store, mine = store_type.connect(review), []
        while True:
            before = time.perf_counter()
            item = store.claim_next(name)
            after = time.perf_counter()
            if item is None:
                break
            latencies.append(after - before)
            waited.append(after - started)
            mine.append(item.event_id)
            store.decide(item.event_id, name, "overturn")
        claims[name] = mine
        store.close()

    threads = [threading.Thread(target=reviewer, args=(f"r{n}",)) for n in range(reviewers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - started
    every = [event_id for mine in claims.values() for event_id in mine]
    return {"claimed": len(every), "given_twice": len(every) - len(set(every)), "claims_per_s": len(every) / elapsed,
            "claim_ms": np.percentile(latencies, [50, 99]) * 1000, "to_claim_s": np.percentile(waited, [50, 99])}


def run_review_bench(cfg: LifeguardConfig, items: int, reviewer_counts: list[int]) -> str:
    rows = []
    for name, store_type in (("SKIP LOCKED", ReviewStore), ("FOR UPDATE (baseline)", BlockingClaims)):
        for reviewers in reviewer_counts:
            review = _filled_database(cfg.review, items, seed=reviewers)
            try:
                r = _round(review, reviewers, store_type)
            finally:
                drop_database(review)
            rows.append([name, reviewers, r["claimed"], r["given_twice"], f"{r['claims_per_s']:.0f}",
                         *(f"{v:.2f}" for v in r["claim_ms"]), *(f"{v:.1f}" for v in r["to_claim_s"])])
    table = tabulate(rows, headers=["claim", "reviewers", "claimed", "given twice", "claims/s", "claim ms p50", "p99",
                                    "to claim s p50", "p99"], tablefmt="github")
    return (f"{items} waiting items per round; each reviewer claims and decides (overturn) until the queue is "
            f"empty; PostgreSQL at {cfg.review.address}\n\n{table}")
