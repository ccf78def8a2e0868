import json
from pathlib import Path

import pytest
from pydantic import ValidationError

from lifeguard.config import load_config
from lifeguard.schemas import (EXAMPLES, INPUT_SCHEMAS, CONTROL_SCHEMAS, OUTPUT_SCHEMAS, REVIEW_INPUT_SCHEMAS, AgeBand,
                               Action)


def test_environment_overrides_nested_keys(tmp_path):
    cfg = load_config(tmp_path / "absent.yaml", {
        "LIFEGUARD_KAFKA__BOOTSTRAP_SERVERS": "kafka-1:9092",
        "LIFEGUARD_KAFKA__TOPICS__CHAT": "chat-eu",
        "LIFEGUARD_JOB__PARALLELISM": "4"})
    assert cfg.kafka.bootstrap_servers == "kafka-1:9092"
    assert cfg.kafka.topics.chat == "chat-eu"
    assert cfg.job.parallelism == 4


def test_unknown_keys_are_rejected(tmp_path):
    file = tmp_path / "c.yaml"
    file.write_text("kafka:\n  bootstrap_server: typo:9092\n")
    with pytest.raises(ValidationError, match="bootstrap_server"):
        load_config(file, {})


SASL_ENV = {"LIFEGUARD_KAFKA__SECURITY__PROTOCOL": "SASL_SSL", "LIFEGUARD_KAFKA__SECURITY__USERNAME": "lifeguard",
            "LIFEGUARD_KAFKA__SECURITY__PASSWORD": "0123\"s3cret", "LIFEGUARD_KAFKA__SECURITY__CA_FILE": "/etc/ca.pem",
            "LIFEGUARD_REDIS__PASSWORD": "r3dis", "LIFEGUARD_REDIS__SSL": "true"}


def test_credentials_come_from_the_environment_reach_every_client_and_are_never_printed(tmp_path):
    from jobs.flink_env import _kafka_options

    cfg = load_config(tmp_path / "absent.yaml", SASL_ENV)
    jaas = ('org.apache.kafka.common.security.scram.ScramLoginModule required username="lifeguard" '
            'password="0123\\"s3cret";')  # JSON-quoted, so a quote in the password stays inside it
    assert cfg.kafka.security.client_properties() == {
        "security.protocol": "SASL_SSL", "sasl.mechanism": "SCRAM-SHA-512", "sasl.jaas.config": jaas,
        "ssl.truststore.type": "PEM", "ssl.truststore.location": "/etc/ca.pem"}
    assert cfg.kafka.security.python_client_options() == {
        "security_protocol": "SASL_SSL", "sasl_mechanism": "SCRAM-SHA-512", "sasl_plain_username": "lifeguard",
        "sasl_plain_password": '0123"s3cret', "ssl_cafile": "/etc/ca.pem"}
    # The Flink job's Kafka tables carry the same properties, SQL-quoted.
    assert f"'properties.sasl.jaas.config' = '{jaas}'" in _kafka_options(cfg, ["chat"])
    assert cfg.redis.connection_string().endswith(',password="r3dis",ssl=true')
    assert "s3cret" not in repr(cfg) and "r3dis" not in repr(cfg) and "s3cret" not in str(cfg.model_dump())


@pytest.mark.parametrize("env, says", [
    ({"LIFEGUARD_KAFKA__SECURITY__PROTOCOL": "SASL_SSL"}, "needs username and password"),
    ({"LIFEGUARD_KAFKA__SECURITY__PROTOCOL": "TLS"}, "protocol"),
    ({"LIFEGUARD_REDIS__PASSWORD": "a,b"}, "hold no comma"),
    ({"LIFEGUARD_REDIS__PASSWORD": ""}, "non-empty"),
    ({"LIFEGUARD_CONTROL__RECENT_SAMPLE": "10"}, "share check would never run"),
])
def test_incomplete_or_unusable_credentials_are_a_clear_error(tmp_path, env, says):
    with pytest.raises(ValidationError, match=says):
        load_config(tmp_path / "absent.yaml", env)


@pytest.mark.parametrize("password", ["0123", "null", "true", 'say "hi"', "pässwörd=1"])
def test_feast_reads_back_the_redis_password_as_given(tmp_path, password):
    from feast.infra.online_stores.redis import RedisOnlineStore

    cfg = load_config(tmp_path / "absent.yaml", {"LIFEGUARD_REDIS__PASSWORD": password, "LIFEGUARD_REDIS__USERNAME": "42"})
    _, params = RedisOnlineStore._parse_connection_string(cfg.redis.connection_string())
    assert params["password"] == password and params["username"] == "42"


def test_without_security_settings_clients_connect_in_plaintext(tmp_path):
    cfg = load_config(tmp_path / "absent.yaml", {})
    assert cfg.kafka.security.client_properties() == {"security.protocol": "PLAINTEXT"}
    assert cfg.redis.connection_string() == "127.0.0.1:6379,socket_timeout=0.2,socket_connect_timeout=0.2"


def test_shipped_config_loads():
    cfg = load_config(environ={})
    assert cfg.path(cfg.policy).exists()
    assert set(cfg.kafka.topics.inputs()) == {"chat", "uploads", "sessions"}


@pytest.mark.parametrize("topic", sorted(EXAMPLES))
def test_every_topic_example_validates(topic):
    schema = {**INPUT_SCHEMAS, **REVIEW_INPUT_SCHEMAS, **CONTROL_SCHEMAS, **OUTPUT_SCHEMAS}[topic]
    record = schema.model_validate_json(json.dumps(EXAMPLES[topic]))
    assert record.schema_version == 1


def test_age_bands_and_actions_are_ordered():
    assert AgeBand.younger(AgeBand.ADULT, AgeBand.TEEN_13_15) is AgeBand.TEEN_13_15
    assert AgeBand.youngest() is AgeBand.UNDER_13 and not AgeBand.ADULT.is_minor
    assert max([Action.WARN, Action.BLOCK, Action.REVIEW], key=lambda a: a.severity) is Action.BLOCK


@pytest.mark.parametrize("topic", sorted(EXAMPLES))
def test_readme_documents_every_topic_with_its_current_example(topic):
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    assert f"**`{topic}`**" in readme
    assert json.dumps(EXAMPLES[topic]) in readme
