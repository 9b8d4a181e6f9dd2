"""Worker metrics and the embedded broker launcher (the HTTP endpoint: test_http_endpoint.py)."""

from __future__ import annotations

import math
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from prometheus_client import CollectorRegistry

from worker import embedded_broker
from worker.embedded_broker import EmbeddedBroker, free_port
from worker.errors import BrokerStartError
from worker.metrics import QUANTILE_REFRESH_S, WorkerMetrics

ROOT = Path(__file__).resolve().parents[2]


def test_rolling_window_keeps_the_last_10000() -> None:
    metrics = WorkerMetrics(CollectorRegistry())
    metrics.observe_scores(np.full(10_000, 5.0), threshold=1.0)
    metrics.observe_scores(np.zeros(10_000), threshold=1.0)
    assert metrics.flag_rate._value.get() == 0.0


def test_the_window_gauge_says_how_many_events_the_flag_rate_rests_on() -> None:
    """The drift alert waits for a full window; found in review: it read the lifetime event
    counter, which a model swap does not reset, and judged a window of a few hundred events."""
    metrics = WorkerMetrics(CollectorRegistry())
    metrics.set_model("v1", 0.1, None, 1.0, 0.01, np.zeros(3))
    metrics.observe_scores(np.zeros(6_000), threshold=1.0)
    assert metrics.flag_rate_window._value.get() == 6_000
    metrics.observe_scores(np.zeros(6_000), threshold=1.0)
    assert metrics.flag_rate_window._value.get() == 10_000
    metrics.set_model("v2", 0.1, None, 1.0, 0.01, np.zeros(3))
    assert metrics.flag_rate_window._value.get() == 0
    metrics.observe_scores(np.zeros(276), threshold=1.0, model_version="v2")
    assert metrics.flag_rate_window._value.get() == 276


def _median(metrics: WorkerMetrics) -> float:
    return float(metrics.score_quantile.labels("0.5")._value.get())


def test_score_quantiles_are_recomputed_at_most_every_half_second_and_at_once_after_a_model_swap() -> None:
    now = [100.0]
    metrics = WorkerMetrics(CollectorRegistry(), clock=lambda: now[0])
    metrics.observe_scores(np.full(10_000, 5.0), threshold=1.0)
    assert _median(metrics) == 5.0
    metrics.observe_scores(np.zeros(10_000), threshold=1.0)
    assert metrics.flag_rate._value.get() == 0.0  # the flag rate follows every batch
    assert _median(metrics) == 5.0  # the quantiles wait for QUANTILE_REFRESH_S
    now[0] += QUANTILE_REFRESH_S
    metrics.observe_scores(np.zeros(1), threshold=1.0)
    assert _median(metrics) == 0.0
    metrics.set_model("v1", 0.1, None, 1.0, 0.01, np.zeros(3))
    metrics.set_model("v2", 0.1, None, 1.0, 0.01, np.zeros(3))  # a swap empties the window
    metrics.observe_scores(np.full(4, 3.0), threshold=1.0)
    assert _median(metrics) == 3.0


def test_a_new_model_exports_no_rolling_quantiles_or_flag_rate_until_it_has_scored() -> None:
    """Found in review: the old model's p99 stayed exported next to the new model's threshold,
    where ``KestrelSevereAnomalyScores`` compared them (a false critical alert after a promotion)."""
    registry = CollectorRegistry()
    metrics = WorkerMetrics(registry, clock=lambda: 0.0)
    metrics.set_model("v1", 0.1, None, 20.0, 0.01, np.array([1.0, 2.0, 3.0]))
    metrics.observe_scores(np.linspace(1.0, 45.0, 1000), 20.0, "v1")
    assert registry.get_sample_value("kestrel_score_quantile", {"quantile": "0.99"}) > 40.0
    metrics.set_model("v2", 0.1, None, 10.0, 0.01, np.array([1.0, 2.0, 3.0]))
    assert registry.get_sample_value("kestrel_score_quantile", {"quantile": "0.99"}) is None
    assert np.isnan(registry.get_sample_value("kestrel_flag_rate") or 0.0)
    assert registry.get_sample_value("kestrel_flag_rate_window_events") == 0
    metrics.observe_scores(np.full(10, 2.0), 10.0, "v2")
    assert registry.get_sample_value("kestrel_score_quantile", {"quantile": "0.99"}) == 2.0
    assert registry.get_sample_value("kestrel_flag_rate") == 0.0
    metrics.set_model("v2", 0.1, None, 10.0, 0.01, np.array([1.0, 2.0, 3.0]))  # the same model again: kept
    assert registry.get_sample_value("kestrel_score_quantile", {"quantile": "0.99"}) == 2.0


