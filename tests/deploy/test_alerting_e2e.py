"""End to end: worker -> real Prometheus (shipped rules) -> real Alertmanager (shipped routing) -> webhook.

Everything listens on 127.0.0.1. The rules are the shipped file unchanged (the anomaly alert has no
``for:``); the Alertmanager config is the shipped one with every receiver pointed at a webhook
server inside this test. Needs the Debian packages ``prometheus`` and ``prometheus-alertmanager``.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import orjson
import pytest
import yaml
from deploy_paths import ALERTMANAGER_CONFIG, REPO, RULES, require_tool
from kafka import KafkaProducer
from kafka.admin import KafkaAdminClient, NewTopic

from worker.embedded_broker import free_port

pytestmark = [pytest.mark.kafka, pytest.mark.slow]
ANOMALY_ALERT = "KestrelAnomaliesDetected"


def wait_for(condition: Callable[[], bool], timeout_s: float, what: str) -> None:
    """Poll ``condition`` every 0.2 s; fail naming ``what`` after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
        time.sleep(0.2)


def http_get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=2) as reply:
            return int(reply.status), reply.read()
    except urllib.error.HTTPError as exc:
        return int(exc.code), b""
    except OSError:
        return 0, b""


class Webhook:
    """A local Alertmanager webhook receiver that keeps every notification it is sent."""

    def __init__(self) -> None:
        self.notifications: list[dict[str, Any]] = []
        lock = threading.Lock()
        received = self.notifications

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                with lock:
                    received.append({"path": self.path, **json.loads(body)})
                self.send_response(200)
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                return

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def firing(self, alertname: str) -> list[dict[str, Any]]:
        """(notification, alert) pairs flattened: the alerts named ``alertname`` that fire."""
        return [
            {"receiver": n["receiver"], "path": n["path"], **alert}
            for n in list(self.notifications)
            for alert in n["alerts"]
            if alert["labels"].get("alertname") == alertname and alert["status"] == "firing"
        ]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class Service:
    """A subprocess with its output in a log file, stopped with SIGTERM then SIGKILL."""

    def __init__(self, name: str, command: list[str], log_dir: Path) -> None:
        self.name = name
        self.log_path = log_dir / f"{name}.log"
        self._log = self.log_path.open("wb")
        self.process = subprocess.Popen(command, cwd=REPO, stdout=self._log, stderr=subprocess.STDOUT)

    def alive(self) -> bool:
        return self.process.poll() is None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-4000:]

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        self._log.close()


def alertmanager_config_for(webhook_url: str) -> dict[str, Any]:
    """The shipped config with each receiver's notifications sent to ``webhook_url/<receiver>``."""
    config: dict[str, Any] = yaml.safe_load(ALERTMANAGER_CONFIG.read_text(encoding="utf-8"))
    for receiver in config["receivers"]:
        name = receiver["name"]  # keep the name, replace how it notifies
        for key in [k for k in receiver if k.endswith("_configs")]:
            del receiver[key]
        receiver["webhook_configs"] = [{"url": f"{webhook_url}/{name}", "send_resolved": False}]
    return config


def prometheus_config_for(worker_port: int, alertmanager_port: int) -> dict[str, Any]:
    """Short intervals for a test; the shipped rule file; the job name the rules select on."""
    return {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(RULES)],
        "alerting": {"alertmanagers": [{"static_configs": [{"targets": [f"127.0.0.1:{alertmanager_port}"]}]}]},
        "scrape_configs": [
            {"job_name": "kestrel-worker", "static_configs": [{"targets": [f"127.0.0.1:{worker_port}"]}]}
        ],
    }


@pytest.fixture
def services(tmp_path: Path) -> Iterator[list[Service]]:
    started: list[Service] = []
    yield started
    for service in reversed(started):
        service.stop()


def _create_topics(bootstrap: str) -> dict[str, str]:
    tag = uuid.uuid4().hex[:10]
    names = {"input": f"events-{tag}", "output": f"anomalies-{tag}", "dlq": f"dlq-{tag}", "group": f"group-{tag}"}
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        admin.create_topics([NewTopic(names[t], 1, 1) for t in ("input", "output", "dlq")])
    finally:
        admin.close()
    return names


def _produce(bootstrap: str, topic: str, events: list[dict[str, Any]]) -> None:
    producer = KafkaProducer(bootstrap_servers=bootstrap, linger_ms=5)
    try:
        for future in [producer.send(topic, value=orjson.dumps(event)) for event in events]:
            future.get(10)
    finally:
        producer.close()


