"""Shared fixtures. Tests use the real services: CI (and `make test`) start the broker, Redis and
PostgreSQL, and the session fixture below starts them too when they are not running, so no test ever skips."""
from __future__ import annotations

import uuid

import pytest

from tools import local
from lifeguard.config import LifeguardConfig, isolated_run_environ, load_config


@pytest.fixture(scope="session")
def base_config() -> LifeguardConfig:
    return load_config(environ={})


@pytest.fixture(scope="session")
def services(base_config) -> LifeguardConfig:
    local.broker_start(base_config)
    local.redis_ensure(base_config)
    local.postgres_ensure(base_config)
    return base_config


def isolated_environ(tmp_path, **extra: str) -> dict[str, str]:
    """Config overrides giving a test its own topics, Feast project and runtime files."""
    run = uuid.uuid4().hex[:8]
    env = isolated_run_environ("", run)
    env.update({"LIFEGUARD_FEAST__PROJECT": f"test_{run}", "LIFEGUARD_FEAST__DATA_DIR": str(tmp_path / "feast"),
                "LIFEGUARD_MODELS__IMAGE_BANKS": str(tmp_path / "image_banks.jsonl")})
    env.update(extra)
    return env


@pytest.fixture
def review_environ(services, tmp_path):
    """Config overrides with a review database of the test's own, created and migrated, dropped afterwards."""
    from review.schema import prepare_database

    environ = isolated_environ(tmp_path, LIFEGUARD_REVIEW__DATABASE=f"lifeguard_test_{uuid.uuid4().hex[:8]}")
    cfg = load_config(environ=environ)
    prepare_database(cfg.review)
    yield environ
    drop_review_database(cfg)


@pytest.fixture
def review_consumer(review_environ):
    """The review store's consumer on the test's database and topics, closed after the test."""
    from review.consumer import ReviewConsumer

    consumer = ReviewConsumer(load_config(environ=review_environ))
    yield consumer
    consumer.close()


def drop_review_database(cfg: LifeguardConfig) -> None:
    from review.schema import drop_database

    drop_database(cfg.review)
