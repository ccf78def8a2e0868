"""The feature job end to end: real broker, MiniCluster job and Redis-backed Feast, over a hand-written
day of sessions, chat and decisions for three children, with the totals computed by hand.

Day D (UTC; all three children's profiles are in UTC), minutes from 10:00:
- kid-a (under 13, parent, limit 60 min): lobby 0-70, heartbeats every 20 s (some pairs swapped, within
  the 30 s lateness), a repeated login; screen 70 min -> screen warning (at 48) and limit (at 60).
- kid-b (under 13, kid-a's friend, no parent): lobby 0-30, then a leave of a room never joined.
- stranger (declared adult): lobby 20-40; writes "lol im 12 too" in the lobby at 21 (age mismatch:
  review), DMs kid-a at 25, 26, 27 (3 stranger DM minutes: alert; an age-mismatch alert, once); 3 of its
  messages are blocked (decisions).
  -> kid-a: stranger 20 min, older stranger 20 (>= 15: alert); kid-b: stranger 10 (no parent: no alert).
- kid-c (under 13, parent with a daily digest, limit 30 min): obby 0-40 then silence (no logout): the
  session ends at 42 -> screen 42 min; its two screen-time notices arrive as one digest after midnight.
Bad input: a heartbeat 65 minutes late and an event with a clock two days ahead (dead letters).
"""
from __future__ import annotations

import base64
import itertools
import time

import pandas as pd
import pytest

from conftest import isolated_environ
from features.feast_store import apply_definitions, load_profiles, open_store
from lifeguard.profiles import UserProfile
from jobtest import free_port, wait_until_ready
from tools import kafka_io, local
from lifeguard.config import load_config
from tools.jobrunner import running_job
from lifeguard.schemas import AgeBand

D = pd.Timestamp("2026-01-01T10:00:00Z")
T0 = int(D.timestamp() * 1000)
S, MIN = 1000, 60_000
KID_A = UserProfile("kid-a", AgeBand.UNDER_13, friend_ids=("kid-b",), parent_id="p-a", daily_limit_minutes=60)
KID_B = UserProfile("kid-b", AgeBand.UNDER_13, friend_ids=("kid-a",))
KID_C = UserProfile("kid-c", AgeBand.UNDER_13, parent_id="p-c", daily_limit_minutes=30, alert_delivery="daily_digest")
STRANGER = UserProfile("stranger", AgeBand.ADULT, account_created_ts=T0 - 86_400_000)
_ids = itertools.count()


def session(user, at_ms, kind, room=None, event_id=None) -> dict:
    return {"schema_version": 1, "event_id": event_id or f"s-{next(_ids)}", "ts": at_ms, "user_id": user,
            "type": kind, "room_id": room}


def chat(user, at_ms, text, to=None, room=None) -> dict:
    return {"schema_version": 1, "event_id": f"c-{next(_ids)}", "ts": at_ms, "user_id": user, "channel": "text",
            "room_id": room if to is None else None, "recipient_id": to, "text": text}


def decision(user, at_ms, action) -> dict:
    return {"schema_version": 1, "event_id": f"d-{next(_ids)}", "user_id": user, "kind": "chat", "action": action,
            "scores": {"toxicity": 0.9}, "reasons": ["model:toxicity 0.90 >= block 0.85 for under_13"],
            "age_band": "under_13", "policy_version": "p", "model_version": "m", "event_ts": at_ms,
            "decided_ts": at_ms, "latency_ms": 1}


def presence(user, room, start_min, end_min, every_s=20, logout=True) -> list[dict]:
    start, end = T0 + start_min * MIN, T0 + end_min * MIN
    events = [session(user, start, "login"), session(user, start, "join", room)]
    events += [session(user, t, "heartbeat", room) for t in range(start + every_s * S, end, every_s * S)]
    if logout:
        events += [session(user, end, "leave", room), session(user, end, "logout")]
    else:
        events.append(session(user, end, "heartbeat", room))
    return events


