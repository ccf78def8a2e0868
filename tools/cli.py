"""The `lifeguard` command."""
from __future__ import annotations

import argparse
import json
import sys
import time
import warnings
from pathlib import Path

from lifeguard.config import LifeguardConfig, load_config


def _broker(cfg: LifeguardConfig, args) -> None:
    from tools import local

    print({"start": local.broker_start, "stop": local.broker_stop,
           "status": local.broker_status}[args.action](cfg))


def _cluster(cfg: LifeguardConfig, args) -> None:
    from tools import local

    print(local.cluster(cfg, args.action))


def _redis(cfg: LifeguardConfig, args) -> None:
    from tools import local

    print(local.redis_ensure(cfg))


def _review(cfg: LifeguardConfig, args) -> None:
    from review.schema import prepare_database
    from review.store import ReviewStore
    from tools import local

    if args.action == "database":
        print(local.postgres_ensure(cfg))
    elif args.action == "stop-database":
        print(local.postgres_stop(cfg))
    elif args.action == "start":
        print(local.review_services_start(cfg))
    elif args.action == "stop":
        print(local.review_services_stop(cfg))
    elif args.action == "migrate":
        created, applied = prepare_database(cfg.review)
        print(f"{'created' if created else 'found'} database {cfg.review.database} on {cfg.review.address}; "
              f"applied {', '.join(f'{m.version:04d}_{m.name}' for m in applied) or 'nothing (up to date)'}")
    elif args.action == "consume":
        from review.consumer import ReviewConsumer

        import signal

        deadline = time.monotonic() + args.seconds if args.seconds else None
        stopping = []
        # SIGTERM (`lifeguard review stop`) ends the round in progress and leaves the consumer group.
        signal.signal(signal.SIGTERM, lambda *_: stopping.append(True))
        counts = ReviewConsumer(cfg).run(lambda: bool(stopping) or (deadline is not None and time.monotonic() > deadline))
        print(json.dumps({k: v for k, v in vars(counts).items() if k != "errors"} | {"errors": counts.errors[-5:]}))
    elif args.action == "serve":
        from review.console import create_app

        print(f"reviewer console on http://{cfg.review.console_host}:{cfg.review.console_port}", flush=True)
        create_app(cfg).run(host=cfg.review.console_host, port=cfg.review.console_port)
    elif args.action == "add-reviewer":
        import getpass
        import os

        from review.console import ROLES, password_hash

        if args.event_id is None or args.role not in ROLES:
            raise SystemExit(f"lifeguard review add-reviewer NAME --role {{{','.join(ROLES)}}}")
        password = os.environ.get("LIFEGUARD_REVIEWER_PASSWORD") or getpass.getpass(f"password for {args.event_id}: ")
        ReviewStore.connect(cfg.review).add_reviewer(args.event_id, args.role, password_hash(password))
        print(f"saved reviewer {args.event_id} ({args.role})")
    elif args.action == "labels":
        for label in ReviewStore.connect(cfg.review).labels():
            print(json.dumps(label))
    elif args.action == "claim":
        item = ReviewStore.connect(cfg.review).claim_next(args.reviewer, senior=args.senior)
        print("nothing waits for review" if item is None else item.model_dump_json(indent=2))
    elif args.event_id is None:
        raise SystemExit(f"lifeguard review {args.action}: name the claimed item's EVENT_ID")
    else:
        print(ReviewStore.connect(cfg.review).decide(args.event_id, args.reviewer, args.action, args.category,
                                                     args.note).model_dump_json())


def _audit(cfg: LifeguardConfig, args) -> None:
    from review.store import ReviewStore

    entries = ReviewStore.connect(cfg.review).history(args.event_id)
    if not entries:
        print(f"the audit log holds nothing on {args.event_id}")
    for entry in entries:
        print(f"{entry.at.isoformat(timespec='milliseconds')}  {entry.actor}: {entry.action}  {json.dumps(entry.detail)}")