@pytest.mark.kafka
def test_embedded_broker_starts_accepts_and_stops() -> None:
    broker = EmbeddedBroker().start()
    try:
        with socket.create_connection(("127.0.0.1", broker.port), timeout=1):
            pass
        with pytest.raises(BrokerStartError, match="already in use"):
            EmbeddedBroker(broker.port).start()
    finally:
        broker.stop()
    broker.stop()  # idempotent
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", broker.port), timeout=1).close()


@pytest.mark.parametrize("port", [99999, -1])
def test_embedded_broker_refuses_a_port_out_of_range(port: int, capsys: pytest.CaptureFixture[str]) -> None:
    from worker.embedded_broker import main  # noqa: PLC0415

    with pytest.raises(BrokerStartError, match=f"port {port} is not a TCP port"):
        EmbeddedBroker(port)
    assert main(["--port", str(port)]) == 2
    assert "is not a TCP port" in capsys.readouterr().err


def test_a_scrape_never_sees_a_flag_rate_window_beside_the_nan_of_a_swap() -> None:
    """Found in review: the window was set before the rate, so a scrape between them after a swap
    saw 10 events beside NaN, and the dashboard's weighted fleet rate counted the worker in its
    denominator only."""
    registry = CollectorRegistry()
    metrics = WorkerMetrics(registry, clock=lambda: 0.0)
    metrics.set_model("v1", 0.1, None, 0.5, 0.05, np.linspace(0, 1, 100))
    metrics.observe_scores(np.full(50, 0.1), 0.5, "v1")
    metrics.set_model("v2", 0.1, None, 0.5, 0.05, np.linspace(0, 1, 100))
    seen: list[tuple[float | None, float | None]] = []
    for gauge in (metrics.flag_rate, metrics.flag_rate_window):
        real = gauge.set

        def scraped_after(value: float, real: Any = real) -> None:
            real(value)
            seen.append(
                (
                    registry.get_sample_value("kestrel_flag_rate_window_events"),
                    registry.get_sample_value("kestrel_flag_rate"),
                )
            )

        gauge.set = scraped_after  # type: ignore[method-assign]
    metrics.observe_scores(np.full(10, 0.9), 0.5, "v2")
    assert seen and all(not (w and math.isnan(r or 0.0)) for w, r in seen), seen


