"""``python -m worker --model MODEL_DIR`` (or ``--registry REGISTRY_DIR``): run the worker.

Flags override ``WORKER_*`` environment settings. Exit codes: 0 after a clean stop (SIGTERM /
SIGINT, everything committed, also when stopped before the broker was ever reached); 1 when
stopped with work left uncommitted (the drain time ran out, or an output was refused under
``WORKER_UNDELIVERABLE_POLICY=stop``) or on an unexpected error; 2 for a bad setting, a bad or
incompatible model, or a metrics port that cannot be bound. The last log line is
``worker_stopped`` with ``reason`` and ``exit_code``.
"""

from __future__ import annotations

import argparse
import functools
import gc
import logging
import signal
import sys
import threading
import time
from typing import Any

import torch
from threadpoolctl import threadpool_limits

from detector.errors import DetectorError
from detector.signing import Ed25519PublicKey, load_public_key
from worker.errors import NoLiveVersionError, SettingsError
from worker.kafka_config import crc32c_implementation, make_producer, missing_codecs
from worker.kafka_io import KafkaSource
from worker.kafka_sink import KafkaSink
from worker.log_format import configure_logging
from worker.loop import WorkerLoop
from worker.loop_config import LoopConfig
from worker.metrics import HealthState, MetricsServer, WorkerMetrics
from worker.model_loading import LoadedModel, load_live_model, load_model
from worker.outputs import Sink
from worker.rebalance import PartitionsCallback, RevokedCallback
from worker.reload import RegistryWatcher
from worker.settings import KafkaClient, WorkerSettings, effective_settings, load_settings
from worker.source import Source, SourceFactory

logger = logging.getLogger("worker")

_FLAGS: dict[str, tuple[str, ...]] = {
    "--model": ("model_dir",),
    "--registry": ("registry_dir",),
    "--bootstrap-servers": ("kafka", "bootstrap_servers"),
    "--input-topic": ("kafka", "input_topic"),
    "--output-topic": ("kafka", "output_topic"),
    "--dead-letter-topic": ("kafka", "dead_letter_topic"),
    "--group-id": ("kafka", "group_id"),
    "--metrics-host": ("metrics", "host"),
    "--metrics-port": ("metrics", "port"),
    "--batch-size": ("batch_size",),
    "--batch-wait-ms": ("batch_wait_ms",),
    "--overlap-batches": ("overlap_batches",),
    "--commit-interval-ms": ("commit_interval_ms",),
    "--log-level": ("log_level",),
    "--log-format": ("log_format",),
    "--torch-threads": ("torch_threads",),
    "--kafka-client": ("kafka_client",),
}


def _default_of(path: tuple[str, ...]) -> str:
    """The setting's default as help text (``default: 500``, or ``default: unset``)."""
    model: Any = WorkerSettings
    for name in path[:-1]:
        model = model.model_fields[name].annotation
    field = model.model_fields[path[-1]]
    default = None if field.is_required() else field.get_default(call_default_factory=True)
    return f"default: {'unset' if default is None else getattr(default, 'value', default)}"


def parse_overrides(argv: list[str] | None) -> dict[str, Any]:
    """Command-line flags as nested setting overrides (only the flags given)."""
    parser = argparse.ArgumentParser(
        prog="python -m worker",
        description="Kestrel streaming anomaly worker.",
        epilog="Exit codes: 0 clean stop, 1 stopped with work left uncommitted or an unexpected error, "
        "2 bad setting, bad model or metrics port in use.",
    )
    for flag, path in _FLAGS.items():
        env = f"WORKER_{'__'.join(path).upper()}"
        parser.add_argument(flag, dest="__".join(path), default=None, help=f"overrides {env} ({_default_of(path)})")
    args = vars(parser.parse_args(argv))
    overrides: dict[str, Any] = {}
    for dest, value in args.items():
        if value is None:
            continue
        *parents, leaf = dest.split("__")
        node = overrides
        for parent in parents:
            node = node.setdefault(parent, {})
        node[leaf] = value
    # The model's source given as a flag replaces the other source's variable too: the flags
    # override the environment (``--model`` beside a ConfigMap's ``WORKER_REGISTRY_DIR``).
    given = {"model_dir", "registry_dir"} & overrides.keys()
    if len(given) == 1:
        overrides.setdefault(({"model_dir", "registry_dir"} - given).pop(), None)
    return overrides


def _public_key(settings: WorkerSettings) -> Ed25519PublicKey | None:
    """The model-signing public key (``WORKER_MODEL_PUBLIC_KEY``), or ``None``: signatures not required."""
    if settings.model_public_key is None:
        return None
    return load_public_key(settings.model_public_key.get_secret_value())


