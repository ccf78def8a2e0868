"""The moderation job end to end: real broker, MiniCluster job, Redis-backed Feast and the ONNX model.

One job run per module (starting a MiniCluster takes ~30 s); each test produces its own events and
asserts on the outputs that carry its event ids.
"""
from __future__ import annotations

import base64
import json
import re
import urllib.request
import uuid
from collections import Counter
from pathlib import Path

import pytest

from jobtest import SEED, chat, decisions_by_id, png, started_job, upload
from tools.simulator import blocklist_images, malformed_records

@pytest.fixture(scope="module")
def job(services, tmp_path_factory):
    with started_job(tmp_path_factory.mktemp("job")) as job:
        yield job


def test_known_events_get_exactly_the_expected_decisions_and_alerts(job):
    banked = blocklist_images(SEED)[0]
    # A real host from the URLhaus blocklist, written the way users dodge link filters.
    entries = job.cfg.path(Path("models/build/urlhaus_entries.csv")).read_text().splitlines()[1:]
    host = next(line.split(",")[2] for line in entries if ",domain," in line)
    events = {
        "friendly": chat("kid", "gg that was fun, want to play again tomorrow?", to="kid-friend"),
        "lure": chat("adult", "add me on snapchat so we can talk more", to="kid"),
        "explicit": chat("adult", "send nudes", to="kid"),
        "malware_link": chat("teen", f"free robux at {host.replace('.', ' dot ')} hurry", room="lobby"),
        "self_harm": chat("teen", "i want to die, nobody would even notice", room="lobby"),
        "unknown_user": chat("ghost-user", "hi everyone", room="lobby"),
        "banked_image": upload("teen", banked),
        "fresh_image": upload("teen", png((30, 160, 90))),
    }
    job.produce([("chat" if e["event_id"].startswith("c-") else "uploads", e) for e in events.values()])
    ids = {e["event_id"] for e in events.values()}
    outputs = job.outputs(ids)
    decided = decisions_by_id(outputs)
    action = {name: decided[e["event_id"]]["action"] for name, e in events.items()}

    # The lure: an adult with no history asking a child to move to another app "so we can talk more" is
    # blocked by the child-directed heads (sexual_minors), and its rule still says why.
    assert action == {"friendly": "allow", "lure": "block", "explicit": "block", "malware_link": "block",
                      "self_harm": "review", "unknown_user": "allow", "banked_image": "block",
                      "fresh_image": "allow"}
    assert Counter(r.json()["event_id"] for r in outputs["decisions"] if r.json()["event_id"] in ids) == \
        Counter({i: 1 for i in ids})
    assert any("off_platform_lure" in reason for reason in decided[events["lure"]["event_id"]]["reasons"])
    assert any("unknown user" in reason for reason in decided[events["unknown_user"]["event_id"]]["reasons"])
    assert decided[events["unknown_user"]["event_id"]]["age_band"] == "under_13"
    assert decided[events["banked_image"]["event_id"]]["scores"]["image_bank_distance"] <= 6

    reviews = {r.json()["event_id"] for r in outputs["review"]}
    assert events["self_harm"]["event_id"] in reviews

    alerts = [r.json() for r in outputs["alerts"] if r.json()["event_id"] in ids]
    # The child received the lure and the explicit message; the teen (16-17) is outside the alerting bands.
    assert sorted((a["event_id"], a["parent_id"], a["child_role"], a["severity"]) for a in alerts) == sorted([
        (events["lure"]["event_id"], "parent-of-kid", "recipient", "urgent"),
        (events["explicit"]["event_id"], "parent-of-kid", "recipient", "urgent")])
    assert all(r.key == "parent-of-kid" for r in outputs["alerts"] if r.json()["event_id"] in ids)