def _tansu_on(port: int) -> list[int]:
    """Pids of live tansu processes listening on ``port``."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[-1].split()[0]
        except OSError:
            continue
        if cmd[0].endswith(b"tansu") and f"tcp://127.0.0.1:{port}".encode() in cmd and state != "Z":
            found.append(int(pid))
    return found


@pytest.mark.kafka
def test_the_foreground_broker_exits_1_when_tansu_dies() -> None:
    """Found in review: ``python -m worker.embedded_broker`` exited 0, silently, when the broker
    crashed, which a supervisor takes for a clean stop."""
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "worker.embedded_broker", "--port", str(port)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT,
    )  # fmt: skip
    try:
        assert proc.stdout is not None and "listening" in proc.stdout.readline()
        (child,) = _tansu_on(port)
        os.kill(child, signal.SIGKILL)
        assert proc.wait(10) == 1
        assert proc.stderr is not None and "error: tansu exited with code -9" in proc.stderr.read()
    finally:
        if proc.poll() is None:
            proc.kill()


@pytest.mark.kafka
def test_an_interrupted_start_leaves_no_broker_behind(monkeypatch: pytest.MonkeyPatch) -> None:
    """Found in review: Ctrl-C while the broker started left tansu running in its own session,
    where nothing would stop it (the demo starts it so)."""
    started: list[subprocess.Popen[bytes]] = []
    real_popen = subprocess.Popen

    def popen(*args: Any, **kwargs: Any) -> subprocess.Popen[bytes]:
        started.append(real_popen(*args, **kwargs))
        return started[-1]

    calls = []

    def accepts(port: int) -> bool:
        calls.append(port)
        if len(calls) > 1:  # the port was free; Ctrl-C while waiting for the broker
            raise KeyboardInterrupt
        return False

    monkeypatch.setattr(embedded_broker.subprocess, "Popen", popen)
    monkeypatch.setattr(embedded_broker, "_accepts", accepts)
    try:
        with pytest.raises(KeyboardInterrupt):
            EmbeddedBroker(own_session=True).start()
        (process,) = started
        assert process.poll() is not None  # stopped and reaped
    finally:
        for leftover in started:
            if leftover.poll() is None:
                leftover.kill()
                leftover.wait()


def test_every_scrape_during_a_model_swap_sees_one_version_with_its_own_figures() -> None:
    """Found in review: a scrape between the swap's writes saw no model version at all, or the new
    version beside the old threshold; and a model without a target kept the previous one's."""
    from prometheus_client import generate_latest  # noqa: PLC0415
    from prometheus_client.parser import text_string_to_metric_families  # noqa: PLC0415

    registry = CollectorRegistry()
    metrics = WorkerMetrics(registry, clock=lambda: 0.0)
    metrics.set_model("v-old", 0.1, 1.6e9, 10.0, 0.01, np.linspace(0, 1, 100))
    scrapes: list[bytes] = []
    for gauge in (metrics.model_info, metrics.threshold, metrics.target_flag_rate):
        for name in ("set", "remove"):
            if hasattr(gauge, name):
                real = getattr(gauge, name)

                def then_scrape(*args: Any, real: Any = real) -> None:
                    real(*args)
                    scrapes.append(generate_latest(registry))

                setattr(gauge, name, then_scrape)
    real_labels = metrics.model_info.labels

    def labels(*args: Any) -> Any:  # the new version's series is set through its child
        child = real_labels(*args)
        real_set = child.set

        def set_then_scrape(value: float) -> None:
            real_set(value)
            scrapes.append(generate_latest(registry))

        child.set = set_then_scrape
        return child

    metrics.model_info.labels = labels  # type: ignore[method-assign]
    metrics.set_model("v-new", 0.1, None, 20.0, None, np.linspace(0, 1, 100))
    for text in scrapes:
        samples = [s for f in text_string_to_metric_families(text.decode()) for s in f.samples]
        versions = [s.labels["version"] for s in samples if s.name == "kestrel_model_info"]
        threshold = next(s.value for s in samples if s.name == "kestrel_threshold")
        target = next(s.value for s in samples if s.name == "kestrel_target_flag_rate")
        # Never no version; the new one only beside its own figures (for one write, both versions:
        # the new series is set before the old one goes).
        assert versions, "no model version exported"
        assert "v-new" not in versions or (threshold == 20.0 and math.isnan(target)), (versions, threshold)
    assert registry.get_sample_value("kestrel_model_info", {"version": "v-new"}) == 1
    assert math.isnan(registry.get_sample_value("kestrel_target_flag_rate") or 0.0)
    assert math.isnan(registry.get_sample_value("kestrel_model_created_timestamp_seconds") or 0.0)