def _worker_anomalies(port: int) -> float:
    status, body = http_get(f"http://127.0.0.1:{port}/metrics")
    if status != 200:
        return 0.0
    for line in body.decode().splitlines():
        if line.startswith('kestrel_events_total{outcome="anomaly"}'):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def _prometheus_has(port: int, query: str) -> bool:
    status, body = http_get(f"http://127.0.0.1:{port}/api/v1/query?" + urllib.parse.urlencode({"query": query}))
    return status == 200 and bool(json.loads(body)["data"]["result"])


def test_anomalous_events_page_through_prometheus_and_alertmanager(
    kafka_broker: Any, tiny_model: Any, services: list[Service], tmp_path: Path
) -> None:
    prometheus = require_tool("prometheus", "Debian package prometheus")
    alertmanager = require_tool("alertmanager", "Debian package prometheus-alertmanager", "prometheus-alertmanager")
    bootstrap = kafka_broker.bootstrap_servers
    topics = _create_topics(bootstrap)
    webhook = Webhook()
    try:
        worker_port, prometheus_port, alertmanager_port = free_port(), free_port(), free_port()
        worker = Service(
            "worker",
            [sys.executable, "-m", "worker", "--model", str(tiny_model.path), "--bootstrap-servers", bootstrap,
             "--input-topic", topics["input"], "--output-topic", topics["output"],
             "--dead-letter-topic", topics["dlq"], "--group-id", topics["group"],
             "--metrics-host", "127.0.0.1", "--metrics-port", str(worker_port), "--log-format", "text"],
            tmp_path,
        )  # fmt: skip
        services.append(worker)
        (tmp_path / "alertmanager.yml").write_text(yaml.safe_dump(alertmanager_config_for(webhook.url)))
        services.append(
            Service(
                "alertmanager",
                [
                    alertmanager,
                    f"--config.file={tmp_path / 'alertmanager.yml'}",
                    f"--storage.path={tmp_path / 'am'}",
                    f"--web.listen-address=127.0.0.1:{alertmanager_port}",
                    "--cluster.listen-address=",
                ],
                tmp_path,
            )
        )
        (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(prometheus_config_for(worker_port, alertmanager_port)))
        services.append(
            Service(
                "prometheus",
                [
                    prometheus,
                    f"--config.file={tmp_path / 'prometheus.yml'}",
                    f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                    f"--web.listen-address=127.0.0.1:{prometheus_port}",
                ],
                tmp_path,
            )
        )

        def watching(condition: Callable[[], bool]) -> Callable[[], bool]:
            """``condition``, failing at once with its log when any service has exited."""

            def check() -> bool:
                for service in services:
                    assert service.alive(), f"{service.name} exited:\n{service.log()}"
                return condition()

            return check

        wait_for(watching(lambda: http_get(f"http://127.0.0.1:{worker_port}/readyz")[0] == 200), 60, "worker ready")
        wait_for(watching(lambda: http_get(f"http://127.0.0.1:{alertmanager_port}/-/ready")[0] == 200), 30, "AM ready")
        wait_for(
            watching(lambda: _prometheus_has(prometheus_port, 'kestrel_ready{job="kestrel-worker"} == 1')),
            60,
            "Prometheus scraping a ready worker",
        )
        assert webhook.firing(ANOMALY_ALERT) == [], "no anomaly alert before any anomaly"

        _produce(bootstrap, topics["input"], tiny_model.normal_events[:50] + tiny_model.attack_events[:50])
        wait_for(watching(lambda: _worker_anomalies(worker_port) > 0), 60, "the worker flagging anomalies")
        wait_for(
            watching(lambda: _prometheus_has(prometheus_port, f'ALERTS{{alertname="{ANOMALY_ALERT}"}}')),
            60,
            f"Prometheus firing {ANOMALY_ALERT}",
        )
        wait_for(watching(lambda: bool(webhook.firing(ANOMALY_ALERT))), 90, f"{ANOMALY_ALERT} at the webhook")
    finally:
        webhook.close()

    alert = webhook.firing(ANOMALY_ALERT)[0]
    assert alert["receiver"] == "kestrel-anomalies" and alert["path"] == "/kestrel-anomalies"
    assert alert["labels"]["severity"] == "warning" and alert["labels"]["category"] == "anomaly"
    assert alert["labels"]["job"] == "kestrel-worker"
    assert "events scored above the model threshold" in alert["annotations"]["description"]
    assert alert["annotations"]["runbook"].strip()