def day_of_events() -> list[tuple[str, dict]]:
    kid_a = presence("kid-a", "r-lobby", 0, 70)
    kid_a.append(dict(kid_a[0]))  # a repeated login (at-least-once delivery)
    records = [("sessions", e) for e in kid_a + presence("kid-b", "r-lobby", 0, 30)
               + [session("kid-b", T0 + 31 * MIN, "leave", "r-nowhere")]
               + presence("stranger", "r-lobby", 20, 40) + presence("kid-c", "r-obby", 0, 40, logout=False)]
    records += [("chat", chat("stranger", T0 + 21 * MIN, "lol im 12 too", room="r-lobby"))]
    records += [("chat", chat("stranger", T0 + m * MIN + 5 * S, "hey wanna be friends", to="kid-a")) for m in (25, 26, 27)]
    records += [("chat", chat("kid-a", T0 + 26 * MIN + 30 * S, "ok", to="stranger"))]
    records += [("decisions", decision("stranger", T0 + m * MIN + 6 * S, "block")) for m in (25, 26, 27)]
    records += [("decisions", decision("stranger", T0 + 21 * MIN + 1 * S, "allow"))]
    records.sort(key=lambda r: r[1].get("ts", r[1].get("event_ts")))
    # Swap some of kid-a's neighbouring heartbeats (20 s apart: within the 30 s lateness).
    beats = [i for i, (_, e) in enumerate(records) if e["user_id"] == "kid-a" and e.get("type") == "heartbeat"]
    for a, b in zip(beats[3::17], beats[4::17]):
        records[a], records[b] = records[b], records[a]
    return records


