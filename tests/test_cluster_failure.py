"""Failure on a real cluster: the standalone Flink cluster from the wheel (a JobManager and a TaskManager
as their own processes), the embedded broker and Redis-backed Feast. The moderation job is submitted with
`flink run`, as in production; a known stream goes in, the TaskManager is killed with SIGKILL mid-stream
and a fresh one started, and every output is checked by event id.

What it proves: the job restores from its last completed checkpoint (Flink says so), every input is
decided, and keyed state survives: a grooming conversation that began in a room before the kill crosses
review after it, naming the room it moved from (the pair's window and the room meeting came back from
the checkpoint; a pair started afresh would know of no room). Delivery is at-least-once, so what was
decided between the last checkpoint and the kill is decided again: those duplicates are counted and
printed, never lost inputs.
"""
from __future__ import annotations

import os
import signal
import time
import uuid
from collections import Counter

import pytest

from jobtest import Job, chat, free_port, prepared_run, send_warm_up, wait_until_ready
from test_grooming_job import GROOMING
from tools import local
from tools.jobrunner import rest_get

CHECKPOINT_MS = 2000
# Lost TaskManagers are noticed in seconds, not the default 50 s.
CLUSTER_SETTINGS = {"heartbeat": {"interval": 1000, "timeout": 10000}}
# Messages before the kill, and after it: all from adults in the lobby (decided alone, no pair state).
BEFORE, AFTER = 120, 120
# The conversation's first messages go before the kill: fewer than it takes to cross review.
GROOMING_BEFORE = 5


class ClusterJob(Job):
    def __init__(self, cfg, job_id: str):
        super().__init__(cfg, None)
        self.job_id = job_id

    def rest(self, path: str) -> dict:
        return rest_get(self.cfg.job.web_ui_port, f"/jobs/{self.job_id}{path}") or {}

    def diagnosis(self) -> str:
        exceptions = self.rest("/exceptions").get("exceptionHistory", {}).get("entries") or [{}]
        log = sorted((self.cfg.path(self.cfg.runtime_dir) / "flink-log").glob("*taskexecutor*.log"))
        tail = log[-1].read_text(errors="replace").splitlines()[-30:] if log else []
        return f"state {self.rest('').get('state')}; root exception {exceptions[0].get('exceptionName')}\n" + "\n".join(tail)

    def completed_checkpoint_after(self, ts_ms: int, timeout_s: float = 60) -> dict:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            latest = (self.rest("/checkpoints").get("latest") or {}).get("completed") or {}
            if latest.get("latest_ack_timestamp", 0) > ts_ms:
                return latest
            time.sleep(0.5)
        raise AssertionError(f"no checkpoint completed after {ts_ms} within {timeout_s} s: {self.diagnosis()}")


@pytest.fixture
def cluster_job(services, tmp_path):
    # A runtime folder of the test's own (the cluster's config, pid and log files), with the verified jars.
    runtime = tmp_path / "runtime"
    runtime.mkdir()
    (runtime / "jars").symlink_to(services.path(services.runtime_dir) / "jars")
    environ, cfg = prepared_run(tmp_path, LIFEGUARD_RUNTIME_DIR=str(runtime),
                                LIFEGUARD_JOB__CHECKPOINT_INTERVAL_MS=str(CHECKPOINT_MS),
                                LIFEGUARD_JOB__WEB_UI_PORT=str(free_port()))
    try:
        local.cluster(cfg, "start", CLUSTER_SETTINGS | {"jobmanager": {"rpc": {"port": free_port()}}})
        job = ClusterJob(cfg, local.submit_job(cfg, environ))
        wait_until_ready(lambda: send_warm_up(job), cfg.kafka, cfg.kafka.topics.decisions, "event_id", job.diagnosis)
        yield job
    finally:
        try:
            local.cluster(cfg, "stop")
        finally:  # whatever the stop script managed: no TaskManager of this test outlives it
            for pid in local.taskmanager_pids(cfg):
                os.kill(pid, signal.SIGKILL)


def test_a_taskmanager_killed_mid_stream_loses_no_input_and_keeps_the_conversations(cluster_job):
    job = cluster_job
    room = f"race-track-{uuid.uuid4().hex[:6]}"
    meeting = [chat("kid", "anyone want to race?", room=room), chat("adult", "me! i saw you win last time", room=room)]
    grooming = [chat(sender, text, to=recipient) for sender, recipient, text in GROOMING]
    before = [chat("adult", f"round {i} was close, gg", room="lobby") for i in range(BEFORE)]
    after = [chat("adult", f"next map {i}?", room="lobby") for i in range(AFTER)]

    job.produce([("chat", e) for e in meeting])
    job.outputs({e["event_id"] for e in meeting})
    job.produce([("chat", e) for e in grooming[:GROOMING_BEFORE] + before])
    first = job.outputs({e["event_id"] for e in grooming[:GROOMING_BEFORE] + before}, timeout_s=180)
    assert not [r for r in first["review"] if r.json()["kind"] == "conversation"], "crossed review before the kill"
    checkpoint = job.completed_checkpoint_after(int(time.time() * 1000))

    victims = local.taskmanager_pids(job.cfg)
    assert victims
    for pid in victims:
        os.kill(pid, signal.SIGKILL)
    killed_at = time.monotonic()
    local.start_taskmanager(job.cfg)
    job.produce([("chat", e) for e in grooming[GROOMING_BEFORE:] + after])
    every_id = {e["event_id"] for e in meeting + grooming + before + after}
    outputs = job.outputs(every_id, timeout_s=420)
    restored_in = time.monotonic() - killed_at

    decided = Counter(r.json()["event_id"] for r in outputs["decisions"] if r.json()["event_id"] in every_id)
    assert set(decided) == every_id  # nothing lost
    restored = (job.rest("/checkpoints").get("latest") or {}).get("restored") or {}
    assert restored.get("id", -1) >= checkpoint["id"]  # from the checkpoint taken before the kill, or later
    assert job.rest("").get("state") == "RUNNING"

    conversation = [r.json() for r in outputs["review"] if r.json()["kind"] == "conversation"]
    assert conversation, "the conversation did not cross review after the restore"
    assert any(reason.startswith("moved to direct messages") and reason.endswith(f"in room {room}")
               for reason in conversation[0]["reasons"])
    duplicates = sum(count - 1 for count in decided.values())
    print(f"\ninputs {len(every_id)}, decided {len(decided)}, duplicated decisions {duplicates} "
          f"(at-least-once since checkpoint {checkpoint['id']}); restored from checkpoint {restored.get('id')}; "
          f"kill to every input decided: {restored_in:.0f} s")
