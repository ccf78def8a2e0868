"""The moderation job: chat, uploads and sessions in; decisions, review items, parent alerts and dead
letters out.

    Kafka chat|uploads|sessions (raw bytes + topic/partition/offset/timestamp)
      -> validate        valid chat/upload rows; side output: dead letters (sessions are counted)
      -> key_by slot     spread over batch keys
      -> screen batch    Feast profiles + text/image tiers + policy, model calls per batch
           ^ broadcast   policy and hash-bank updates, validated (bad ones: dead letters), kept in
           |             broadcast state: Kafka policy-updates|hash-bank-updates
           |             + a conversation turn per direct message with a minor (grooming-bank match
           |               from the second stage's embedding) and each room's speakers
      -> split (SQL)     room speakers -> key_by room -> room meetings (child and much older user) --+
                         conversation turns ---------------------------------------------------+-+
                           -> key_by pair -> conversation risk (pair window and meeting, timers)
                           -> conversation review items, grooming-risk parent alerts
      -> route (SQL)     (topic, key, JSON) rows of both, split by topic
      -> Kafka decisions | review-queue | parent-alerts | dead-letter

Run locally on the MiniCluster with ``python jobs/moderation_job.py``; on a cluster with the ``flink run``
line of ``tools.local.submit_command``, which ``lifeguard cluster start`` prints. Addresses and topics come
from ``lifeguard.config``.
"""
from __future__ import annotations

import zlib

from pyflink.common import Row, Types

from jobs.flink_env import create_keyed_sink, create_raw_source, environments
from jobs.operators import (CONTROL_RECORD, CONTROL_STATE, CONVERSATION_TURNS, ROOM_SPEAKERS, VALID_RECORD,
                            ConversationRisk, RoomMeetings, ScreenBatch, ValidateControl, ValidateRecord)
from jobs.plumbing import DEAD_LETTERS, OUTPUT_RECORD
from lifeguard.config import LifeguardConfig, load_config
from udfs.grooming.settings import GroomingSettings


def internal_stream(t_env, name: str):
    """The screening outputs with the internal topic ``name``, as OUTPUT_RECORD rows."""
    table = t_env.sql_query(f"SELECT `topic`, `k`, `v` FROM `outputs` WHERE `topic` = '{name}'")
    # Named fields: the key selector after this map reads the row as the map made it, not as typed.
    return t_env.to_data_stream(table).map(lambda r: Row(topic=r[0], k=r[1], v=r[2]), OUTPUT_RECORD)


def build(cfg: LifeguardConfig):
    grooming = GroomingSettings.from_config(cfg.grooming)
    env, t_env = environments(cfg)
    topics = cfg.kafka.topics
    slots = cfg.job.batch_slots_per_instance * env.get_parallelism()

    create_raw_source(t_env, cfg, "inputs", topics.inputs())
    raw = t_env.to_data_stream(t_env.from_path("inputs"))
    # (value, topic, partition, offset, kafka_ts); the record's timestamp is kafka_ts in epoch ms

    validated = raw.process(ValidateRecord(cfg), VALID_RECORD).name("validate records").uid("validate")
    # (schema, user_id, topic, partition, offset, kafka_ts, value): chat and uploads only

    create_raw_source(t_env, cfg, "controls", [topics.policy_updates, topics.hash_bank_updates], replay_all=True)
    controls = t_env.to_data_stream(t_env.from_path("controls"))
    # (value, topic, partition, offset, kafka_ts): from the beginning on a fresh start, so every update
    # in the topics is in force again; from the checkpoint's offsets on a restore

    updates = (controls.process(ValidateControl(cfg), CONTROL_RECORD).name("validate control updates")
               .uid("validate-control").set_parallelism(1))
    # (schema, topic, partition, offset, kafka_ts, value): well-formed updates, in one sequence, so every
    # screening instance applies them in the same order. Until the first policy update, the policy file
    # from config is in force; hash-bank updates change the banks file's banks.

    outputs = (validated
               .key_by(lambda r: zlib.crc32(r["user_id"].encode()) % slots, key_type=Types.INT())
               .connect(updates.broadcast(CONTROL_STATE))
               .process(ScreenBatch(cfg), OUTPUT_RECORD).name("screen batch (profiles, tiers, policy)")
               .uid("screen-batch")
               .union(validated.get_side_output(DEAD_LETTERS), updates.get_side_output(DEAD_LETTERS)))
    # (topic, key, JSON); conversation turns have the topic CONVERSATION_TURNS and the pair as key, room
    # speakers ROOM_SPEAKERS and the room

    # Splitting and routing run in Flink's SQL engine, so no Python operator touches a record after
    # screening but the conversation turns and room speakers.
    t_env.create_temporary_view("outputs", t_env.from_data_stream(outputs))
    meetings = (internal_stream(t_env, ROOM_SPEAKERS)
                .key_by(lambda r: r["k"], key_type=Types.STRING())
                .process(RoomMeetings(grooming), OUTPUT_RECORD).name("room meetings (grooming)").uid("room-meetings"))
    # (ROOM_MEETINGS, pair, RoomMeeting JSON)
    conversations = (internal_stream(t_env, CONVERSATION_TURNS).union(meetings)
                     .key_by(lambda r: r["k"], key_type=Types.STRING())
                     .process(ConversationRisk(cfg, grooming), OUTPUT_RECORD).name("conversation risk (grooming)")
                     .uid("conversation-risk"))
    # (topic, key, JSON): conversation review items and grooming-risk parent alerts
    t_env.create_temporary_view("conversation_outputs", t_env.from_data_stream(conversations))

    statements = t_env.create_statement_set()
    for role in ("decisions", "review_queue", "parent_alerts", "dead_letter"):
        topic, sink = getattr(topics, role), f"sink_{role}"
        create_keyed_sink(t_env, cfg, sink, topic)
        statements.add_insert_sql(f"INSERT INTO `{sink}` SELECT `k`, `v` FROM `outputs` WHERE `topic` = '{topic}' "
                                  f"UNION ALL SELECT `k`, `v` FROM `conversation_outputs` WHERE `topic` = '{topic}'")
    statements.attach_as_datastream()
    return env


def main() -> None:
    cfg = load_config()
    env = build(cfg)
    print(f"Flink web UI: http://127.0.0.1:{cfg.job.web_ui_port}", flush=True)
    env.execute(cfg.job.name)


if __name__ == "__main__":
    main()
