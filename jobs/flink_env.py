"""Shared Flink plumbing for Lifeguard's jobs: the environment, Kafka source and sink tables.

Kafka is reached through the Table API connector because it exposes what the DataStream wrapper does
not: each record's original bytes (``raw`` format) with its topic, partition, offset and timestamp for
dead letters and latency, and keyed writes (``key.fields``) on the sink side.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

import pyflink
import yaml
from pyflink.common import Configuration
from pyflink.datastream import StreamExecutionEnvironment
from pyflink.table import StreamTableEnvironment

from lifeguard.config import LifeguardConfig
from jobs.jars import verified_jars


def _flatten(tree: dict, prefix: str = "") -> dict[str, str]:
    flat = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(_flatten(value, name + "."))
        else:
            flat[name] = str(value).lower() if isinstance(value, bool) else str(value)
    return flat


def flink_configuration(cfg: LifeguardConfig) -> Configuration:
    """flink-conf/config.yaml, then the Lifeguard settings that concern Flink."""
    conf = Configuration()
    settings = _flatten(yaml.safe_load((cfg.path(cfg.flink_conf_dir) / "config.yaml").read_text()))
    settings.update({
        "python.execution-mode": cfg.job.python_execution_mode,
        "execution.checkpointing.interval": f"{cfg.job.checkpoint_interval_ms} ms",
        "rest.port": str(cfg.job.web_ui_port),
        "rest.bind-port": str(cfg.job.web_ui_port),
        "pipeline.name": cfg.job.name,
        # The Python workers must use this interpreter (the project's virtualenv).
        "python.executable": sys.executable,
        "python.client.executable": sys.executable,
    })
    if cfg.job.parallelism is not None:
        settings["parallelism.default"] = str(cfg.job.parallelism)
    for key, value in settings.items():
        conf.set_string(key, value)
    return conf


def interpreter_first_on_path(environ=os.environ) -> None:
    """Thread mode embeds Python through pemja, which looks up `python` on PATH (not
    `python.executable`): without this, a job started as `.venv/bin/python jobs/…` from a shell whose
    virtualenv is not activated gets the system interpreter and fails with "No module named 'pemja'"."""
    bin_dir = str(Path(sys.executable).parent)
    if environ.get("PATH", "").split(os.pathsep)[0] != bin_dir:
        environ["PATH"] = bin_dir + os.pathsep + environ.get("PATH", "")


def reporter_on_gateway_classpath(environ=os.environ) -> None:
    """A local run's MiniCluster lives in PyFlink's gateway JVM, whose plugin manager is not given the wheel's
    plugins/ folder (Flink logs "The reporter factory ... could not be found ... Available factories: []"), so
    the Prometheus reporter of flink-conf/config.yaml must be on the gateway's classpath, which takes
    HADOOP_CLASSPATH. A standalone cluster loads it from plugins/ itself."""
    jars = [str(jar) for jar in (Path(pyflink.__file__).parent / "plugins" / "metrics-prometheus").glob("*.jar")]
    present = environ.get("HADOOP_CLASSPATH", "").split(os.pathsep)
    environ["HADOOP_CLASSPATH"] = os.pathsep.join([*filter(None, present), *(j for j in jars if j not in present)])


def environments(cfg: LifeguardConfig) -> tuple[StreamExecutionEnvironment, StreamTableEnvironment]:
    interpreter_first_on_path()
    reporter_on_gateway_classpath()
    env = StreamExecutionEnvironment.get_execution_environment(flink_configuration(cfg))
    # Appended, not set: under `flink run` the client already lists its own jars (flink-python).
    env.add_jars(*(p.as_uri() for p in verified_jars(cfg.path(cfg.runtime_dir) / "jars")))
    return env, StreamTableEnvironment.create(env)


def _sql_string(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def _kafka_options(cfg: LifeguardConfig, topics: list[str]) -> str:
    """The connector, topics, brokers and security settings (Flink masks the JAAS line where it prints options)."""
    properties = {"bootstrap.servers": cfg.kafka.bootstrap_servers, **cfg.kafka.security.client_properties()}
    return ", ".join(["'connector' = 'kafka'", f"'topic' = {_sql_string(';'.join(topics))}",
                      *(f"'properties.{key}' = {_sql_string(value)}" for key, value in properties.items())])


def create_raw_source(t_env: StreamTableEnvironment, cfg: LifeguardConfig, name: str, topics: list[str],
                      replay_all: bool = False) -> None:
    """A table of (value BYTES, topic, partition, offset) over the given topics.

    The Kafka timestamp is the table's rowtime, so it becomes each DataStream record's timestamp. A job
    restored from a checkpoint resumes at the checkpoint's offsets. On a fresh start it resumes at the
    consumer group's offsets (``kafka.start_from`` where it has none), or with ``replay_all`` reads the
    topics from the beginning: for control topics, whose every record is state to rebuild.
    """
    if replay_all:
        startup = "'scan.startup.mode' = 'earliest-offset'"
    else:
        startup = (f"'scan.startup.mode' = 'group-offsets', "
                   f"'properties.auto.offset.reset' = '{cfg.kafka.start_from}'")
    t_env.execute_sql(f"""
        CREATE TEMPORARY TABLE `{name}` (
            `value` BYTES,
            `topic` STRING METADATA VIRTUAL,
            `partition` INT METADATA VIRTUAL,
            `offset` BIGINT METADATA VIRTUAL,
            `kafka_ts` TIMESTAMP_LTZ(3) METADATA FROM 'timestamp' VIRTUAL,
            WATERMARK FOR `kafka_ts` AS `kafka_ts`
        ) WITH (
            {_kafka_options(cfg, topics)},
            'properties.group.id' = '{cfg.kafka.consumer_group}',
            'properties.fetch.max.wait.ms' = '{cfg.kafka.fetch_max_wait_ms}',
            {startup},
            'format' = 'raw'
        )""")


def create_keyed_sink(t_env: StreamTableEnvironment, cfg: LifeguardConfig, name: str, topic: str) -> None:
    """A table of (k STRING, v STRING) written to ``topic`` with k as the record key."""
    t_env.execute_sql(f"""
        CREATE TEMPORARY TABLE `{name}` (`k` STRING, `v` STRING) WITH (
            {_kafka_options(cfg, [topic])},
            'key.format' = 'raw', 'key.fields' = 'k',
            'value.format' = 'raw', 'value.fields-include' = 'EXCEPT_KEY',
            'sink.delivery-guarantee' = 'at-least-once'
        )""")

