import json
from pathlib import Path

import pytest
from pydantic import ValidationError

from lifeguard.config import load_config
from lifeguard.schemas import EXAMPLES, INPUT_SCHEMAS, CONTROL_SCHEMAS, OUTPUT_SCHEMAS, AgeBand, Action


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


def test_shipped_config_loads():
    cfg = load_config(environ={})
    assert cfg.path(cfg.policy).exists()
    assert set(cfg.kafka.topics.inputs()) == {"chat", "uploads", "sessions"}


@pytest.mark.parametrize("topic", sorted(EXAMPLES))
def test_every_topic_example_validates(topic):
    schema = {**INPUT_SCHEMAS, **CONTROL_SCHEMAS, **OUTPUT_SCHEMAS}[topic]
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
