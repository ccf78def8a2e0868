"""The benchmark's baseline: Kafka chat -> parse JSON -> Kafka decisions, with no screening at all.

Same connector, serialisation and Python execution mode as the moderation job, so the ratio of their
throughputs measures what screening costs on whatever machine runs the benchmark.
"""
from __future__ import annotations

import json

from pyflink.common import Row

from jobs.flink_env import create_keyed_sink, create_raw_source, environments
from jobs.plumbing import KEYED_MESSAGE
from lifeguard.config import load_config


def echo(row) -> Row:
    event = json.loads(row["value"])
    return Row(event["user_id"], json.dumps({"event_id": event["event_id"], "action": "allow"}))


def main() -> None:
    cfg = load_config()
    env, t_env = environments(cfg)
    create_raw_source(t_env, cfg, "chat", [cfg.kafka.topics.chat])
    create_keyed_sink(t_env, cfg, "decisions", cfg.kafka.topics.decisions)
    echoed = t_env.to_data_stream(t_env.from_path("chat")).map(echo, KEYED_MESSAGE).name("parse and echo")
    statements = t_env.create_statement_set()
    statements.add_insert("decisions", t_env.from_data_stream(echoed))
    statements.attach_as_datastream()
    env.execute(f"{cfg.job.name}-passthrough")


if __name__ == "__main__":
    main()