@pytest.fixture(scope="module")
def run(services, tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("features-job")
    environ = isolated_environ(tmp_path)
    cfg = load_config(environ=environ)
    local.create_topics(cfg)
    store = open_store(cfg)
    apply_definitions(cfg, store)
    load_profiles(cfg, store, [KID_A, KID_B, KID_C, STRANGER])
    topics = cfg.kafka.topics
    with running_job("features_job.py", environ, tmp_path / "job.log", free_port()) as job:
        producer = kafka_io.producer(cfg.kafka)

        def send(topic, value, ts, partition=None):
            producer.send(getattr(topics, topic), key=value["user_id"], value=value, timestamp_ms=ts,
                          partition=partition)

        def on_every_partition(at_ms):
            for topic, value in (("sessions", session("sentinel", at_ms, "heartbeat")),
                                 ("chat", chat("sentinel", at_ms, "gg", room="r-sentinel")),
                                 ("decisions", decision("sentinel", at_ms, "allow"))):
                for partition in range(cfg.kafka.partitions):
                    send(topic, {**value, "event_id": f"{value['event_id']}-{partition}"}, at_ms, partition)

        # The day goes to a job that has sent a record it cannot parse to dead-letter.
        warm_up_count = itertools.count()

        def send_warm_up() -> str:
            value = f"warming up {next(warm_up_count)}: not JSON".encode()
            producer.send(topics.sessions, key="warm-up", value=value, timestamp_ms=T0 - MIN)
            producer.flush()
            return base64.b64encode(value).decode()

        warm_ups = wait_until_ready(send_warm_up, cfg.kafka, topics.dead_letter, "original_b64",
                                    lambda: f"{job.diagnosis()}\n{job.log_tail()}")

        # Every partition active before the burst: an idle one would not hold the event time back, and its
        # records, read a moment after the others', would be late.
        on_every_partition(T0 - MIN)
        for topic, value in day_of_events():
            send(topic, value, value.get("ts", value.get("event_ts")))
        producer.flush()
        # Once kid-a's limit alert (at 60 min) is out, the job's event time is past 60 min: what follows is late.
        kafka_io.read(cfg.kafka, [topics.parent_alerts],
                      lambda got: any(r.json()["severity"] == "warning" and r.json()["kind"] == "screen_time"
                                      for r in got), timeout_s=120)
        late = session("kid-a", T0 + 5 * MIN, "heartbeat", "r-lobby", event_id="late-heartbeat")
        send("sessions", late, T0 + 70 * MIN)
        future = session("kid-b", T0 + 2 * 1440 * MIN, "heartbeat", event_id="clock-ahead")
        send("sessions", future, T0 + 71 * MIN)
        # Past midnight on every partition of every input, so every timer of day D fires (the digest too).
        on_every_partition(T0 + 16 * 60 * MIN)
        producer.flush()
        outputs = kafka_io.read(cfg.kafka, [topics.parent_alerts, topics.review_queue,
                                                              topics.dead_letter],
                                lambda got: sum(r.topic == topics.parent_alerts for r in got) >= 6, timeout_s=150)
        online = wait_for_online(store, ["kid-a", "kid-b", "kid-c"], expected_screen={"kid-a": 70, "kid-c": 42})
        yield {"cfg": cfg, "store": store, "online": online, "log": job.log_tail(60),
               "alerts": [r.json() for r in outputs if r.topic == topics.parent_alerts],
               "reviews": [r.json() for r in outputs if r.topic == topics.review_queue],
               "dead": [r.json() for r in outputs
                        if r.topic == topics.dead_letter and r.json()["original_b64"] not in warm_ups]}
        producer.close()


def wait_for_online(store, users, expected_screen: dict[str, float], timeout_s: float = 60) -> dict:
    features = [f"child_daily:{n}" for n in ("day", "screen_minutes", "stranger_minutes", "older_stranger_minutes",
                                             "stranger_dm_minutes")] + ["user_behaviour:violations_24h"]
    deadline = time.monotonic() + timeout_s
    while True:
        found = store.get_online_features(features=features, entity_rows=[{"user_id": u} for u in users]).to_dict()
        by_user = {u: {k: v[i] for k, v in found.items() if k != "user_id"} for i, u in enumerate(users)}
        if all(by_user[u]["screen_minutes"] == m for u, m in expected_screen.items()) or time.monotonic() > deadline:
            return by_user
        time.sleep(1)


def test_parent_alerts(run):
    alerts = {(a["child_id"], a["kind"], a["severity"]): a for a in run["alerts"]}
    assert set(alerts) == {("kid-a", "screen_time", "info"), ("kid-a", "screen_time", "warning"),
                           ("kid-a", "stranger_time", "warning"), ("kid-a", "stranger_time", "urgent"),
                           ("kid-a", "age_mismatch", "warning"), ("kid-c", "screen_time", "warning")}, run["log"]
    assert all(a["parent_id"] == {"kid-a": "p-a", "kid-c": "p-c"}[a["child_id"]] for a in run["alerts"])
    assert len({a["alert_id"] for a in run["alerts"]}) == 6  # age mismatch once, though three DMs followed
    digest = alerts[("kid-c", "screen_time", "warning")]
    assert digest["alert_id"].endswith(":digest") and digest["summary"].startswith("Daily digest for 2026-01-01: 2")


def test_account_review_and_dead_letters(run):
    (review,) = [r for r in run["reviews"] if r["user_id"] == "stranger"]
    assert review["categories"] == ["age_mismatch"] and "declared adult" in review["reasons"][0]
    reasons = {d["event_id"]: d["reason"] for d in run["dead"]}
    assert set(reasons) == {"late-heartbeat", "clock-ahead"}, reasons  # and nothing else was late
    assert reasons["late-heartbeat"].startswith("late session event")
    assert "ahead of its Kafka timestamp" in reasons["clock-ahead"]


def test_feast_online_values(run):
    online = run["online"]
    assert online["kid-a"] == {"day": "2026-01-01", "screen_minutes": 70, "stranger_minutes": 20,
                               "older_stranger_minutes": 20, "stranger_dm_minutes": 3, "violations_24h": 0}
    assert online["kid-b"]["screen_minutes"] == 30 and online["kid-b"]["stranger_minutes"] == 10, online
    assert online["kid-c"]["screen_minutes"] == 42 and online["kid-c"]["stranger_minutes"] == 0
    behaviour = run["store"].get_online_features(features=["user_behaviour:violations_24h",
                                                            "user_behaviour:decisions_24h"],
                                                 entity_rows=[{"user_id": "stranger"}]).to_dict()
    assert behaviour["violations_24h"] == [3] and behaviour["decisions_24h"] == [4]


def test_feast_offline_point_in_time(run):
    entities = pd.DataFrame({"user_id": ["kid-a", "kid-a"],
                             "event_timestamp": [D + pd.Timedelta(minutes=30), D + pd.Timedelta(hours=13)]})
    frame = run["store"].get_historical_features(entity_df=entities, features=[
        "child_daily:screen_minutes", "child_daily:stranger_minutes"]).to_df().sort_values("event_timestamp")
    halfway, end_of_day = frame.iloc[0], frame.iloc[1]
    assert end_of_day["screen_minutes"] == 70 and end_of_day["stranger_minutes"] == 20
    assert halfway["screen_minutes"] <= 30  # as of 10:30 only what had happened by then
