"""Kafka SASL/SSL settings for the training side, read from the worker's own variables.

The retrain job and ``training feedback`` reach the same cluster as the workers, so they read the
same ``WORKER_KAFKA__*`` security variables (``SECURITY_PROTOCOL``, ``SASL_MECHANISM``,
``SASL_USERNAME``, ``SASL_PASSWORD``, ``SSL_CAFILE``; see ``worker.settings.KafkaSettings``). This
is a minimal copy of those fields because ``training`` never imports ``worker`` (import-linter);
the field names and values are the same, and so are the checks
(:func:`detector.kafka_checks.check_security`). The password is a :class:`SecretStr`: it is never
printed, logged or taken from the command line.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, SecretStr, ValidationError, model_validator

from detector.kafka_checks import check_security, unused_fields

ENV_PREFIX = "WORKER_KAFKA__"
FIELDS = ("security_protocol", "sasl_mechanism", "sasl_username", "sasl_password", "ssl_cafile")


class KafkaSecurity(BaseModel):
    """How to authenticate to the brokers and encrypt the connection (default: plaintext)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = None
    sasl_username: str | None = None
    sasl_password: SecretStr | None = None
    ssl_cafile: Path | None = None

    @model_validator(mode="after")
    def _check_consistent(self) -> KafkaSecurity:
        check_security(
            self.security_protocol, self.sasl_mechanism, self.sasl_username, self.sasl_password, self.ssl_cafile
        )
        return self

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> KafkaSecurity:
        """Read ``WORKER_KAFKA__<FIELD>`` variables; ``overrides`` (not ``None``) win. A
        ``security_protocol`` override leaves out the variables it does not use (``--security-protocol
        PLAINTEXT`` in a worker's environment with SASL settings: found in review, refused as
        inconsistent with no way to unset them).

        Raises:
            ValueError: inconsistent or invalid settings (one line, the password never shown).
        """
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for name in FIELDS:
            raw = env.get(ENV_PREFIX + name.upper())
            if raw:
                values[name] = raw
        protocol = overrides.get("security_protocol")
        if protocol is not None:  # a protocol given here drops the environment's settings it does not use
            values = {k: v for k, v in values.items() if k not in unused_fields(protocol)}
        values.update({k: v for k, v in overrides.items() if v is not None})
        try:
            return cls.model_validate(values)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"])
            raise ValueError(f"Kafka security settings: {where + ': ' if where else ''}{first['msg']}") from None

    def client_config(self) -> dict[str, Any]:
        """kafka-python keyword arguments (as the worker's ``kafka_config.security_config``)."""
        config: dict[str, Any] = {"security_protocol": self.security_protocol}
        if self.sasl_mechanism is not None:
            config["sasl_mechanism"] = self.sasl_mechanism
            config["sasl_plain_username"] = self.sasl_username
            if self.sasl_password is not None:
                config["sasl_plain_password"] = self.sasl_password.get_secret_value()
        if self.ssl_cafile is not None:
            config["ssl_cafile"] = str(self.ssl_cafile)
        return config
