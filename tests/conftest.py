"""Shared fixtures. Tests use the real services: CI (and `make test`) start the broker and Redis, and
the session fixture below starts them too when they are not running, so no test ever skips."""
from __future__ import annotations

import uuid

import pytest

from lifeguard.config import LifeguardConfig, load_config
from lifeguard import localrun


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


@pytest.fixture(scope="session")
def base_config() -> LifeguardConfig:
    return load_config(environ={})


@pytest.fixture(scope="session")
def services(base_config) -> LifeguardConfig:
    localrun.broker_start(base_config)
    localrun.redis_ensure(base_config)
    return base_config


def isolated_environ(tmp_path, **extra: str) -> dict[str, str]:
    """Config overrides giving a test its own topics, Feast project and runtime files."""
    run = uuid.uuid4().hex[:8]
    env = {f"LIFEGUARD_KAFKA__TOPICS__{name.upper()}": f"{name.replace('_', '-')}-{run}"
           for name in LifeguardConfig().kafka.topics.model_dump()}
    env.update({"LIFEGUARD_FEAST__PROJECT": f"test_{run}", "LIFEGUARD_FEAST__DATA_DIR": str(tmp_path / "feast"),
                "LIFEGUARD_KAFKA__CONSUMER_GROUP": f"test-{run}",
                "LIFEGUARD_MODELS__IMAGE_BANKS": str(tmp_path / "image_banks.jsonl")})
    env.update(extra)
    return env
