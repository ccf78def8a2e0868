"""`lifeguard bench sessions`: session events per second through the feature job, and its state size per
10,000 users.

A backlog of simulated session events (``tools.simulator``, sessions only, Kafka timestamps set to
event time) is produced to fresh topics before the job starts. Throughput is the number of session events
the "sessions by user" operator read, divided by the time between the first and the last of them as seen
by polling the job's REST metrics (so the job's start-up is not counted; polling every 0.5 s bounds the
error). State size is the full size of the first checkpoint completed after the backlog was read (hashmap
backend: all keyed state of every operator, plus source offsets), scaled to 10,000 users by the number
of distinct users in the backlog.
"""
from __future__ import annotations

import time
import uuid
from dataclasses import dataclass

from tabulate import tabulate

from tools import kafka_io, local
from lifeguard.config import LifeguardConfig, isolated_run_environ, load_config
from tools.demo import prepare_feast, prepare_services
from tools.jobrunner import rest_get, running_job
from tools.simulator import build_platform, generate_events

SESSIONS_VERTEX = "sessions by user"


@dataclass(frozen=True)
class SessionFigures:
    events: int
    users: int
    events_per_s: float
    state_bytes: int
    state_bytes_per_10k_users: int
    python_mode: str


def session_backlog(platform, events: int, seed: int = 5) -> list[dict]:
    """``events`` simulated session events of ``platform``'s users, in event-time order, over the last day."""
    start = int(time.time() * 1000) - 86_400_000
    sessions = []
    # Sessions are about a third of the simulator's events: ask for enough, stop when there are enough.
    for event in generate_events(platform, duration_s=max(60.0, events / 100), events_per_s=300.0, seed=seed,
                                 start_ms=start):
        if event.topic == "sessions":
            sessions.append(event.value)
            if len(sessions) == events:
                break
    return sessions


def _vertex(port: int, jid: str, name: str) -> dict | None:
    plan = rest_get(port, f"/jobs/{jid}") or {}
    return next((v for v in plan.get("vertices", []) if v["name"].startswith(name)), None)


def measure_sessions(cfg: LifeguardConfig, backlog: list[dict], port: int, timeout_s: float = 600) -> SessionFigures:
    run = uuid.uuid4().hex[:8]
    env = isolated_run_environ("bench-sessions-", run)
    job_cfg = load_config(environ=env)
    local.create_topics(job_cfg)
    producer = kafka_io.producer(cfg.kafka)
    for event in backlog:
        producer.send(job_cfg.kafka.topics.sessions, key=event["user_id"], value=event, timestamp_ms=event["ts"])
    producer.flush()
    producer.close()
    log = cfg.path(cfg.runtime_dir) / "bench-sessions.log"
    with running_job("features_job.py", env, log, port, timeout_s=180):
        jid = (rest_get(port, "/jobs/overview") or {"jobs": [{}]})["jobs"][0]["jid"]
        first = last = None
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            vertex = _vertex(port, jid, SESSIONS_VERTEX)
            read = vertex["metrics"].get("read-records", 0) if vertex else 0
            now = time.monotonic()
            if read and first is None:
                first = (now, read)
            if read >= len(backlog):
                last = (now, read)
                break
            time.sleep(0.5)
        if first is None or last is None:
            raise RuntimeError(f"the feature job read {read} of {len(backlog)} session events in {timeout_s:.0f}s")
        events_per_s = (last[1] - first[1]) / max(last[0] - first[0], 0.5)
        state_bytes = _checkpoint_size_after(port, jid, time.time() * 1000, deadline)
    users = len({e["user_id"] for e in backlog})
    return SessionFigures(len(backlog), users, round(events_per_s), state_bytes,
                          round(state_bytes * 10_000 / users), job_cfg.job.python_execution_mode)


def _checkpoint_size_after(port: int, jid: str, after_ms: float, deadline: float) -> int:
    while time.monotonic() < deadline:
        latest = ((rest_get(port, f"/jobs/{jid}/checkpoints") or {}).get("latest") or {}).get("completed")
        if latest and latest["latest_ack_timestamp"] >= after_ms:
            return int(latest.get("checkpointed_size") or latest["state_size"])
        time.sleep(1)
    raise RuntimeError("no checkpoint completed after the backlog was read")


def run_session_bench(cfg: LifeguardConfig, users: int = 10_000, events: int = 50_000) -> str:
    prepare_services(cfg, say=lambda _: None)
    platform = build_platform(users, seed=5, now_ms=int(time.time() * 1000))
    prepare_feast(cfg, platform)
    figures = measure_sessions(cfg, session_backlog(platform, events), cfg.job.web_ui_port)
    return tabulate([[figures.python_mode, figures.events, figures.users, figures.events_per_s,
                      f"{figures.state_bytes / 1e6:.1f} MB", f"{figures.state_bytes_per_10k_users / 1e6:.1f} MB"]],
                    headers=["python mode", "session events", "users in them", "events/s", "state (checkpoint)",
                             "state per 10,000 users"], tablefmt="github")
