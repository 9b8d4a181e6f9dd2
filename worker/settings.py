"""Worker settings: environment (prefix ``WORKER_``, nested with ``__``) overridden by flags.

Settings are read once at the entry point and passed down; there is no module-level settings
object. Secrets are :class:`pydantic.SecretStr` and are masked in :func:`effective_settings`.
"""

from __future__ import annotations

import difflib
import os
import re
from collections.abc import Mapping
from enum import StrEnum
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from detector.kafka_checks import check_security, normalised_servers
from worker.errors import SettingsError
from worker.output_guard import MIN_REQUEST_BYTES


class SecurityProtocol(StrEnum):
    PLAINTEXT = "PLAINTEXT"
    SSL = "SSL"
    SASL_PLAINTEXT = "SASL_PLAINTEXT"
    SASL_SSL = "SASL_SSL"


class SaslMechanism(StrEnum):
    PLAIN = "PLAIN"
    SCRAM_SHA_256 = "SCRAM-SHA-256"
    SCRAM_SHA_512 = "SCRAM-SHA-512"


class UndeliverablePolicy(StrEnum):
    """What to do with an output the broker refuses for good (see worker.loop_config.LoopConfig)."""

    SKIP = "skip"
    STOP = "stop"


#: Kafka's legal topic names (the broker and both clients refuse anything else).
TOPIC_NAME = re.compile(r"[a-zA-Z0-9._-]{1,249}")


def check_topic_name(topic: str) -> None:
    """Raise ``ValueError`` for a name the broker and both clients refuse."""
    if not TOPIC_NAME.fullmatch(topic) or topic in {".", ".."}:
        raise ValueError(f"{topic!r} is not a legal Kafka topic name (letters, digits, '.', '_', '-'; 1-249)")


class KafkaClient(StrEnum):
    """Which Kafka client library the worker uses (same behaviour, different speed)."""

    KAFKA_PYTHON = "kafka-python"
    CONFLUENT = "confluent"


class LogFormat(StrEnum):
    JSON = "json"
    TEXT = "text"


#: Both clients' default longest time between two polls before the consumer leaves its group.
MAX_POLL_INTERVAL_MS = 300_000


class KafkaSettings(BaseModel):
    """Broker connection, topics and consumer-group timing."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    #: Comma-separated ``host:port`` entries (no blanks; spaces around an entry are dropped).
    bootstrap_servers: str = Field(default="localhost:9092", min_length=1)
    input_topic: str = Field(default="events", min_length=1)
    output_topic: str = Field(default="anomalies", min_length=1)
    dead_letter_topic: str = Field(default="events.dlq", min_length=1)
    group_id: str = Field(default="kestrel-worker", min_length=1)
    security_protocol: SecurityProtocol = SecurityProtocol.PLAINTEXT
    sasl_mechanism: SaslMechanism | None = None
    sasl_username: str | None = None
    sasl_password: SecretStr | None = None
    ssl_cafile: Path | None = None
    #: Short session/heartbeat timeouts make joins (~3 s) and failover fast.
    session_timeout_ms: int = Field(default=6000, ge=1000, le=3_600_000)  # librdkafka's ceiling
    heartbeat_interval_ms: int = Field(default=2000, ge=100)
    #: Longest broker-side wait of a fetch. Kafka answers as soon as data arrives, but some
    #: brokers (the embedded one) hold every fetch this long, so it bounds added latency.
    fetch_max_wait_ms: int = Field(default=20, ge=1, le=10_000)
    #: Input values larger than this are dead-lettered as ``too_large`` without parsing. At most
    #: a third of ``max_request_bytes``: an anomaly record carries the event plus its explanation.
    max_message_bytes: int = Field(default=65536, gt=0)
    #: The producer's request limit (kafka ``max_request_size``); every output is fitted under it.
    #: Keep it at most the broker's/topic's ``message.max.bytes`` (1 MB by default).
    max_request_bytes: int = Field(default=1_000_000, ge=MIN_REQUEST_BYTES, le=100_000_000)
    #: How long one attempt to reach the bootstrap servers may take before it is retried.
    connect_timeout_ms: int = Field(default=5000, ge=100, le=120_000)

    @property
    def max_poll_interval_ms(self) -> int:
        """Both consumers' ``max.poll.interval.ms``: the clients' default (300 s), raised to the
        session timeout where that is longer (librdkafka refuses a session timeout above it)."""
        return max(MAX_POLL_INTERVAL_MS, self.session_timeout_ms)

    @field_validator("bootstrap_servers")
    @classmethod
    def _check_servers(cls, value: str) -> str:
        return normalised_servers(value)

    @field_validator("group_id")
    @classmethod
    def _check_group(cls, value: str) -> str:
        if value != value.strip() or not value:
            raise ValueError(f"group_id {value!r} has leading or trailing spaces (another group than its peers')")
        return value

    @model_validator(mode="after")
    def _check_consistent(self) -> KafkaSettings:
        if self.heartbeat_interval_ms >= self.session_timeout_ms:
            raise ValueError("heartbeat_interval_ms must be smaller than session_timeout_ms")
        check_security(
            self.security_protocol, self.sasl_mechanism, self.sasl_username, self.sasl_password, self.ssl_cafile
        )
        topics = [self.input_topic, self.output_topic, self.dead_letter_topic]
        for topic in topics:
            check_topic_name(topic)
        if self.max_message_bytes > self.max_request_bytes // 3:
            raise ValueError(
                f"max_message_bytes ({self.max_message_bytes}) must be at most a third of max_request_bytes "
                f"({self.max_request_bytes}): an anomaly record carries the event and its explanation"
            )
        if len(set(topics)) != len(topics):
            raise ValueError("input, output and dead-letter topics must all differ")
        return self


class MetricsSettings(BaseModel):
    """HTTP server for /metrics, /healthz and /readyz."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    host: str = "0.0.0.0"  # noqa: S104 - scraped from outside the container
    port: int = Field(default=9308, ge=0, le=65535)


