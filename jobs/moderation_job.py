"""The moderation job: chat, uploads and sessions in; decisions, review items, parent alerts and dead
letters out.

    Kafka chat|uploads|sessions (raw bytes + topic/partition/offset/timestamp)
      -> validate        valid chat/upload rows; side outputs: dead letters, session events
      -> key_by slot     spread over batch keys
      -> screen batch    Feast profiles + text/image tiers + policy, one model call per batch
      -> route           (topic, key, JSON) rows
      -> Kafka decisions | review-queue | parent-alerts | dead-letter

Run locally on the MiniCluster with ``python jobs/moderation_job.py``; on a cluster with
``flink run -py jobs/moderation_job.py -pyfs .``. Addresses and topics come from ``lifeguard.config``.
"""
from __future__ import annotations

import zlib

from pyflink.common import Row, Types

from jobs.flink_env import create_keyed_sink, create_raw_source, environments
from jobs.operators import (DEAD_LETTERS, KEYED_MESSAGE, OUTPUT_RECORD, VALID_RECORD, ScreenBatch,
                            ValidateRecord)
from lifeguard.config import LifeguardConfig, load_config

def build(cfg: LifeguardConfig):
    env, t_env = environments(cfg)
    topics = cfg.kafka.topics
    slots = cfg.job.batch_slots_per_instance * env.get_parallelism()

    create_raw_source(t_env, cfg, "inputs", topics.inputs())
    raw = t_env.to_data_stream(t_env.from_path("inputs"))
    # (value, topic, partition, offset, kafka_ts); the record's timestamp is kafka_ts in epoch ms

    validated = raw.process(ValidateRecord(cfg), VALID_RECORD).name("validate records").uid("validate")
    # (schema, user_id, topic, partition, offset, kafka_ts, value): chat and uploads only

    outputs = (validated
               .key_by(lambda r: zlib.crc32(r["user_id"].encode()) % slots, key_type=Types.INT())
               .process(ScreenBatch(cfg), OUTPUT_RECORD).name("screen batch (profiles, tiers, policy)")
               .uid("screen-batch")
               .union(validated.get_side_output(DEAD_LETTERS)))
    # (topic, key, JSON)

    statements = t_env.create_statement_set()
    for role in ("decisions", "review_queue", "parent_alerts", "dead_letter"):
        topic, sink = getattr(topics, role), f"sink_{role}"
        create_keyed_sink(t_env, cfg, sink, topic)
        routed = (outputs.filter(lambda r, t=topic: r["topic"] == t).name(f"route to {topic}")
                  .map(lambda r: Row(r["k"], r["v"]), KEYED_MESSAGE).name(f"key {topic}"))
        statements.add_insert(sink, t_env.from_data_stream(routed))
    statements.attach_as_datastream()
    return env


def main() -> None:
    cfg = load_config()
    env = build(cfg)
    print(f"Flink web UI: http://127.0.0.1:{cfg.job.web_ui_port}", flush=True)
    env.execute(cfg.job.name)


if __name__ == "__main__":
    main()