def test_the_parents_contact_settings_decide_who_may_write_and_a_childs_image_to_a_stranger_alerts(job):
    events = {
        "stranger_dm": chat("adult", "hey whats up", to="kid-friend"),  # kid-friend: friends only
        "friend_dm": chat("kid", "hey whats up", to="kid-friend"),
        "image_to_adult": upload("kid", png((200, 120, 40)), to="adult"),
    }
    job.produce([("chat" if e["event_id"].startswith("c-") else "uploads", e) for e in events.values()])
    ids = {e["event_id"] for e in events.values()}
    outputs = job.outputs(ids)
    decided = decisions_by_id(outputs)
    action = {name: decided[e["event_id"]]["action"] for name, e in events.items()}
    assert action == {"stranger_dm": "block", "friend_dm": "allow", "image_to_adult": "review"}
    assert ("contact:kid-friend accepts direct messages from friends only (dm_policy friends); adult is not allowed"
            in decided[events["stranger_dm"]["event_id"]]["reasons"])
    alerts = [r.json() for r in outputs["alerts"] if r.json()["event_id"] in ids]
    # The blocked stranger is counted, not alerted; the child's own image to an adult is.
    assert [(a["event_id"], a["kind"], a["parent_id"], a["child_role"]) for a in alerts] == [
        (events["image_to_adult"]["event_id"], "image_shared", "parent-of-kid", "sender")]
    reviews = {r.json()["event_id"] for r in outputs["review"]}
    assert events["image_to_adult"]["event_id"] in reviews


def test_an_adults_sexual_approach_to_a_child_is_blocked_at_the_first_message_and_alerts_the_parent(job):
    approach = chat("adult", "wanna see what i have in my pants", to="kid")  # kid: parents allow everyone
    job.produce([("chat", approach)])
    outputs = job.outputs({approach["event_id"]})
    decision = decisions_by_id(outputs)[approach["event_id"]]
    assert decision["action"] == "block"
    assert not any(r.startswith("contact:") for r in decision["reasons"])  # what was said blocked it
    alerts = [r.json() for r in outputs["alerts"] if r.json()["event_id"] == approach["event_id"]]
    assert [(a["parent_id"], a["child_role"], a["severity"]) for a in alerts] == [("parent-of-kid", "recipient", "urgent")]


