"""`lifeguard simulate` and `lifeguard demo`: the simulator wired to Feast and Kafka, and the summary.

The demo starts what a fresh machine lacks (broker, Redis, PostgreSQL), prepares Feast, runs the
moderation job on the MiniCluster with its web UI, plays about a minute of simulated platform traffic
with injected harmful cases, then reports what came out, which injected cases were caught, and the
review queue's most urgent items; the review store's consumer and console keep running afterwards, with
a demo login, so the queue can be worked (`lifeguard review stop` ends them).
"""
from __future__ import annotations

import json
import subprocess
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

from tabulate import tabulate
from tqdm import tqdm

from features.child_summary import child_summary
from features.feast_store import apply_definitions, load_profiles, open_store
from tools import kafka_io, local
from lifeguard.config import LifeguardConfig
from jobs.jars import fetch_jars
from tools.jobrunner import running_job
from lifeguard.schemas import AgeBand
from review.console import password_hash
from review.store import ReviewStore
from tools.simulator import DAY_MS, InjectedCase, Platform, blocklist_images, build_platform, generate_events, \
    malformed_records, play_day
from udfs.images import decode_image, image_hashes
from udfs.policy import CONTACT

CAUGHT_ACTIONS = {"block": {"block"}, "review": {"block", "review"}}


# A senior reviewer's login for the local demo only: printed, and never created outside `lifeguard demo`.
DEMO_REVIEWER, DEMO_PASSWORD = "demo", "lifeguard-demo"


def prepare_services(cfg: LifeguardConfig, say=print) -> None:
    fetch_jars(cfg.path(cfg.runtime_dir) / "jars")
    say(local.broker_start(cfg))
    say(local.redis_ensure(cfg))


def prepare_review(cfg: LifeguardConfig) -> str:
    """The review store, its consumer and console in the background, and the demo's reviewer account."""
    said = local.review_services_start(cfg)
    ReviewStore.connect(cfg.review).add_reviewer(DEMO_REVIEWER, "senior", password_hash(DEMO_PASSWORD))
    return said


def review_queue_top(cfg: LifeguardConfig, expected: set[str], timeout_s: float = 30, shown: int = 8) -> str:
    """The most urgent undecided items once the review consumer has stored this run's (`expected` ids)."""
    store = ReviewStore.connect(cfg.review)
    deadline = time.monotonic() + timeout_s
    while True:
        undecided = store.undecided(limit=1000)
        if expected <= {item.event_id for item, _ in undecided} or time.monotonic() > deadline:
            break
        time.sleep(1)
    store.close()
    rows = [[f"{item.priority:.2f}", item.kind, ", ".join(item.categories), (item.excerpt[:60] + "...")
             if len(item.excerpt) > 60 else item.excerpt] for item, _ in undecided[:shown]]
    return (f"{len(undecided)} undecided items in the review store; the most urgent:\n"
            + tabulate(rows, headers=["priority", "kind", "categories", "excerpt"], tablefmt="github"))


def prepare_feast(cfg: LifeguardConfig, platform: Platform) -> int:
    store = open_store(cfg)
    apply_definitions(cfg, store)
    return load_profiles(cfg, store, platform.profiles)


def write_image_banks(cfg: LifeguardConfig, seed: int) -> int:
    """The simulator's known-bad images become the `block` bank the job loads at start."""
    path = cfg.path(cfg.models.image_banks)
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = []
    for data in blocklist_images(seed):
        hashes = image_hashes(decode_image(data, cfg.limits.max_image_bytes, cfg.limits.max_image_pixels), data)
        lines += [json.dumps({"bank": "block", "signal_type": signal_type, "hash": getattr(hashes, signal_type)})
                  for signal_type in ("phash", "pdq")]
    path.write_text("\n".join(lines) + "\n")
    return len(lines)


@dataclass
class Published:
    """What a simulation run sent: counts per topic, the ids that must get a decision, the truth."""

    started_ms: int = field(default_factory=lambda: int(time.time() * 1000))
    per_topic: Counter = field(default_factory=Counter)
    decided_ids: set[str] = field(default_factory=set)
    malformed: int = 0
    truth: list[InjectedCase] = field(default_factory=list)


