"""`lifeguard bench`: the moderation job's throughput and latency next to a trivial job, in one run.

For each Python execution mode, each job gets fresh topics and runs twice over:
- throughput: a backlog of simulated chat is produced first; events/s is the backlog divided by the time
  between the first and the last output arriving at a reader (so the job's start-up is not counted);
- latency: chat produced at a fixed rate; latency is the reader's arrival time minus the event's
  produce time (`ts`), so it covers produce, broker, job, sink and consume.
The ratio moderation/trivial is the figure that travels between machines.
"""
from __future__ import annotations

import itertools
import statistics
import threading
import time
import uuid
from dataclasses import dataclass

from tabulate import tabulate

from tools import kafka_io, local
from lifeguard.config import LifeguardConfig, isolated_run_environ, load_config
from tools.demo import prepare_feast, prepare_services
from tools.jobrunner import running_job
from tools.simulator import build_platform, generate_events

JOBS = {"moderation": "moderation_job.py", "trivial": "passthrough_job.py"}


@dataclass(frozen=True)
class Figures:
    job: str
    mode: str
    events: int
    events_per_s: float
    latency_events: int
    p50_ms: float
    p99_ms: float


def simulated_chat(platform, count: int, run: str) -> list[dict]:
    chats = (e.value for e in generate_events(platform, 1e7, 200.0, seed=5, start_ms=0) if e.topic == "chat")
    return [{**v, "event_id": f"{run}-{i}"} for i, v in enumerate(itertools.islice(chats, count))]


def percentile(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1] if len(values) > 1 else float("nan")


def measure(cfg: LifeguardConfig, job: str, mode: str, backlog: list[dict], rate: float, seconds: float,
            latency_events: list[dict], port: int) -> Figures:
    run = uuid.uuid4().hex[:8]
    env = {**isolated_run_environ("bench-", run), "LIFEGUARD_JOB__PYTHON_EXECUTION_MODE": mode}
    job_cfg = load_config(environ={**env})
    local.create_topics(job_cfg)
    topics = job_cfg.kafka.topics
    producer = kafka_io.producer(cfg.kafka)
    for event in backlog:
        producer.send(topics.chat, key=event["user_id"], value=event)
    producer.flush()
    backlog_ids = {e["event_id"] for e in backlog}
    log = cfg.path(cfg.runtime_dir) / f"bench-{job}-{mode}.log"
    with running_job(JOBS[job], env, log, port, timeout_s=180):
        drained = kafka_io.read(cfg.kafka, [topics.decisions],
                                lambda got: len(got) >= len(backlog_ids), timeout_s=600)
        arrivals = [r.received_ms for r in drained]
        throughput = len(drained) / max((max(arrivals) - min(arrivals)) / 1000, 1e-3)

        latency_ids = {e["event_id"] for e in latency_events}
        seen: list[kafka_io.Received] = []
        reader = threading.Thread(target=lambda: seen.extend(kafka_io.read(
            cfg.kafka, [topics.decisions],
            lambda got: sum(r.json()["event_id"] in latency_ids for r in got) >= len(latency_ids),
            timeout_s=seconds + 120)))
        reader.start()
        time.sleep(1.0)  # let the reader catch up with the backlog's outputs before timing starts
        sent_at: dict[str, int] = {}
        started = time.monotonic()
        for i, event in enumerate(latency_events):
            delay = started + i / rate - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            now = int(time.time() * 1000)
            sent_at[event["event_id"]] = now
            producer.send(topics.chat, key=event["user_id"], value={**event, "ts": now})
        producer.flush()
        reader.join()
    producer.close()
    latencies = [r.received_ms - sent_at[r.json()["event_id"]] for r in seen if r.json()["event_id"] in sent_at]
    return Figures(job, mode, len(drained), round(throughput), len(latencies),
                   round(percentile(latencies, 50), 1), round(percentile(latencies, 99), 1))


def run_bench(cfg: LifeguardConfig, args) -> str:
    prepare_services(cfg, say=lambda _: None)
    platform = build_platform(2000, seed=5, now_ms=int(time.time() * 1000))
    prepare_feast(cfg, platform)
    latency_count = int(args.rate * args.latency_seconds)
    events = simulated_chat(platform, args.records + 2 * latency_count, uuid.uuid4().hex[:6])
    figures = []
    for mode in args.modes.split(","):
        for job in ("trivial", "moderation"):
            print(f"measuring the {job} job in {mode} mode ...", flush=True)
            figures.append(measure(cfg, job, mode, events[:args.records], args.rate, args.latency_seconds,
                                   events[args.records:args.records + latency_count], cfg.job.web_ui_port))
    rows = []
    for f in figures:
        base = next(b for b in figures if b.mode == f.mode and b.job == "trivial")
        rows.append([f.mode, f.job, f.events, f.events_per_s, f"{f.events_per_s / base.events_per_s:.2f}",
                     f"{args.rate:g}/s x {f.latency_events}", f.p50_ms, f.p99_ms])
    return tabulate(rows, headers=["python mode", "job", "backlog", "events/s", "vs trivial",
                                   "latency run", "p50 ms", "p99 ms"], tablefmt="github")