def _load_initial_model(settings: WorkerSettings) -> LoadedModel:
    if settings.model_dir is not None:
        return load_model(settings.model_dir, _public_key(settings))
    assert settings.registry_dir is not None
    return load_live_model(settings.registry_dir, _public_key(settings))


def _clients(settings: WorkerSettings) -> tuple[SourceFactory, Sink, str]:
    """The source factory, the sink and the checksum implementation of the chosen Kafka client."""
    if settings.kafka_client == KafkaClient.CONFLUENT:
        try:
            from worker.confluent_io import ConfluentSource  # noqa: PLC0415
            from worker.confluent_sink import ConfluentSink, make_confluent_producer  # noqa: PLC0415
        except ImportError as exc:
            raise SettingsError(
                "WORKER_KAFKA_CLIENT=confluent needs confluent-kafka: pip install 'kestrel-anomaly[fast]'"
            ) from exc

        def build_confluent(on_revoked: RevokedCallback, on_assigned: PartitionsCallback) -> Source:
            return ConfluentSource(settings.kafka, on_revoked, on_assigned)

        return build_confluent, ConfluentSink(lambda: make_confluent_producer(settings.kafka)), "librdkafka"

    def build(on_revoked: RevokedCallback, on_assigned: PartitionsCallback) -> Source:
        return KafkaSource(settings.kafka, on_revoked, on_assigned)

    return build, KafkaSink(lambda: make_producer(settings.kafka)), crc32c_implementation()


def warn_about_kafka_python(crc: str) -> None:
    """At start-up, what kafka-python lacks here: its C checksum (the pure-Python one costs ~10x in
    consumer CPU) and its lz4/snappy/zstd codecs (a batch in a missing one cannot be read, and its
    partition is set aside). ``crc`` is ``librdkafka`` on the other client: nothing to say."""
    if crc == "python":
        logger.warning("kafka_crc32c_pure_python", extra={"hint": "pip install crc32c (~10x faster consuming)"})
    if crc != "librdkafka" and (missing := missing_codecs()):
        logger.warning(
            "kafka_codecs_missing", extra={"codecs": missing, "hint": "pip install lz4 python-snappy zstandard"}
        )


def _loop_config(settings: WorkerSettings) -> LoopConfig:
    return LoopConfig(
        output_topic=settings.kafka.output_topic,
        dead_letter_topic=settings.kafka.dead_letter_topic,
        batch_size=settings.batch_size,
        batch_wait_ms=settings.batch_wait_ms,
        max_value_bytes=settings.kafka.max_message_bytes,
        max_request_bytes=settings.kafka.max_request_bytes,
        shutdown_timeout_s=settings.shutdown_timeout_s,
        undeliverable=settings.undeliverable_policy.value,
        overlap_batches=settings.overlap_batches,
        commit_interval_s=settings.commit_interval_ms / 1000.0,
    )


def _start_watcher(settings: WorkerSettings, loop: WorkerLoop, metrics: WorkerMetrics) -> RegistryWatcher | None:
    """With ``--registry``: watch the live pointer and hot-reload new versions (off the hot path)."""
    if settings.registry_dir is None:
        return None
    watcher = RegistryWatcher(
        settings.registry_dir,
        loop.model.detector.version,
        loop.swap_model,
        metrics,
        settings.reload_interval_s,
        public_key=_public_key(settings),
    )
    watcher.start()
    return watcher


class _Stopper:
    """SIGTERM / SIGINT, from start-up on: stops the wait for a first model, then the loop."""

    def __init__(self) -> None:
        self.requested = threading.Event()  # for waiting on; set shortly after the signal
        self.signalled = False  # set by the handler itself, before it returns
        self.reason = "signal"
        self._loop: WorkerLoop | None = None

    def install(self) -> None:
        signal.signal(signal.SIGTERM, self._on_signal)
        signal.signal(signal.SIGINT, self._on_signal)

    def attach(self, loop: WorkerLoop) -> None:
        """From now on a signal stops ``loop`` (at once if one came before)."""
        self._loop = loop
        if self.signalled:
            loop.request_stop(self.reason)

    def _on_signal(self, signum: int, frame: object) -> None:
        # Neither Event.set() nor request_stop() here: the handler runs on the main thread, possibly
        # inside an Event.wait() holding the Event's lock, which set() would then wait for forever.
        if not self.signalled:
            self.reason = signal.Signals(signum).name
        self.signalled = True
        loop = self._loop
        target = self.requested.set if loop is None else functools.partial(loop.request_stop, self.reason)
        threading.Thread(target=target, name="stop-request", daemon=True).start()