class WorkerSettings(BaseSettings):
    """All worker settings. Exactly one of ``model_dir`` and ``registry_dir`` is required."""

    model_config = SettingsConfigDict(
        env_prefix="WORKER_", env_nested_delimiter="__", extra="forbid", frozen=True, case_sensitive=False
    )

    model_dir: Path | None = None
    registry_dir: Path | None = None
    #: Ed25519 public key (PEM text or a PEM file path): serve only models signed with its key.
    model_public_key: SecretStr | None = None
    kafka: KafkaSettings = KafkaSettings()
    metrics: MetricsSettings = MetricsSettings()
    batch_size: int = Field(default=500, gt=0, le=100_000)
    batch_wait_ms: int = Field(default=20, ge=0, le=60_000)
    #: Poll and score the next batch while this one's outputs are in flight (commit order kept).
    overlap_batches: bool = True
    #: Under load, commit input offsets at most this often (0, the default: after every batch, so a
    #: crash re-reads at most the batches not yet committed); an idle poll, a rebalance and a stop
    #: commit at once. Fewer commit requests, and a crash re-reads up to this much more input.
    commit_interval_ms: int = Field(default=0, ge=0, le=60_000)
    #: ``kafka-python`` (default, pure Python) or ``confluent`` (librdkafka; ``pip install 'kestrel-anomaly[fast]'``).
    kafka_client: KafkaClient = KafkaClient.KAFKA_PYTHON
    log_level: str = "INFO"
    log_format: LogFormat = LogFormat.JSON
    torch_threads: int = Field(default=1, ge=1, le=256)
    reload_interval_s: float = Field(default=10.0, ge=0.1, le=86_400)
    #: How long a stop (SIGTERM) may take to flush and commit before the worker gives up.
    shutdown_timeout_s: float = Field(default=20.0, gt=0, le=3600)
    #: An output the broker refuses for good: ``skip`` (count, log, move on) or ``stop``.
    undeliverable_policy: UndeliverablePolicy = UndeliverablePolicy.SKIP
    #: Liveness (/healthz) fails after this long without a commit while work is pending.
    no_progress_timeout_s: float = Field(default=300.0, ge=5.0)

    @model_validator(mode="after")
    def _check_model_source(self) -> WorkerSettings:
        if (self.model_dir is None) == (self.registry_dir is None):
            raise ValueError("give exactly one of --model (WORKER_MODEL_DIR) and --registry (WORKER_REGISTRY_DIR)")
        if self.log_level.upper() not in {"DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"}:
            raise ValueError(f"log_level must be DEBUG, INFO, WARNING, ERROR or CRITICAL, got {self.log_level!r}")
        if self.commit_interval_ms / 1000.0 >= self.no_progress_timeout_s:
            raise ValueError("commit_interval_ms must be shorter than no_progress_timeout_s (liveness needs commits)")
        return self


def load_settings(overrides: Mapping[str, Any] | None = None) -> WorkerSettings:
    """Read settings from the environment, then apply ``overrides`` (nested dicts, from flags).

    Raises:
        SettingsError: one line naming the first bad setting.
    """
    unknown = unknown_variables(os.environ)
    if unknown:
        raise SettingsError(unknown[0])
    try:
        return WorkerSettings(**dict(overrides or {}))
    except ValidationError as exc:
        raise SettingsError(f"invalid setting: {_first_error(exc)}") from exc
    except ValueError as exc:  # e.g. an env value that is not valid JSON for a complex field
        raise SettingsError(f"invalid setting: {exc}".splitlines()[0]) from exc


