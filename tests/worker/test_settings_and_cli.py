"""Settings precedence, validation errors, secret masking and the command line's exit codes."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from tiny_model import TinyModel

from worker.__main__ import _loop_config, parse_overrides
from worker.errors import BrokerError, SettingsError
from worker.settings import KafkaSettings, effective_settings, load_settings

ROOT = Path(__file__).resolve().parents[2]


def test_flags_override_env_and_nested_env_is_merged(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WORKER_KAFKA__INPUT_TOPIC", "from-env")
    monkeypatch.setenv("WORKER_KAFKA__GROUP_ID", "env-group")
    monkeypatch.setenv("WORKER_BATCH_SIZE", "64")
    settings = load_settings(parse_overrides(["--model", "/m", "--group-id", "flag-group", "--metrics-port", "1234"]))
    assert settings.kafka.input_topic == "from-env"
    assert settings.kafka.group_id == "flag-group"
    assert (settings.batch_size, settings.metrics.port, settings.model_dir) == (64, 1234, Path("/m"))
    assert (settings.kafka.session_timeout_ms, settings.batch_wait_ms, settings.torch_threads) == (6000, 20, 1)


def test_the_commit_interval_reaches_the_loop_in_seconds(monkeypatch: pytest.MonkeyPatch) -> None:
    assert _loop_config(load_settings({"model_dir": "/m"})).commit_interval_s == 0.0  # default: every batch
    monkeypatch.setenv("WORKER_COMMIT_INTERVAL_MS", "100")
    assert _loop_config(load_settings({"model_dir": "/m"})).commit_interval_s == 0.1
    settings = load_settings(parse_overrides(["--model", "/m", "--commit-interval-ms", "2500"]))
    assert _loop_config(settings).commit_interval_s == 2.5
    with pytest.raises(SettingsError):
        load_settings({"model_dir": "/m", "commit_interval_ms": -1})
    with pytest.raises(SettingsError, match="no_progress_timeout_s"):
        load_settings({"model_dir": "/m", "commit_interval_ms": 30_000, "no_progress_timeout_s": 30})


def test_secrets_are_masked(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WORKER_KAFKA__SECURITY_PROTOCOL", "SASL_SSL")
    monkeypatch.setenv("WORKER_KAFKA__SASL_MECHANISM", "SCRAM-SHA-512")
    monkeypatch.setenv("WORKER_KAFKA__SASL_USERNAME", "svc")
    monkeypatch.setenv("WORKER_KAFKA__SASL_PASSWORD", "hunter2")
    settings = load_settings({"model_dir": "/m"})
    assert settings.kafka.sasl_password is not None
    assert settings.kafka.sasl_password.get_secret_value() == "hunter2"
    assert "hunter2" not in repr(effective_settings(settings)) and "hunter2" not in repr(settings)


@pytest.mark.parametrize(
    ("env", "overrides", "fragment"),
    [
        ({}, {}, "exactly one of --model"),
        ({"WORKER_BATCH_SIZE": "zero"}, {"model_dir": "/m"}, "batch_size"),
        ({"WORKER_KAFKA__SECURITY_PROTOCOL": "SASL_SSL"}, {"model_dir": "/m"}, "needs sasl_mechanism"),
        ({"WORKER_KAFKA__SECURITY_PROTOCOL": "TLS"}, {"model_dir": "/m"}, "security_protocol"),
        ({"WORKER_KAFKA__OUTPUT_TOPIC": "events"}, {"model_dir": "/m"}, "must all differ"),
        ({"WORKER_LOG_LEVEL": "LOUD"}, {"model_dir": "/m"}, "log_level"),
        # A misspelt setting would leave its setting at the default without a word.
        ({"WORKER_BATCHSIZE": "1"}, {"model_dir": "/m"}, "WORKER_BATCHSIZE (did you mean WORKER_BATCH_SIZE?)"),
        ({"worker_shutdown_timeout": "5"}, {"model_dir": "/m"}, "did you mean WORKER_SHUTDOWN_TIMEOUT_S?"),
        # Found in review: a name with "__" was left to the sections' models, which never see a
        # section that does not exist (the worker started on localhost:9092 without a word).
        ({"WORKER_METRIC__PORT": "9000"}, {"model_dir": "/m"}, "(did you mean WORKER_METRICS__PORT?)"),
        ({"WORKER_KAFKAS__BOOTSTRAP_SERVERS": "k:9092"}, {"model_dir": "/m"}, "did you mean WORKER_KAFKA__BOOTSTRAP"),
        ({"WORKER_BATCH__SIZE": "9"}, {"model_dir": "/m"}, "WORKER_BATCH__SIZE (did you mean WORKER_BATCH_SIZE?)"),
        # Found in review: a misspelt name inside a section had no suggestion ("Extra inputs are not permitted").
        (
            {"WORKER_KAFKA__BOOTSTRAP_SERVER": "k:9092"},
            {"model_dir": "/m"},
            "WORKER_KAFKA__BOOTSTRAP_SERVER (did you mean WORKER_KAFKA__BOOTSTRAP_SERVERS?)",
        ),
        ({"WORKER_METRICS__PORTT": "9000"}, {"model_dir": "/m"}, "(did you mean WORKER_METRICS__PORT?)"),
        # Values the clients or the clock refuse later (a traceback at SIGTERM, a dead reload thread,
        # a consumer that never starts) are refused at start-up.
        # Found in review: SASL settings under a protocol without SASL connected without them, an
        # empty password was taken, and malformed broker lists or a padded group id were taken as given.
        (
            {
                "WORKER_KAFKA__SASL_MECHANISM": "PLAIN",
                "WORKER_KAFKA__SASL_USERNAME": "u",
                "WORKER_KAFKA__SASL_PASSWORD": "p",
            },
            {"model_dir": "/m"},
            "sasl_mechanism, sasl_username, sasl_password set but security_protocol is PLAINTEXT",
        ),
        (
            {
                "WORKER_KAFKA__SECURITY_PROTOCOL": "SASL_SSL",
                "WORKER_KAFKA__SASL_MECHANISM": "PLAIN",
                "WORKER_KAFKA__SASL_USERNAME": "u",
                "WORKER_KAFKA__SASL_PASSWORD": "",
            },
            {"model_dir": "/m"},
            "needs sasl_mechanism, sasl_username and sasl_password",
        ),
        ({"WORKER_KAFKA__BOOTSTRAP_SERVERS": "kafka:9092,"}, {"model_dir": "/m"}, "'' is not host:port"),
        ({"WORKER_KAFKA__BOOTSTRAP_SERVERS": " "}, {"model_dir": "/m"}, "'' is not host:port"),
        ({"WORKER_KAFKA__BOOTSTRAP_SERVERS": "a:9092,,b:9092"}, {"model_dir": "/m"}, "'' is not host:port"),
        ({"WORKER_KAFKA__BOOTSTRAP_SERVERS": "a:9092 b:9092"}, {"model_dir": "/m"}, "'a:9092 b:9092' is not host:port"),
        ({"WORKER_KAFKA__BOOTSTRAP_SERVERS": "kafka:70000"}, {"model_dir": "/m"}, "'kafka:70000' is not host:port"),
        # Found in review of the relaxed check: a port that is not a number passed, then crashed kafka-python.
        ({"WORKER_KAFKA__BOOTSTRAP_SERVERS": "kafka:9O92"}, {"model_dir": "/m"}, "'kafka:9O92' is not host:port"),
        ({"WORKER_KAFKA__BOOTSTRAP_SERVERS": "kafka:"}, {"model_dir": "/m"}, "'kafka:' is not host:port"),
        ({"WORKER_KAFKA__BOOTSTRAP_SERVERS": "[::1]:x"}, {"model_dir": "/m"}, "'[::1]:x' is not host:port"),
        ({"WORKER_KAFKA__BOOTSTRAP_SERVERS": "PLAINTEXT://"}, {"model_dir": "/m"}, "'PLAINTEXT://' is not host:port"),
        ({"WORKER_KAFKA__BOOTSTRAP_SERVERS": "kafka:-1"}, {"model_dir": "/m"}, "'kafka:-1' is not host:port"),
        ({"WORKER_KAFKA__BOOTSTRAP_SERVERS": ":9092"}, {"model_dir": "/m"}, "':9092' is not host:port"),
        ({"WORKER_KAFKA__GROUP_ID": "kestrel-worker "}, {"model_dir": "/m"}, "leading or trailing spaces"),
        ({"WORKER_KAFKA__GROUP_ID": " "}, {"model_dir": "/m"}, "leading or trailing spaces"),
        ({"WORKER_SHUTDOWN_TIMEOUT_S": "1e10"}, {"model_dir": "/m"}, "shutdown_timeout_s"),
        ({"WORKER_SHUTDOWN_TIMEOUT_S": "inf"}, {"model_dir": "/m"}, "shutdown_timeout_s"),
        ({"WORKER_RELOAD_INTERVAL_S": "inf"}, {"model_dir": "/m"}, "reload_interval_s"),
        ({"WORKER_RELOAD_INTERVAL_S": "0.000001"}, {"model_dir": "/m"}, "reload_interval_s"),
        ({"WORKER_KAFKA__SESSION_TIMEOUT_MS": "3600001"}, {"model_dir": "/m"}, "session_timeout_ms"),
    ],
)
def test_bad_settings_give_one_line(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str], overrides: dict[str, str], fragment: str
) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(SettingsError) as info:
        load_settings(overrides)
    assert fragment in str(info.value) and "\n" not in str(info.value)


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "worker", *args], cwd=ROOT, capture_output=True, text=True, timeout=60, check=False
    )


def test_cli_bad_setting_exits_2_with_one_line() -> None:
    result = _run("--model", "/m", "--batch-size", "-1")
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0 and "batch_size" in result.stderr


def test_cli_bad_model_exits_2(tmp_path: Path, tiny_model: TinyModel) -> None:
    result = _run("--model", str(tmp_path / "missing"), "--log-format", "text")
    assert result.returncode == 2 and "cannot load the model" in result.stderr
    broken = tmp_path / "broken"
    broken.mkdir()
    for item in tiny_model.path.iterdir():
        (broken / item.name).write_bytes(item.read_bytes())
    weights = broken / "weights.safetensors"
    weights.write_bytes(weights.read_bytes()[:-10])
    result = _run("--model", str(broken), "--log-format", "text")
    assert result.returncode == 2 and "cannot load the model" in result.stderr


def test_client_configurations_hold_every_accepted_setting() -> None:
    """Settings inside their ranges build client configurations the clients accept: kafka-python
    wants a request timeout above the session timeout and the fetch wait, and an idle-connection
    limit above that; librdkafka a connection set-up timeout of at least 1000 ms."""
    from worker.confluent_config import common_config  # noqa: PLC0415
    from worker.kafka_config import consumer_request_timeout_ms  # noqa: PLC0415

    edge = KafkaSettings(session_timeout_ms=3_600_000, heartbeat_interval_ms=100, fetch_max_wait_ms=10_000)
    assert consumer_request_timeout_ms(edge) > max(edge.session_timeout_ms, edge.fetch_max_wait_ms)
    assert consumer_request_timeout_ms(KafkaSettings(fetch_max_wait_ms=10_000)) > 10_000
    assert common_config(KafkaSettings(connect_timeout_ms=100))["socket.connection.setup.timeout.ms"] == 1000
    assert common_config(KafkaSettings(connect_timeout_ms=5000))["socket.connection.setup.timeout.ms"] == 5000


def test_broker_lists_are_normalised_and_every_form_the_clients_take_is_accepted() -> None:
    """Found in review of the check: it refused forms both clients take (a protocol prefix, no
    port, an IPv6 zone)."""
    servers = "kafka-0:9092, kafka-1:9092 ,[::1]:9093,10.0.0.5:9094"
    expected = "kafka-0:9092,kafka-1:9092,[::1]:9093,10.0.0.5:9094"
    assert KafkaSettings(bootstrap_servers=servers).bootstrap_servers == expected
    for servers in (
        "kafka",
        "PLAINTEXT://kafka:9092",
        "SASL_SSL://b-1.example:9096",
        "[fe80::1%eth0]:9092",
        "my_host:1",
    ):
        assert KafkaSettings(bootstrap_servers=servers).bootstrap_servers == servers


def test_a_ca_file_must_be_a_pem_bundle_used_by_tls(tmp_path: Path, ca_file: Path) -> None:
    """Found in review: any file was taken; librdkafka then failed every build (retried forever as
    an unreachable broker) and kafka-python timed out bootstrapping."""
    assert KafkaSettings(security_protocol="SSL", ssl_cafile=ca_file).ssl_cafile == ca_file
    sasl = {"sasl_mechanism": "PLAIN", "sasl_username": "u", "sasl_password": "p"}
    assert KafkaSettings(security_protocol="SASL_SSL", ssl_cafile=ca_file, **sasl).ssl_cafile == ca_file
    not_pem = tmp_path / "ca.pem"
    not_pem.write_text("not a certificate\n")
    with pytest.raises(ValueError, match="is not a readable PEM CA bundle"):
        KafkaSettings(security_protocol="SSL", ssl_cafile=not_pem)
    with pytest.raises(ValueError, match="ssl_cafile set but security_protocol is SASL_PLAINTEXT"):
        KafkaSettings(security_protocol="SASL_PLAINTEXT", ssl_cafile=ca_file, **sasl)
    with pytest.raises(ValueError, match="is not a file"):
        KafkaSettings(security_protocol="SSL", ssl_cafile=tmp_path)


@pytest.mark.parametrize("session_timeout_ms", [6000, 400_000, 3_600_000])
def test_every_accepted_session_timeout_builds_both_consumers(session_timeout_ms: int) -> None:
    """Found in review: librdkafka refused a session timeout above its max.poll.interval.ms
    (300 s) and the worker retried that as an unreachable broker, forever."""
    from worker.confluent_io import ConfluentSource  # noqa: PLC0415
    from worker.kafka_io import KafkaSource  # noqa: PLC0415

    settings = KafkaSettings(
        bootstrap_servers="127.0.0.1:1", session_timeout_ms=session_timeout_ms, connect_timeout_ms=100
    )
    assert settings.max_poll_interval_ms == max(300_000, session_timeout_ms)
    ConfluentSource(settings, lambda parts, lost=False: None, lambda parts: None).close(100)
    try:
        KafkaSource(settings, lambda parts, lost=False: None, lambda parts: None).close(100)
    except BrokerError as exc:  # nothing listens there: only the configuration must be accepted
        assert "bootstrap" in str(exc).lower() or "reach" in str(exc).lower(), exc


def test_a_model_source_flag_overrides_the_other_sources_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    """Found in review: ``--model`` beside ``WORKER_REGISTRY_DIR`` was refused as two sources."""
    monkeypatch.setenv("WORKER_REGISTRY_DIR", "/registry")
    settings = load_settings(parse_overrides(["--model", "/m"]))
    assert (settings.model_dir, settings.registry_dir) == (Path("/m"), None)
    monkeypatch.delenv("WORKER_REGISTRY_DIR")
    monkeypatch.setenv("WORKER_MODEL_DIR", "/m")
    settings = load_settings(parse_overrides(["--registry", "/registry"]))
    assert (settings.model_dir, settings.registry_dir) == (None, Path("/registry"))
    with pytest.raises(SettingsError, match="exactly one of --model"):
        load_settings(parse_overrides(["--registry", "/registry", "--model", "/m"]))
