"""Lifeguard's configuration: one typed, frozen object loaded from YAML plus environment overrides.

Load order: the defaults below, then ``flink-conf/lifeguard.yaml`` (or the file named by
``LIFEGUARD_CONFIG``), then environment variables ``LIFEGUARD_<SECTION>__<KEY>``, for example
``LIFEGUARD_KAFKA__BOOTSTRAP_SERVERS=kafka-1:9092`` or ``LIFEGUARD_JOB__PARALLELISM=4``. Unknown keys
are rejected, so a typo fails loudly instead of silently keeping a default. Secrets (the Kafka, Redis and
review database passwords) belong in the environment, and are never printed (``SecretStr``).
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Literal, Mapping

import yaml
from pydantic import BaseModel, ConfigDict, Field, SecretStr, model_validator

from lifeguard import PROJECT_ROOT

ENV_PREFIX = "LIFEGUARD_"
DEFAULT_CONFIG_FILE = PROJECT_ROOT / "flink-conf" / "lifeguard.yaml"
CREDENTIAL_KEYS = ("username", "password", "console_secret")


class _Section(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Topics(_Section):
    uploads: str = "uploads"
    chat: str = "chat"
    sessions: str = "sessions"
    appeals: str = "appeals"
    engagement: str = "engagement"
    hash_bank_updates: str = "hash-bank-updates"
    policy_updates: str = "policy-updates"
    moderator_decisions: str = "moderator-decisions"
    decisions: str = "decisions"
    review_queue: str = "review-queue"
    parent_alerts: str = "parent-alerts"
    labels: str = "labels"
    dead_letter: str = "dead-letter"

    def inputs(self) -> list[str]:
        return [self.chat, self.uploads, self.sessions]

    def all(self) -> list[str]:
        return list(self.model_dump().values())


class KafkaSecurity(_Section):
    """How the job and the tools reach a secured cluster: TLS, SASL or both. Give the secrets through the
    environment (``LIFEGUARD_KAFKA__SECURITY__PASSWORD``), not the YAML file; they are held as secrets,
    shown as ``**********`` wherever the config is printed, and Flink and the Kafka clients mask the JAAS
    line they end up in."""

    protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] = "SCRAM-SHA-512"
    username: str | None = None
    password: SecretStr | None = None
    # A PEM file of the certificate authorities to trust; None: the system's.
    ca_file: Path | None = None

    @model_validator(mode="after")
    def _credentials_for_sasl(self):
        if self.protocol.startswith("SASL") and not (self.username and self.password):
            raise ValueError(f"protocol {self.protocol} needs username and password "
                             "(LIFEGUARD_KAFKA__SECURITY__USERNAME, LIFEGUARD_KAFKA__SECURITY__PASSWORD)")
        return self

    def client_properties(self) -> dict[str, str]:
        """The Java Kafka client's properties (the Flink connector's ``properties.*``)."""
        properties = {"security.protocol": self.protocol}
        if self.protocol.startswith("SASL"):
            module = ("org.apache.kafka.common.security.plain.PlainLoginModule" if self.sasl_mechanism == "PLAIN"
                      else "org.apache.kafka.common.security.scram.ScramLoginModule")
            properties["sasl.mechanism"] = self.sasl_mechanism
            properties["sasl.jaas.config"] = (f'{module} required username={json.dumps(self.username, ensure_ascii=False)} '
                                              f'password={json.dumps(self.password.get_secret_value(), ensure_ascii=False)};')
        if self.protocol.endswith("SSL") and self.ca_file is not None:
            properties |= {"ssl.truststore.type": "PEM", "ssl.truststore.location": str(self.ca_file)}
        return properties

    def python_client_options(self) -> dict[str, Any]:
        """The same for kafka-python (the tools' producers and consumers)."""
        options: dict[str, Any] = {"security_protocol": self.protocol}
        if self.protocol.startswith("SASL"):
            options |= {"sasl_mechanism": self.sasl_mechanism, "sasl_plain_username": self.username,
                        "sasl_plain_password": self.password.get_secret_value()}
        if self.protocol.endswith("SSL") and self.ca_file is not None:
            options["ssl_cafile"] = str(self.ca_file)
        return options


class KafkaConfig(_Section):
    bootstrap_servers: str = "127.0.0.1:9092"
    partitions: int = Field(2, ge=1)
    consumer_group: str = "lifeguard-moderation"
    # Where a job with no committed offsets starts reading its input topics.
    start_from: Literal["earliest", "latest"] = "earliest"
    # How long the broker may hold a fetch open to fill it. Kafka's default (500 ms) adds up to half a
    # second of latency whenever traffic is light; a moderation decision should not wait for that.
    fetch_max_wait_ms: int = Field(20, ge=0)
    topics: Topics = Topics()
    security: KafkaSecurity = KafkaSecurity()


class RedisConfig(_Section):
    host: str = "127.0.0.1"
    port: int = 6379
    # Bounds how long one feature look-up may wait on a slow or dead Redis.
    timeout_ms: int = Field(200, ge=1)
    # Redis ACL user and password (give the password through LIFEGUARD_REDIS__PASSWORD) and TLS.
    username: str | None = None
    password: SecretStr | None = None
    ssl: bool = False

    @model_validator(mode="after")
    def _fits_a_connection_string(self):
        # Feast takes Redis settings as one comma-separated string of key=value pairs.
        for name, value in (("username", self.username),
                            ("password", None if self.password is None else self.password.get_secret_value())):
            if value is not None and ("," in value or not value):
                raise ValueError(f"redis.{name} must be non-empty and hold no comma (Feast's connection string splits on it)")
        return self

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def connection_string(self) -> str:
        """Feast's Redis connection string: the address, the timeouts and, when set, credentials and TLS.
        Feast JSON-decodes each value (a password "123" would become a number, "null" no password at all),
        so credentials go JSON-quoted, which decodes to exactly the string given."""
        timeout_s = self.timeout_ms / 1000
        parts = [self.address, f"socket_timeout={timeout_s}", f"socket_connect_timeout={timeout_s}"]
        if self.username:
            parts.append(f"username={json.dumps(self.username, ensure_ascii=False)}")
        if self.password:
            parts.append(f"password={json.dumps(self.password.get_secret_value(), ensure_ascii=False)}")
        if self.ssl:
            parts.append("ssl=true")
        return ",".join(parts)


class FeastConfig(_Section):
    project: str = "lifeguard"
    repo_path: Path = Path("feature_repo")
    # Registry and offline parquet files are built by `lifeguard feast apply`, not committed.
    data_dir: Path = Path("feature_repo/data")
    # Profiles change rarely: a short cache spares Redis one round trip per record.
    cache_ttl_s: float = Field(60.0, ge=0)
    cache_max_users: int = Field(100_000, ge=0)
    # After a failed look-up, skip Feast for this long so an outage costs one timeout, not one per batch.
    retry_after_s: float = Field(5.0, ge=0)


class JobConfig(_Section):
    name: str = "lifeguard-moderation"
    # None keeps Flink's own `parallelism.default` from flink-conf/config.yaml.
    parallelism: int | None = Field(None, ge=1)
    python_execution_mode: Literal["thread", "process"] = "thread"
    batch_size: int = Field(64, ge=1)
    batch_timeout_ms: int = Field(10, ge=1)
    # Records are spread over this many batch keys per parallel instance.
    batch_slots_per_instance: int = Field(2, ge=1)
    checkpoint_interval_ms: int = Field(10_000, ge=100)
    web_ui_port: int = 8081


class LimitsConfig(_Section):
    # Below Kafka's default 1 MiB message size, so an oversize record can still arrive and be refused.
    max_record_bytes: int = Field(512_000, ge=1)
    max_text_chars: int = Field(4_000, ge=1)
    # Decoded image bytes; inline base64 is a third larger, and must fit in max_record_bytes.
    max_image_bytes: int = Field(375_000, ge=1)
    # Checked from the image header before decoding, against decompression bombs.
    max_image_pixels: int = Field(16_000_000, ge=1)
    # Local folders an upload's URI (a path or file://) may name; none by default, so an upload cannot make
    # the job read its own files. Object stores (s3://, gs://, ...) are not affected.
    upload_roots: list[Path] = []
    # How long an object store may take to return one upload's bytes before the upload goes to dead-letter.
    upload_read_timeout_s: float = Field(10.0, gt=0)


class ControlConfig(_Section):
    """What an update on the control topics may change (``udfs.control``): anyone who can write to them
    steers every decision, so an update that would quietly stop or flood moderation is refused."""
    # No model threshold below this: a block at 0 acts on every message.
    threshold_floor: float = Field(0.01, ge=0, le=1)
    # A new policy is tried on the model scores of this many recently screened messages (no text is
    # kept) and refused if it changes the share acted on, or the share blocked, by more than
    # max_acted_share_change; tried once at least min_sample messages are held.
    recent_sample: int = Field(2_000, ge=0)
    min_sample: int = Field(200, ge=1)
    max_acted_share_change: float = Field(0.05, ge=0, le=1)
    # Hashes one bank may hold (banks file and topic together); an add past it is refused.
    max_bank_hashes: int = Field(1_000_000, ge=1)

    @model_validator(mode="after")
    def _sample_can_fill(self):
        if self.recent_sample < self.min_sample:
            raise ValueError(f"recent_sample ({self.recent_sample}) below min_sample ({self.min_sample}): the share "
                             "check would never run")
        return self


class ModelConfig(_Section):
    text_model: Path = Path("models/build/text_linear.onnx")
    # The cascade's second stage (MiniLM + heads, one ONNX graph) and the MiniLM tokenizer, both built by
    # `make models`; the second stage scores what the first leaves uncertain or what a child may read.
    text_second_stage: Path = Path("models/build/text_minilm.onnx")
    text_tokenizer: Path = Path("models/build/minilm_tokenizer.json")
    # Use the CUDA execution provider when onnxruntime offers it.
    prefer_gpu: bool = True
    # Image hash banks loaded at start: JSON lines {"bank", "signal_type", "hash"}; absent: empty banks.
    image_banks: Path = Path(".lifeguard/image_banks.jsonl")
    # Texts whose scores the screening keeps (udfs.score_cache), per screening instance: repeated chat
    # ("gg", "lol") is scored once. Keyed by a digest (no text kept): about 0.6 KB a text; 0 turns it off.
    score_cache_size: int = Field(20_000, ge=0)


class FeaturesConfig(_Section):
    """The child-safety feature job's settings: session timeouts, lateness, alert thresholds, Feast batching."""
    # A session (or room presence) with no logout ends this long after its last event.
    heartbeat_timeout_ms: int = Field(120_000, ge=0)
    # Session events are applied in event-time order once the watermark is this far past them; an event
    # older than that is too late: counted and dead-lettered.
    allowed_lateness_ms: int = Field(30_000, ge=0)
    # A Kafka partition without records for this long stops holding the job's event time back.
    source_idle_timeout_ms: int = Field(5_000, ge=0)
    # An event whose clock is this far ahead of its Kafka timestamp is refused (a device clock gone wrong).
    max_clock_ahead_ms: int = Field(300_000, ge=0)
    # Screen time: a warning at this share of the parental daily limit, an alert at the limit.
    screen_warning_share: float = Field(0.8, ge=0)
    # Stranger time: an alert when a child's minutes of the day with an older stranger, or of direct
    # conversation with non-friends, reach these.
    older_stranger_alert_minutes: float = Field(15.0, ge=0)
    stranger_dm_alert_minutes: float = Field(3.0, ge=0)
    # Age signals: an adult writing to this many distinct non-friend minors within 24 h is reviewed.
    many_minors_24h: int = Field(5, ge=0)
    # One alert per child and kind within this window; the rest are counted as suppressed.
    alert_dedup_ms: int = Field(6 * 3_600_000, ge=0)
    # Per-user state bounds: contacts remembered (for "new contact"), the last being dropped first.
    max_contacts: int = Field(500, ge=0)
    # Feast pushes are batched: at this many rows, or this long after the first row waiting.
    push_batch_rows: int = Field(500, ge=0)
    push_interval_ms: int = Field(5_000, ge=0)


class GroomingConfig(_Section):
    """Conversation-level grooming detection (udfs/grooming/): its bank, windows and thresholds. The
    score's weights are not settings: they are chosen by hand and documented in udfs/grooming/."""
    # The project's synthetic seed bank, then any platform banks of confirmed cases (same JSON lines).
    bank_files: list[Path] = [Path("models/grooming/bank.jsonl")]
    # The window of one pair's recent messages.
    window_messages: int = Field(40, ge=1)
    window_ms: int = Field(14 * 86_400_000, ge=1)
    # A pair with no message for this long (processing time) is forgotten.
    idle_ms: int = Field(30 * 86_400_000, ge=1)
    # At most one review item and one parent alert per pair in this long (event time).
    cooldown_ms: int = Field(7 * 86_400_000, ge=0)
    review_threshold: float = Field(0.5, ge=0, le=1)
    alert_threshold: float = Field(0.6, ge=0, le=1)
    urgent_threshold: float = Field(0.8, ge=0, le=1)
    # Late night in the child's time zone (UTC when unknown): from the first hour up to the second.
    late_night_hours: tuple[int, int] = (22, 6)
    # Two users "meet" in a room when both write there within this long of each other, one is a minor and
    # the other at least room_meeting_min_gap age bands older; a first direct message between them within
    # room_move_ms after that is a move from the room to direct messages.
    room_meeting_window_ms: int = Field(30 * 60_000, ge=1)
    room_meeting_min_gap: int = Field(2, ge=1, le=3)
    room_move_ms: int = Field(86_400_000, ge=0)
    # The most recent speakers a room keeps (its state stays bounded in a crowded room).
    room_speakers_max: int = Field(200, ge=2)


class ReviewConfig(_Section):
    """The review store, a PostgreSQL database (`review`): the queue reviewers claim from, their verdicts
    and the audit log. `lifeguard review migrate` creates the database and its tables; on a local address
    with no server answering, `lifeguard review database` starts an embedded one."""

    host: str = "127.0.0.1"
    port: int = 5432
    database: str = "lifeguard"
    user: str = "postgres"
    # Give the password through LIFEGUARD_REVIEW__PASSWORD.
    password: SecretStr | None = None
    sslmode: Literal["disable", "allow", "prefer", "require", "verify-ca", "verify-full"] = "prefer"
    connect_timeout_s: int = Field(5, ge=1)
    # A claimed item goes back to the queue this long after its claim unless decided: a reviewer who walks
    # away blocks nothing.
    lease_s: int = Field(600, ge=10)
    # The review store's consumer (review-queue, appeals, engagement, decisions, parent-alerts) commits
    # its offsets under this group.
    consumer_group: str = "lifeguard-review"
    # Where a reviewer's verdict on an upload sends its hashes (through hash-bank-updates): a confirmed
    # violation to a block bank, an overturned one to an allow bank. Their kinds are policy (images.banks).
    confirmed_bank: str = "reviewer-confirmed"
    cleared_bank: str = "reviewer-cleared"
    # An appeal's priority is at least this: above every ordinary item (at most 3: risk 1, a room, a minor).
    appeal_priority: float = Field(5.0, ge=0)
    # Live priority: an item's priority is its queued priority times log10(10 + views per minute over the last
    # `velocity_window_s`), so an unviewed item keeps it (x1) and a viral one rises (x2 at 90 views/min, x3
    # at 990); a change under `material_change` of the current priority is not written.
    velocity_window_s: int = Field(300, ge=60)
    material_change: float = Field(0.1, ge=0)
    # The reviewer console (`lifeguard review serve`); its session key through LIFEGUARD_REVIEW__CONSOLE_SECRET
    # (unset: a random key per start, so sessions end with the process).
    console_host: str = "127.0.0.1"
    console_port: int = 8090
    console_secret: SecretStr | None = None

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def connection_options(self, database: str | None = None) -> dict[str, Any]:
        """libpq connection parameters (psycopg.connect's keywords) for `database` (default: the configured one)."""
        options = {"host": self.host, "port": self.port, "dbname": database or self.database, "user": self.user,
                   "sslmode": self.sslmode, "connect_timeout": self.connect_timeout_s,
                   "application_name": "lifeguard-review"}
        if self.password is not None:
            options["password"] = self.password.get_secret_value()
        return options


class LifeguardConfig(_Section):
    kafka: KafkaConfig = KafkaConfig()
    redis: RedisConfig = RedisConfig()
    feast: FeastConfig = FeastConfig()
    job: JobConfig = JobConfig()
    limits: LimitsConfig = LimitsConfig()
    control: ControlConfig = ControlConfig()
    models: ModelConfig = ModelConfig()
    features: FeaturesConfig = FeaturesConfig()
    grooming: GroomingConfig = GroomingConfig()
    review: ReviewConfig = ReviewConfig()
    policy: Path = Path("flink-conf/policy.yaml")
    flink_conf_dir: Path = Path("flink-conf")
    # Local runtime files: broker pid/log, cached connector jars, a Redis started for a local run.
    runtime_dir: Path = Path(".lifeguard")

    def path(self, relative: Path) -> Path:
        """Resolves a configured path against the project root (absolute paths stay as they are)."""
        return relative if relative.is_absolute() else PROJECT_ROOT / relative


def isolated_run_environ(prefix: str, run: str) -> dict[str, str]:
    """Environment overrides giving every topic and the consumer group names of their own, so a test
    or benchmark run shares a broker without seeing anyone else's records."""
    env = {f"{ENV_PREFIX}KAFKA__TOPICS__{name.upper()}": f"{prefix}{name.replace('_', '-')}-{run}"
           for name in Topics.model_fields}
    env[f"{ENV_PREFIX}KAFKA__CONSUMER_GROUP"] = f"{prefix}group-{run}"
    env[f"{ENV_PREFIX}REVIEW__CONSUMER_GROUP"] = f"{prefix}review-group-{run}"
    return env


def _env_overrides(environ: Mapping[str, str]) -> dict[str, Any]:
    overrides: dict[str, Any] = {}
    for name, raw in environ.items():
        if not name.startswith(ENV_PREFIX) or name == "LIFEGUARD_CONFIG":
            continue
        keys = name[len(ENV_PREFIX):].lower().split("__")
        node = overrides
        for key in keys[:-1]:
            node = node.setdefault(key, {})
        # Credentials stay the strings they are: YAML would read a password "0123" as the number 123.
        node[keys[-1]] = raw if keys[-1] in CREDENTIAL_KEYS or not raw else yaml.safe_load(raw)
    return overrides


def _merge(base: dict[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def load_config(path: Path | str | None = None, environ: Mapping[str, str] | None = None) -> LifeguardConfig:
    environ = os.environ if environ is None else environ
    file = Path(path or environ.get("LIFEGUARD_CONFIG") or DEFAULT_CONFIG_FILE)
    from_file = yaml.safe_load(file.read_text()) or {} if file.exists() else {}
    return LifeguardConfig.model_validate(_merge(from_file, _env_overrides(environ)))