def _report(cfg: LifeguardConfig, args) -> None:
    from datetime import datetime, timedelta, timezone

    from review.store import ReviewStore
    from tools.report import build_report, render

    end = args.until or datetime.now(timezone.utc)
    start = args.since or end - timedelta(days=1)
    print(render(build_report(ReviewStore.connect(cfg.review).audit_between(start, end), start, end), args.chart))


def _jars(cfg: LifeguardConfig, args) -> None:
    from jobs.jars import fetch_jars

    for path in fetch_jars(cfg.path(cfg.runtime_dir) / "jars"):
        print(f"verified {path}")


def _schemas(cfg: LifeguardConfig, args) -> None:
    from lifeguard.schemas import EXAMPLES

    for topic, example in EXAMPLES.items():
        print(f"{topic}:\n  {json.dumps(example)}")


def _tail(cfg: LifeguardConfig, args) -> None:
    from tools.kafka_io import follow

    topic = getattr(cfg.kafka.topics, args.topic.replace("-", "_"), args.topic)
    try:
        for record in follow(cfg.kafka, topic, from_beginning=not args.new):
            try:
                value = json.dumps(record.json(), indent=None if args.compact else 2)
            except ValueError:
                value = repr(record.value)
            print(f"[{time.strftime('%H:%M:%S', time.localtime(record.timestamp / 1000))}] key={record.key}\n{value}")
    except KeyboardInterrupt:
        pass


def _simulate(cfg: LifeguardConfig, args) -> None:
    from tools.demo import prepare_feast, publish_simulation, write_image_banks
    from tools.simulator import build_platform

    platform = build_platform(args.users, args.seed, now_ms=int(time.time() * 1000))
    print(f"Feast: loaded {prepare_feast(cfg, platform)} user profiles")
    print(f"Image bank: wrote {write_image_banks(cfg, args.seed)} known-bad hashes to {cfg.models.image_banks}")
    published = publish_simulation(cfg, platform, args.duration, args.rate, args.seed, args.malformed, args.truth)
    print(f"published {dict(published.per_topic)} and {published.malformed} malformed records; "
          f"{len(published.truth)} injected cases written to {args.truth}")


def _demo(cfg: LifeguardConfig, args) -> None:
    from tools.demo import run_demo

    print(run_demo(cfg, args.users, args.duration, args.rate, args.seed, args.screenshot))


def _bench(cfg: LifeguardConfig, args) -> None:
    from tools.bench.chat import run_bench

    print(run_bench(cfg, args))


def _bench_images(cfg: LifeguardConfig, args) -> None:
    from tools.bench.images import run_bench_images

    print(run_bench_images(cfg, args.sizes, args.queries, args.images, args.batch))


def _bench_hostile(cfg: LifeguardConfig, args) -> None:
    from tools.bench.hostile import run_bench_hostile

    print(run_bench_hostile(cfg, args.repeats))


def _bench_cascade(cfg: LifeguardConfig, args) -> None:
    from tools.bench.cascade import run_bench_cascade

    print(run_bench_cascade(cfg, args.seconds, args.batch))


def _bench_review(cfg: LifeguardConfig, args) -> None:
    from tools.bench.review import run_review_bench

    print(run_review_bench(cfg, args.items, args.reviewers))


def _bench_sessions(cfg: LifeguardConfig, args) -> None:
    from tools.bench.sessions import run_session_bench

    print(run_session_bench(cfg, args.users, args.events))


def _score(cfg: LifeguardConfig, args) -> None:
    from lifeguard.schemas import AgeBand
    from udfs.screening import Screener

    screener = Screener.from_config(cfg)
    if args.kind == "images":
        from tools.score_images import score_images_to

        score_images_to(screener, args.file, sys.stdout, AgeBand(args.age_band))
        return
    from udfs.backtest import score_text_file

    with (sys.stdin if str(args.file) == "-" else open(args.file)) as source:
        score_text_file(screener, source, sys.stdout)