def publish_simulation(cfg: LifeguardConfig, platform: Platform, duration_s: float, rate: float, seed: int,
                       malformed: int, truth_file: Path | None, progress: bool = True) -> Published:
    """Produces the simulated events at ``rate`` per second of wall-clock time (and some malformed ones)."""
    topics = {"chat": cfg.kafka.topics.chat, "uploads": cfg.kafka.topics.uploads,
              "sessions": cfg.kafka.topics.sessions}
    producer = kafka_io.producer(cfg.kafka)
    published = Published()
    events = list(generate_events(platform, duration_s, rate, seed, start_ms=int(time.time() * 1000)))
    bad = malformed_records(malformed, seed)
    # Spread the malformed records evenly through the stream.
    every = max(1, len(events) // max(1, len(bad)))
    started = time.monotonic()
    for i, event in enumerate(tqdm(events, desc="simulated events", unit="ev", disable=not progress)):
        # Pace by the schedule rather than sleeping a fixed time per record, so the rate holds.
        delay = started + i / rate - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        producer.send(topics[event.topic], key=event.key, value=event.value)
        published.per_topic[event.topic] += 1
        if event.topic in ("chat", "uploads"):
            published.decided_ids.add(event.value["event_id"])
        if event.truth is not None:
            published.truth.append(event.truth)
        if bad and i % every == 0:
            topic, value = bad.pop()
            producer.send(topics[topic], key=b"malformed", value=value)
            published.malformed += 1
    for topic, value in bad:
        producer.send(topics[topic], key=b"malformed", value=value)
        published.malformed += 1
    producer.flush()
    producer.close()
    if truth_file is not None:
        truth_file.parent.mkdir(parents=True, exist_ok=True)
        truth_file.write_text("".join(json.dumps(asdict(case)) + "\n" for case in published.truth))
    return published


def collect_outputs(cfg: LifeguardConfig, published: Published, timeout_s: float) -> dict[str, list[dict]]:
    """Reads the output topics until every published chat message and upload has its decision."""
    topics = cfg.kafka.topics
    out_topics = [topics.decisions, topics.review_queue, topics.parent_alerts, topics.dead_letter]

    def decided_all(received) -> bool:
        ids = {r.json().get("event_id") for r in received if r.topic == topics.decisions}
        return published.decided_ids <= ids

    received = kafka_io.read(cfg.kafka, out_topics, decided_all, timeout_s)
    by_topic: dict[str, list[dict]] = {t: [] for t in out_topics}
    for record in received:
        by_topic[record.topic].append(record.json())
    return by_topic


def summary(cfg: LifeguardConfig, published: Published, outputs: dict[str, list[dict]]) -> str:
    topics = cfg.kafka.topics
    ours = published.decided_ids
    # Event ids repeat between runs with the same seed: count only what this run produced.
    this_run = {t: [r for r in records if r.get("decided_ts", r.get("created_ts", 0)) >= published.started_ms]
                for t, records in outputs.items()}
    decisions = {d["event_id"]: d for d in this_run[topics.decisions] if d["event_id"] in ours}
    actions = Counter(d["action"] for d in decisions.values())
    # Delivery is at-least-once: count distinct ids, as consumers de-duplicate.
    alerts = {a["alert_id"] for a in this_run[topics.parent_alerts] if a["event_id"] in ours}
    reviews = {r["event_id"] for r in this_run[topics.review_queue] if r["event_id"] in ours}
    injected = {case.event_id for case in published.truth}
    # Ordinary traffic acted on: every one a false action, unless the contact settings stopped it.
    ordinary_acted = [d for i, d in decisions.items() if i not in injected and d["action"] != "allow"]
    by_contact = sum(_by_contact(d) for d in decisions.values())
    lines = [tabulate(
        [["events in", sum(published.per_topic.values()) + published.malformed],
         *[[f"  {t}", n] for t, n in sorted(published.per_topic.items())],
         ["  malformed (mixed in)", published.malformed],
         ["decisions", f"{len(decisions)} of {len(ours)} chat messages and uploads"],
         *[[f"  {a}", n] for a, n in actions.most_common()],
         ["  ordinary (not injected) acted on", f"{len(ordinary_acted)}, "
                                                f"{sum(not _by_contact(d) for d in ordinary_acted)} by content"],
         ["  stopped by parents' contact settings", by_contact],
         ["review-queue items", len(reviews)],
         ["parent alerts", len(alerts)],
         ["dead letters", len({(d["source_topic"], d["source_partition"], d["source_offset"])
                               for d in this_run[topics.dead_letter]})]],
        headers=["", "count"], tablefmt="github")]
    # A multi-message case (a grooming conversation) counts once: caught if any of its messages was.
    # A conversation review item (pair risk) names the message that tipped the pair over the threshold.
    conversation_reviews = {r["event_id"] for r in this_run[topics.review_queue] if r.get("kind") == "conversation"}
    caught_by_case: dict[tuple[str, str], bool] = {}
    for case in published.truth:
        action = decisions.get(case.event_id, {}).get("action", "missing")
        key = (case.case, case.conversation_id or case.event_id)
        caught_by_case[key] = (caught_by_case.get(key, False) or action in CAUGHT_ACTIONS[case.expect]
                               or case.event_id in conversation_reviews)
    by_case: dict[str, Counter] = {}
    for (name, _), caught in caught_by_case.items():
        by_case.setdefault(name, Counter())["caught" if caught else "missed"] += 1
    lines.append("\nInjected harmful cases (caught: the decision was at least what a moderator would do, or a "
                 "conversation review item named the message; a grooming conversation counts once)")
    lines.append(tabulate([[c, n["caught"], n["missed"]] for c, n in sorted(by_case.items())] +
                          [["total", sum(n["caught"] for n in by_case.values()),
                            sum(n["missed"] for n in by_case.values())]],
                          headers=["case", "caught", "missed"], tablefmt="github"))
    return "\n".join(lines)


def _by_contact(decision: dict) -> bool:
    return any(reason.startswith(f"{CONTACT}:") for reason in decision["reasons"])


def publish_play_day(cfg: LifeguardConfig, platform: Platform, children: list[str], seed: int,
                     day_start_ms: int) -> int:
    """For the demo: produces ``play_day`` (sessions and chat of these children with friends and strangers,
    on the day starting at ``day_start_ms``) with Kafka timestamps at event time. Produce it before the live
    traffic: the live events then carry the job's event time past that day, so its totals and alerts come
    out. Returns the number of records."""
    topics = {"sessions": cfg.kafka.topics.sessions, "chat": cfg.kafka.topics.chat}
    producer = kafka_io.producer(cfg.kafka)
    events = play_day(platform, children, seed, day_start_ms)
    for event in events:
        producer.send(topics[event.topic], key=event.key, value=event.value, timestamp_ms=event.value["ts"])
    producer.flush()
    producer.close()
    return len(events)


# Children whose simulated day of sessions and chat (with friends and strangers) the demo plays first.
DEMO_CHILDREN = 6


def children_with_parents(platform: Platform, count: int) -> list[str]:
    return [p.user_id for p in platform.profiles
            if p.age_band is AgeBand.UNDER_13 and p.parent_id is not None][:count]


def run_demo(cfg: LifeguardConfig, users: int, duration_s: float, rate: float, seed: int,
             screenshot: Path | None = None) -> str:
    prepare_services(cfg)
    print(prepare_review(cfg))
    now_ms = int(time.time() * 1000)
    platform = build_platform(users, seed, now_ms=now_ms)
    print(f"Feast: loaded {prepare_feast(cfg, platform)} user profiles into Redis and the offline store")
    print(f"Image bank: {write_image_banks(cfg, seed)} known-bad image hashes")
    # Yesterday (UTC), produced before the jobs start: a backlog, so every partition has records at once
    # and the live traffic then carries event time past that day, closing its totals.
    children = children_with_parents(platform, DEMO_CHILDREN)
    yesterday_ms = (now_ms // DAY_MS - 1) * DAY_MS
    print(f"Sessions: {publish_play_day(cfg, platform, children, seed, yesterday_ms)} events of yesterday "
          f"for {len(children)} children")
    logs = cfg.path(cfg.runtime_dir)
    print(f"Starting the moderation and feature jobs on MiniClusters (logs: {logs}/demo-*.log) ...")
    with running_job("moderation_job.py", {}, logs / "demo-job.log", cfg.job.web_ui_port) as job, \
            running_job("features_job.py", {}, logs / "demo-features.log", cfg.job.web_ui_port + 1) as features:
        print(f"Flink web UI: moderation {job.web_ui}, features {features.web_ui}")
        published = publish_simulation(cfg, platform, duration_s, rate, seed, malformed=20,
                                       truth_file=cfg.path(cfg.runtime_dir) / "demo-truth.jsonl")
        outputs = collect_outputs(cfg, published, timeout_s=120)
        if screenshot is not None:
            try:
                print(f"Web UI screenshot: {job.screenshot(screenshot)}")
            except (RuntimeError, OSError, subprocess.SubprocessError) as error:  # the summary still comes
                print(f"Web UI screenshot not taken: {error}")
    per_child = child_summary(open_store(cfg), children, outputs[cfg.kafka.topics.parent_alerts])
    queued = {r["event_id"] for r in outputs[cfg.kafka.topics.review_queue]}
    console = (f"Reviewer console: http://{cfg.review.console_host}:{cfg.review.console_port} (local demo login: "
               f"{DEMO_REVIEWER} / {DEMO_PASSWORD}); it keeps running: `lifeguard review stop` ends it")
    return (f"{summary(cfg, published, outputs)}\n\nChildren's day (Feast online store, parent alerts)\n{per_child}"
            f"\n\nReview queue (PostgreSQL review store)\n{review_queue_top(cfg, queued)}\n\n{console}")