def test_a_thousand_malformed_records_all_reach_dead_letter_and_the_job_keeps_going(job):
    bad = malformed_records(1000, seed=3, oversize_bytes=job.cfg.limits.max_record_bytes + 1)
    valid = [chat("kid", f"message number {i}", to="kid-friend") for i in range(200)]
    mixed: list[tuple[str, bytes | dict]] = []
    for i, (topic, value) in enumerate(bad):
        mixed.append((topic, value))
        if i % 5 == 0:
            mixed.append(("chat", valid[i // 5]))
    # The dead letters of this test are those whose original bytes are among ours.
    ours = Counter(base64.b64encode(value).decode() for _, value in bad)
    job.produce(mixed)
    outputs = job.outputs({v["event_id"] for v in valid}, dead_letters=1000,
                          is_ours=lambda letter: letter["original_b64"] in ours, timeout_s=150)

    decided = Counter(r.json()["event_id"] for r in outputs["decisions"])
    assert all(decided[v["event_id"]] == 1 for v in valid)
    letters = [r.json() for r in outputs["dead"] if r.json()["original_b64"] in ours]
    assert len(letters) == 1000
    assert Counter(letter["original_b64"] for letter in letters) == ours
    assert all(letter["reason"] and letter["source_offset"] >= 0 for letter in letters)
    assert {letter["error_kind"] for letter in letters} >= {"not_json", "not_utf8", "invalid", "unknown_version",
                                                            "oversize"}
    assert job.job.alive()


def test_an_undecodable_upload_goes_to_dead_letter(job):
    broken = upload("teen", b"\x89PNG\r\n\x1a\n" + b"\x00" * 40)
    job.produce([("uploads", broken)])
    outputs = job.outputs(set(), dead_letters=1, is_ours=lambda letter: letter["event_id"] == broken["event_id"],
                          timeout_s=60)
    letters = [r.json() for r in outputs["dead"] if r.json().get("event_id") == broken["event_id"]]
    assert len(letters) == 1 and "image rejected" in letters[0]["reason"]
    assert broken["event_id"] not in decisions_by_id(outputs)


def test_no_message_text_reaches_any_log_line(job):
    """What children write must not land in the job's output or Flink's logs: the decided, the blocked and
    the dead-lettered alike (a log is read by more people, and kept longer, than the decisions)."""
    import pyflink

    canary = f"canary{uuid.uuid4().hex[:10]}"
    events = [chat("kid", f"{canary} gg want to play again", to="kid-friend"),
              chat("adult", f"{canary} wanna see what i have in my pants", to="kid"),
              chat("teen", f"{canary} i want to die", room="lobby")]
    poison = json.dumps({**chat("kid", canary, to="kid-friend"), "ts": "x" * 50 + canary}).encode()
    job.produce([("chat", e) for e in events] + [("chat", poison)])
    b64 = base64.b64encode(poison).decode()
    outputs = job.outputs({e["event_id"] for e in events}, dead_letters=1, is_ours=lambda letter: letter["original_b64"] == b64)
    assert {e["event_id"] for e in events} <= set(decisions_by_id(outputs))
    logs = [job.job.log_path, *(Path(pyflink.__file__).parent / "log").glob("*")]
    assert [path for path in logs if path.is_file() and canary in path.read_text(errors="replace")] == []


PROMETHEUS_PORTS = range(9249, 9270)  # flink-conf/config.yaml's metrics.reporter.prometheus.port
DASHBOARD = Path(__file__).resolve().parent.parent / "docker" / "grafana-lifeguard.json"


def scrape(job_name: str) -> dict[str, list[str]]:
    """Every Prometheus series of the job on this machine's reporters: metric name -> its sample lines. The
    reporter writes label values with every character but letters, digits and _ as _."""
    label = re.sub(r"[^A-Za-z0-9_]", "_", job_name)
    series: dict[str, list[str]] = {}
    for port in PROMETHEUS_PORTS:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as response:
                text = response.read().decode()
        except OSError:
            continue
        for line in text.splitlines():
            if line.startswith("flink_") and f'job_name="{label}"' in line:
                series.setdefault(line.split("{", 1)[0], []).append(line)
    return series


def test_the_job_exports_its_metrics_to_prometheus_and_the_dashboard_queries_only_those(job):
    events = [chat("kid", "gg want to play again", to="kid-friend"), chat("teen", "send nudes", room="lobby")]
    broken = f"not json {uuid.uuid4().hex}".encode()
    job.produce([("chat", e) for e in events] + [("chat", broken)])
    b64 = base64.b64encode(broken).decode()
    job.outputs({e["event_id"] for e in events}, dead_letters=1, is_ours=lambda letter: letter["original_b64"] == b64)
    series = scrape(job.cfg.job.name)
    operator = "flink_taskmanager_job_task_operator_"
    for name in ("batches", "texts_scored", "texts_escalated", "le_model_batch_ms", "model_batch_ms_count",
                 "action_decisions", "tier_acted_by_tier", "error_kind_dead_letters"):
        assert operator + name in series, f"{name} not exported: {sorted(series)[:40]}"
    assert any('action="block"' in line for line in series[operator + "action_decisions"])
    assert any('tier="rule"' in line for line in series[operator + "tier_acted_by_tier"])  # "send nudes" is a rule's
    assert any('error_kind="not_json"' in line for line in series[operator + "error_kind_dead_letters"])
    assert any('le="inf"' in line for line in series[operator + "le_model_batch_ms"])
    queries = [target["expr"] for panel in json.loads(DASHBOARD.read_text())["panels"] for target in panel["targets"]]
    assert queries and set(re.findall(r"flink_\w+", " ".join(queries))) <= set(series)


def test_with_redis_dead_decisions_still_flow_as_for_the_youngest(services, tmp_path):
    with started_job(tmp_path, LIFEGUARD_REDIS__PORT="1") as dead_redis:
        events = [chat("adult", "hello there", room="lobby"), chat("teen", "nice build!", to="adult")]
        dead_redis.produce([("chat", e) for e in events])
        decided = decisions_by_id(dead_redis.outputs({e["event_id"] for e in events}))
        for event in events:
            decision = decided[event["event_id"]]
            assert decision["age_band"] == "under_13"
            assert any("feature store unavailable" in reason for reason in decision["reasons"])
        assert dead_redis.job.alive()