def unknown_variables(env: Mapping[str, str]) -> list[str]:
    """One message per ``WORKER_*`` variable that names no setting (a misspelt one would otherwise
    leave its setting at the default without a word). ``WORKER_KAFKA__*`` and ``WORKER_METRICS__*``
    names are checked against their sections' fields; any other name with ``__`` names no section."""
    return [message for _, _, message in _unknown_names(env)]


def _unknown_names(env: Mapping[str, str]) -> list[tuple[str, str | None, str]]:
    """Per unknown ``WORKER_*`` variable: its name, the closest real name (or ``None``), the message."""
    fields = WorkerSettings.model_fields
    known = {name.upper() for name in fields}
    models = {name: f.annotation for name, f in fields.items()}
    sections = {name.upper() for name, kind in models.items() if isinstance(kind, type) and issubclass(kind, BaseModel)}
    found = []
    for key in sorted(env):
        upper = key.upper()
        if not upper.startswith("WORKER_"):
            continue
        name = upper[len("WORKER_") :]
        section, nested, rest = name.partition("__")
        if nested and section in sections:
            inner = {f.upper() for f in models[section.lower()].model_fields}  # type: ignore[union-attr]
            if rest in inner:
                continue
            inner_guess = _closest(rest, inner)
            guess = f"{section}__{inner_guess}" if inner_guess else None
            where = f"setting in WORKER_{section}__* (docs/worker.md)"
        elif nested:
            section_guess = _closest(section, sections)
            # WORKER_BATCH__SIZE: a top-level setting written with "__"
            guess = f"{section_guess}__{rest}" if section_guess else _closest(name.replace("__", "_"), known - sections)
            where = "WORKER_* setting (docs/worker.md lists them)"
        elif name in known:
            continue
        else:
            guess, where = _closest(name, known), "WORKER_* setting (docs/worker.md lists them)"
        full = f"WORKER_{guess}" if guess else None
        hint = f" (did you mean {full}?)" if full else ""
        found.append((key, full, f"unknown setting {key}{hint}: no such {where}"))
    return found


def _closest(name: str, choices: set[str]) -> str | None:
    close = difflib.get_close_matches(name, sorted(choices), n=1, cutoff=0.6)
    return close[0] if close else None


def effective_settings(settings: WorkerSettings) -> dict[str, Any]:
    """Settings as plain JSON-able data with every secret masked (``**********``)."""
    return settings.model_dump(mode="json")


def _first_error(exc: ValidationError) -> str:
    err = exc.errors()[0]
    where = ".".join(str(p) for p in err["loc"])
    message = str(err["msg"]).splitlines()[0]
    return f"{where}: {message}" if where else message


_TOOL_ENV_FIELDS = (
    "bootstrap_servers",
    "security_protocol",
    "sasl_mechanism",
    "sasl_username",
    "sasl_password",
    "ssl_cafile",
)
_TOOL_ENV_PREFIX = "WORKER_KAFKA__"


def tool_env_warnings(env: Mapping[str, str]) -> list[str]:
    """The tools' warnings about misspelt ``WORKER_KAFKA__*`` variables (``WORKER_KAFKA__BOOTSTRAP_SERVER``
    would leave them on localhost:9092 without a word). Warnings, not errors: the tools read only the
    connection settings and run beside any worker environment."""
    # A name in the section, or one whose closest name is (WORKER_KAFK__BOOTSTRAP_SERVERS).
    return [
        message
        for key, guess, message in _unknown_names(env)
        if key.upper().startswith(_TOOL_ENV_PREFIX) or (guess or "").startswith(_TOOL_ENV_PREFIX)
    ]


def tool_kafka_settings(env: Mapping[str, str], bootstrap_servers: str | None) -> KafkaSettings:
    """The tools' (tail, replay) connection settings: the worker's ``WORKER_KAFKA__*`` variables for the
    brokers and security; a ``--bootstrap-servers`` option wins.

    Raises:
        ValidationError: a setting is invalid.
    """
    values = {
        name: env[_TOOL_ENV_PREFIX + name.upper()]
        for name in _TOOL_ENV_FIELDS
        if env.get(_TOOL_ENV_PREFIX + name.upper())
    }
    if bootstrap_servers:
        values["bootstrap_servers"] = bootstrap_servers
    return KafkaSettings.model_validate(values)