def _feast(cfg: LifeguardConfig, args) -> None:
    from features.feast_store import apply_definitions, open_store

    apply_definitions(cfg, open_store(cfg))
    print(f"applied the Feast definitions in {cfg.feast.repo_path} (registry in {cfg.feast.data_dir})")


def _utc(text: str):
    """An ISO 8601 time; one without a zone is UTC."""
    from datetime import datetime, timezone

    moment = datetime.fromisoformat(text)
    return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="lifeguard", description="Real-time child-safety moderation on Flink.")
    p.add_argument("--config", type=Path, help="YAML config (default: flink-conf/lifeguard.yaml)")
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("broker", help="the embedded Kafka-protocol broker for local runs")
    s.add_argument("action", choices=["start", "stop", "status"])
    s.set_defaults(run=_broker)
    s = sub.add_parser("cluster", help="a standalone Flink cluster on this machine, from the apache-flink wheel")
    s.add_argument("action", choices=["start", "stop"])
    s.set_defaults(run=_cluster)
    sub.add_parser("redis", help="use the configured Redis, or start a local one").set_defaults(run=_redis)
    s = sub.add_parser("review", help="the review store (PostgreSQL): start, migrate, consume, claim and decide")
    s.add_argument("action", choices=["database", "stop-database", "migrate", "start", "stop", "consume", "serve", "add-reviewer",
                            "labels", "claim", "confirm", "overturn", "escalate"],
                   help="database: use the configured PostgreSQL or start an embedded one (stop-database stops "
                        "it); migrate: create the "
                        "database and apply the migrations; start/stop: the consumer and the console in the "
                        "background; consume: store review-queue and audit decisions; "
                        "serve: the reviewer console; add-reviewer NAME --role ROLE: an account (password from "
                        "LIFEGUARD_REVIEWER_PASSWORD or asked); labels: every label as JSON lines; claim: the next item; confirm/overturn/escalate "
                        "EVENT_ID: a verdict on a claimed item")
    s.add_argument("event_id", nargs="?", help="the claimed item (confirm, overturn, escalate); the name (add-reviewer)")
    s.add_argument("--role", default="reviewer", help="add-reviewer: reviewer, senior or admin")
    s.add_argument("--reviewer", default="cli", help="who claims or decides")
    s.add_argument("--senior", action="store_true", help="claim: a senior reviewer (takes escalated items too)")
    s.add_argument("--category", help="confirm: the violation's category")
    s.add_argument("--note", default="")
    s.add_argument("--seconds", type=float, help="consume: stop after this long (default: run until interrupted)")
    s.set_defaults(run=_review)
    s = sub.add_parser("report", help="actions by category, appeal overturn and proactive rates, time to claim")
    s.add_argument("--since", type=_utc, help="start, ISO 8601 (default: a day before --until)")
    s.add_argument("--until", type=_utc, help="end, ISO 8601 (default: now)")
    s.add_argument("--chart", type=Path, help="also write the time-to-claim histogram here (PNG)")
    s.set_defaults(run=_report)
    s = sub.add_parser("audit", help="an event's whole history: decision, review, verdicts")
    s.add_argument("event_id")
    s.set_defaults(run=_audit)
    sub.add_parser("jars", help="fetch and verify the Flink Kafka connector jars").set_defaults(run=_jars)
    sub.add_parser("feast", help="apply the Feast definitions").set_defaults(run=_feast)
    sub.add_parser("schemas", help="print an example record for every topic").set_defaults(run=_schemas)

    s = sub.add_parser("tail", help="print a topic's records for a human")
    s.add_argument("topic")
    s.add_argument("--new", action="store_true", help="only records that arrive from now on")
    s.add_argument("--compact", action="store_true", help="one line per record")
    s.set_defaults(run=_tail)

    for name, run, duration, rate in (("simulate", _simulate, 60.0, 50.0), ("demo", _demo, 60.0, 40.0)):
        s = sub.add_parser(name, help=f"{name}: simulated platform traffic")
        s.add_argument("--users", type=int, default=500)
        s.add_argument("--duration", type=float, default=duration, help="seconds of traffic")
        s.add_argument("--rate", type=float, default=rate, help="events per second")
        s.add_argument("--seed", type=int, default=7)
        if name == "simulate":
            s.add_argument("--malformed", type=int, default=0)
            s.add_argument("--truth", type=Path, default=Path(".lifeguard/truth.jsonl"))
        else:
            s.add_argument("--screenshot", type=Path, help="also save the moderation job's web UI page here (PNG; "
                                                             "needs chromium)")
        s.set_defaults(run=run)

    s = sub.add_parser("score", help="the current policy's decisions for past messages or images, offline")
    s.add_argument("kind", choices=["text", "images"])
    s.add_argument("file", type=Path, help='text: JSON lines {"id", "text", "sender_age_band"?, '
                                           '"recipient_age_band"?}, - for stdin; images: an image or a folder')
    s.add_argument("--age-band", default="under_13", choices=["under_13", "13_15", "16_17", "adult"],
                   help="images: the audience's age band (default: the youngest)")
    s.set_defaults(run=_score)

    s = sub.add_parser("bench", help="throughput and latency of the job next to a trivial job")
    s.add_argument("--records", type=int, default=20_000, help="chat events for the throughput run")
    s.add_argument("--rate", type=float, default=200.0, help="events per second for the latency run")
    s.add_argument("--latency-seconds", type=float, default=20.0)
    s.add_argument("--modes", default="thread,process", help="python.execution-mode values to compare")
    s.set_defaults(run=_bench)
    kinds = s.add_subparsers(dest="bench_kind", metavar="{images,sessions,hostile,cascade,review}",
                             help="another benchmark than the chat job's")
    b = kinds.add_parser("images", help="images/s through the image tier; PDQ look-ups next to python-threatexchange")
    b.add_argument("--sizes", type=int, nargs="+", default=[1_000_000, 10_000_000], help="bank sizes in hashes")
    b.add_argument("--queries", type=int, default=1000)
    b.add_argument("--images", type=int, default=256, help="uploads through the tier")
    b.add_argument("--batch", type=int, default=32)
    b.set_defaults(run=_bench_images)
    b = kinds.add_parser("sessions", help="session events/s through the feature job and its state per 10,000 users")
    b.add_argument("--users", type=int, default=10_000)
    b.add_argument("--events", type=int, default=50_000, help="session events in the backlog")
    b.set_defaults(run=_bench_sessions)
    b = kinds.add_parser("hostile", help="worst-case time of hostile records through the parser and the cheap text tier")
    b.add_argument("--repeats", type=int, default=5)
    b.set_defaults(run=_bench_hostile)
    b = kinds.add_parser("cascade", help="the share of simulated chat the text cascade sends to stage 2, and messages/s")
    b.add_argument("--seconds", type=float, default=300.0, help="simulated seconds of traffic (20 events/s)")
    b.add_argument("--batch", type=int, default=64)
    b.set_defaults(run=_bench_cascade)
    b = kinds.add_parser("review", help="claims/s and time-to-claim of concurrent reviewers on the review store")
    b.add_argument("--items", type=int, default=2000, help="waiting items per round")
    b.add_argument("--reviewers", type=int, nargs="+", default=[1, 4, 8], help="concurrent reviewers per round")
    b.set_defaults(run=_bench_review)
    return p


def main(argv: list[str] | None = None) -> int:
    # kafka-python 3 still loads its protocol files with deprecated importlib calls: not the user's concern.
    warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"(kafka|importlib)\b")
    args = parser().parse_args(argv)
    cfg = load_config(args.config)
    try:
        args.run(cfg, args)
    except Exception as exc:  # the CLI reports one clear line; tracebacks are for -X dev
        from jobs.jars import JarError
        from review.store import ReviewError
        from tools.local import LocalRunError

        if isinstance(exc, (JarError, LocalRunError, ReviewError)):
            print(f"lifeguard: {exc}", file=sys.stderr)
            return 2
        raise
    return 0


if __name__ == "__main__":
    sys.exit(main())
