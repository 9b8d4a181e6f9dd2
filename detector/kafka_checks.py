"""Checks of Kafka connection settings that the worker and the training side's Kafka tools share
(``worker.settings.KafkaSettings``, ``training.retrain.kafka_security.KafkaSecurity``): both read
the same ``WORKER_KAFKA__*`` variables, so both refuse the same values with the same words."""

from __future__ import annotations

import re
import ssl
from pathlib import Path

from pydantic import SecretStr

#: A broker entry both clients take: an optional ``PROTOCOL://``, then ``host`` or ``[ipv6]`` (a zone
#: allowed), then an optional ``:port`` (9092 to both clients when left out); or a bare IPv6 address.
_ENTRY = re.compile(
    r"(?:[A-Za-z_]+://)?(?:(\[[0-9A-Fa-f:.]+(?:%[^\]\s]+)?\]|[^\s,:/\[\]]+)(?::([0-9]{1,5}))?|([0-9A-Fa-f.]*:[0-9A-Fa-f.]*:[0-9A-Fa-f:.]*))"
)


def normalised_servers(value: str) -> str:
    """``value`` as comma-separated broker entries, spaces around each dropped.

    An entry is what both clients take: ``host``, ``host:port``, ``[ipv6]:port``, with or without a
    ``PROTOCOL://`` prefix (a missing port is 9092 to both).

    Raises:
        ValueError: an empty entry (a trailing or doubled comma: kafka-python would try a host
            named ``''``, librdkafka drops it), one with a space inside (brokers separated by
            spaces), a port that is not a number from 1 to 65535, or no host.
    """
    entries = [entry.strip() for entry in value.split(",")]
    for entry in entries:
        match = _ENTRY.fullmatch(entry)
        port = None if match is None else match.group(2)
        if match is None or (port is not None and not 0 < int(port) <= 65535):
            raise ValueError(f"bootstrap_servers {value!r}: {entry!r} is not host:port (entries separated by commas)")
    return ",".join(entries)


#: The SASL settings, used only by the ``SASL_*`` protocols (``ssl_cafile`` only by the ``*SSL`` ones).
SASL_FIELDS = ("sasl_mechanism", "sasl_username", "sasl_password")


def unused_fields(protocol: str) -> tuple[str, ...]:
    """The security settings ``protocol`` does not use: given anyway, the client would connect
    without them, silently (the worker refuses them; a tool's protocol option leaves them out)."""
    sasl = () if protocol.startswith("SASL") else SASL_FIELDS
    return sasl + (() if protocol.endswith("SSL") else ("ssl_cafile",))


def check_security(
    protocol: str, mechanism: object, username: str | None, password: SecretStr | None, cafile: Path | None
) -> None:
    """Refuse security settings that the protocol would leave unused or that cannot work.

    Raises:
        ValueError: SASL settings without a SASL protocol (the client would connect without them,
            silently), a SASL protocol without a mechanism, user and non-empty password, a CA file
            without TLS, or a CA file that is not a readable PEM bundle.
    """
    unused = unused_fields(protocol)
    values = (mechanism, username, password)
    given = [name for name, value in zip(SASL_FIELDS, values, strict=True) if value is not None and name in unused]
    if given:
        raise ValueError(
            f"{', '.join(given)} set but security_protocol is {protocol} (SASL_SSL or SASL_PLAINTEXT uses them)"
        )
    if "sasl_password" not in unused and (
        mechanism is None or not username or password is None or not password.get_secret_value()
    ):
        raise ValueError(f"{protocol} needs sasl_mechanism, sasl_username and sasl_password")
    if cafile is None:
        return
    if "ssl_cafile" in unused:
        raise ValueError(f"ssl_cafile set but security_protocol is {protocol} (SSL or SASL_SSL uses it)")
    if not cafile.is_file():
        raise ValueError(f"ssl_cafile {cafile} is not a file")
    try:
        ssl.create_default_context(cafile=str(cafile))
    except (ssl.SSLError, OSError, ValueError) as exc:
        raise ValueError(f"ssl_cafile {cafile} is not a readable PEM CA bundle ({exc})") from None