def _wait_for_live_model(settings: WorkerSettings, health: HealthState, stopper: _Stopper) -> LoadedModel | None:
    """``--registry`` with nothing promoted yet: alive and not ready, the registry read again every
    ``WORKER_RELOAD_INTERVAL_S`` until a version is live (``None`` when stopped first).

    Raises:
        DetectorError / OSError: the version promoted meanwhile cannot be loaded.
    """
    logger.warning(
        "waiting_for_live_model",
        extra={
            "registry": str(settings.registry_dir),
            "hint": (
                "python -m training registry add MODEL_DIR --registry DIR --promote --reason 'first model'"
                " (or registry promote VERSION --registry DIR --reason ... for a registered version)"
            ),
        },
    )
    next_look = time.monotonic() + settings.reload_interval_s
    while not stopper.requested.wait(min(1.0, max(0.0, next_look - time.monotonic()))):
        health.tick()
        health.progressed()  # nothing can be pending: the worker has not joined its group
        if time.monotonic() < next_look:
            continue
        next_look = time.monotonic() + settings.reload_interval_s
        try:
            return _load_initial_model(settings)
        except NoLiveVersionError:
            continue
    return None


def run(settings: WorkerSettings) -> int:
    """Run the worker with ``settings`` until stopped; return the exit code."""
    torch.set_num_threads(settings.torch_threads)
    # numpy's BLAS (the centroid distances) gets the same budget: its default of one thread per
    # core makes every small matrix product wait for busy cores under contention (measured 14 ms
    # instead of 0.04 ms per batch on a loaded 2-core machine).
    threadpool_limits(limits=settings.torch_threads, user_api="blas")
    stopper = _Stopper()
    stopper.install()
    model: LoadedModel | None = None
    try:
        model = _load_initial_model(settings)
    except NoLiveVersionError:
        pass  # waited for below, once the probes are served
    except (DetectorError, OSError) as exc:
        print(f"error: cannot load the model: {exc}", file=sys.stderr)
        return 2
    try:
        source_factory, sink, crc = _clients(settings)
    except SettingsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    metrics, health = WorkerMetrics(), HealthState(no_progress_after_s=settings.no_progress_timeout_s)
    client = settings.kafka_client.value
    metrics.build_info.labels(client, crc).set(1)
    warn_about_kafka_python(crc)
    try:
        server = MetricsServer(metrics.registry, health, settings.metrics.host, settings.metrics.port)
    except OSError as exc:
        print(f"error: cannot serve metrics on {settings.metrics.host}:{settings.metrics.port}: {exc}", file=sys.stderr)
        return 2
    server.start()
    try:
        return _serve(settings, model, source_factory, sink, metrics, health, stopper, server.port, crc)
    finally:
        server.stop()


def _serve(
    settings: WorkerSettings,
    model: LoadedModel | None,
    source_factory: SourceFactory,
    sink: Sink,
    metrics: WorkerMetrics,
    health: HealthState,
    stopper: _Stopper,
    port: int,
    crc: str,
) -> int:
    """With the probes served: the first model (waited for if need be), then the loop until stopped."""
    if model is None:
        try:
            model = _wait_for_live_model(settings, health, stopper)
        except (DetectorError, OSError) as exc:
            print(f"error: cannot load the model: {exc}", file=sys.stderr)
            return 2
    if model is None or stopper.signalled:
        logger.info("worker_stopped", extra={"reason": stopper.reason, "clean": True, "exit_code": 0})
        return 0
    logger.info("model_loaded", extra={"model_version": model.detector.version, "seconds": model.load_seconds})
    loop = WorkerLoop(source_factory, sink, model, metrics, health, _loop_config(settings))
    stopper.attach(loop)
    watcher = _start_watcher(settings, loop, metrics)
    client = settings.kafka_client.value
    logger.info("worker_started", extra={"metrics_port": port, "kafka_client": client, "crc32c": crc})
    # Everything built so far (torch, numpy, the clients, the model) lives as long as the process:
    # out of the collector's reach, a full collection walks only what the loop allocates (measured:
    # 75-100 ms pauses every few seconds at 20k events/s otherwise, a p99 latency spike).
    gc.collect()
    gc.freeze()
    try:
        clean = loop.run()
    except Exception:
        logger.exception("worker_crashed")
        raise
    finally:
        if watcher is not None:
            watcher.stop()
    code = 0 if clean else 1
    logger.info("worker_stopped", extra={"reason": loop.stop_reason, "clean": clean, "exit_code": code})
    return code


def main(argv: list[str] | None = None) -> int:
    try:
        settings = load_settings(parse_overrides(argv))
    except SettingsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    configure_logging(settings.log_level, settings.log_format.value)
    # The worker reports broker trouble itself (broker_unavailable, publish_failed, ...), once per
    # outage; kafka-python would add several lines per retry.
    if settings.log_level.upper() != "DEBUG":
        for client_logger in ("kafka", "confluent_kafka"):
            logging.getLogger(client_logger).setLevel(logging.CRITICAL)
    logger.info("settings", extra={"settings": effective_settings(settings)})
    return run(settings)


if __name__ == "__main__":
    sys.exit(main())
