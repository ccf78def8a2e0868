"""The child-safety feature job: sessions, chat and decisions in; parent alerts, account reviews, dead
letters and Feast features out.

    Kafka sessions|chat|decisions (raw bytes + topic/partition/offset/timestamp; per-partition
    watermarks on the Kafka timestamp, idle partitions skipped after source_idle_timeout_ms)
      -> validate            valid rows; side: dead letters (bad records, event clocks far ahead)
      -> sessions by user    presence pieces in event time; side: late events as dead letters
           -> rooms by room  per-minute co-presence -> each child's stranger time
      -> activity by user    behaviour features, age signals, DM minutes with strangers;
                             side: account reviews (age mismatch, adults contacting many minors)
      -> child day by child  screen time, stranger time, DM minutes per local day; side: parent alerts
      -> Feast pusher (one)  batched pushes of child_daily and user_behaviour rows, online + offline
      -> route (SQL)         parent-alerts | review-queue | dead-letter

Producers set each record's Kafka timestamp to the event's time (Kafka's CreateTime), so the watermark
follows event time per partition; each user's events are then ordered by their own ``ts`` within the
allowed lateness. Run with ``python jobs/features_job.py``; settings in the ``features`` section of the config.
"""
from __future__ import annotations


from pyflink.common import Types

from jobs.feature_operators import (FEATURE_EVENT, FEATURE_INPUT, OUTPUTS, ROOM_BUCKET, ChildDayFeatures,
                                    PushFeatures, RoomCoPresence, TrackSessions, UserActivityFeatures,
                                    ValidateFeatureInput, room_buckets)
from jobs.flink_env import create_keyed_sink, create_raw_source, environments
from jobs.plumbing import OUTPUT_RECORD
from lifeguard.config import LifeguardConfig, load_config

JOB_NAME = "lifeguard-features"
TO_CHILD_DAY = ("candidate", "dm_minute")


def feature_job_config(cfg: LifeguardConfig) -> LifeguardConfig:
    """The moderation job's configuration with a consumer group and job name of the feature job's own."""
    kafka = cfg.kafka.model_copy(update={"consumer_group": f"{cfg.kafka.consumer_group}-features"})
    return cfg.model_copy(update={"kafka": kafka, "job": cfg.job.model_copy(update={"name": JOB_NAME})})


def build(cfg: LifeguardConfig):
    settings = cfg.features
    cfg = feature_job_config(cfg)
    env, t_env = environments(cfg)
    # A partition with no records must not hold every timer back (a quiet topic, a quiet shard).
    t_env.get_config().set("table.exec.source.idle-timeout", f"{settings.source_idle_timeout_ms} ms")
    topics = cfg.kafka.topics

    create_raw_source(t_env, cfg, "feature_inputs", [topics.sessions, topics.chat, topics.decisions])
    raw = t_env.to_data_stream(t_env.from_path("feature_inputs"))
    # (value, topic, partition, offset, kafka_ts)

    validated = raw.process(ValidateFeatureInput(cfg, settings), FEATURE_INPUT).name("validate").uid("validate")
    # (schema, user_id, ts, topic, partition, offset, kafka_ts, value)

    presence = (validated.filter(lambda r: r["schema"] == "sessions")
                .key_by(lambda r: r["user_id"], key_type=Types.STRING())
                .process(TrackSessions(cfg, settings), FEATURE_EVENT).name("sessions by user").uid("sessions"))
    # ("presence", user, end, {room, start, end})

    stranger = (presence.flat_map(room_buckets, ROOM_BUCKET).name("room minutes")
                .key_by(lambda r: r["room"], key_type=Types.STRING())
                .process(RoomCoPresence(cfg, settings), FEATURE_EVENT).name("rooms by room").uid("rooms"))
    # ("stranger", child, minute, {minute, stranger, older})

    activity = (validated.filter(lambda r: r["schema"] != "sessions")
                .key_by(lambda r: r["user_id"], key_type=Types.STRING())
                .process(UserActivityFeatures(cfg, settings), FEATURE_EVENT).name("activity by user").uid("activity"))
    # ("candidate" | "dm_minute", child, ...) and ("push:user_behaviour", user, ts, row)

    child_day = (presence.union(stranger, activity.filter(lambda e: e["kind"] in TO_CHILD_DAY))
                 .key_by(lambda e: e["key"], key_type=Types.STRING())
                 .process(ChildDayFeatures(cfg, settings), FEATURE_EVENT).name("child day by child").uid("child-day"))
    # ("push:child_daily", child, ts, row)

    pushed = (activity.filter(lambda e: e["kind"].startswith("push:")).union(child_day)
              .key_by(lambda e: 0, key_type=Types.INT())
              .process(PushFeatures(cfg, settings), OUTPUT_RECORD).name("push to Feast").uid("feast-push")
              .set_parallelism(1))
    # nothing: the pusher writes to Feast itself (one writer for the offline files)

    outputs = pushed.union(*(stream.get_side_output(OUTPUTS) for stream in (validated, presence, activity, child_day)))
    # (topic, key, JSON)
    t_env.create_temporary_view("outputs", t_env.from_data_stream(outputs))
    statements = t_env.create_statement_set()
    for role in ("parent_alerts", "review_queue", "dead_letter"):
        topic, sink = getattr(topics, role), f"sink_{role}"
        create_keyed_sink(t_env, cfg, sink, topic)
        statements.add_insert_sql(f"INSERT INTO `{sink}` SELECT `k`, `v` FROM `outputs` WHERE `topic` = '{topic}'")
    statements.attach_as_datastream()
    return env, cfg


def main() -> None:
    env, cfg = build(load_config())
    print(f"Flink web UI: http://127.0.0.1:{cfg.job.web_ui_port}", flush=True)
    env.execute(cfg.job.name)


if __name__ == "__main__":
    main()
