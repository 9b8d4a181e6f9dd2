"""The demo, step by step: train, start broker + worker, replay, watch, summarise, clean up.

    python -m deploy.demo [--events N] [--rate R] [--keep-running] ...

Every step that fails says which step and why; everything started is stopped on exit,
Ctrl-C included, unless ``--keep-running`` asks to leave broker and worker up for exploring.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

from deploy.demo.tally import Tally, metric_sum, parse_metrics
from detector.cli_help import DefaultsHelpFormatter
from detector.table_reader import SourceLine, iter_lines
from worker.embedded_broker import EmbeddedBroker, free_port
from worker.kafka_publisher import KafkaPublisher
from worker.replay import ReplayOptions, replay
from worker.settings import KafkaSettings
from worker.topic_tools import TopicTail, create_topics

ROOT = Path(__file__).resolve().parents[2]
STEPS = 5
T = TypeVar("T")
MALFORMED = [b"", b"{not json", b"\xff\xfe\x00", b"[1, 2, 3]", b'{"duration": "NaN"}', b'{"src_bytes": true}']


class StepError(RuntimeError):
    """A demo step failed; the message names the step."""


def step(number: int, title: str, action: Callable[[], T]) -> T:
    print(f"[{number}/{STEPS}] {title}", flush=True)
    try:
        return action()
    except StepError:
        raise
    except Exception as exc:
        raise StepError(f"step {number} ({title}) failed: {type(exc).__name__}: {exc}") from exc


def run_json(command: list[str], what: str) -> dict[str, Any]:
    """Run a project command (stderr passes through, e.g. a progress bar); parse its JSON stdout."""
    done = subprocess.run(command, stdout=subprocess.PIPE, text=True, cwd=ROOT, check=False)
    if done.returncode != 0:
        raise StepError(f"{what} failed (exit {done.returncode}); see the message above")
    result: dict[str, Any] = json.loads(done.stdout)
    return result


def train(args: argparse.Namespace, model: Path, report: Path) -> dict[str, Any]:
    if args.reuse_model and (model / "manifest.json").is_file():
        print(f"      reusing {model}")
    else:
        fit = [sys.executable, "-m", "training", "fit", str(args.train), "--out", str(model), "--truth-column",
               "label", "--normal-value", "normal", "--drop-columns", "difficulty", "--id-column", "event_id",
               "--timestamp-column", "ts", "--target-fpr", str(args.target_fpr)]  # fmt: skip
        fit += ["--epochs", str(args.epochs)] if args.epochs else []
        summary = run_json(fit, "training")
        print(f"      model {summary['model_version']} trained on {summary['n_normal_rows']} normal rows "
              f"in {summary['fit_seconds']} s")  # fmt: skip
    evaluation = run_json(
        [sys.executable, "-m", "training", "evaluate", str(model), str(args.test), "--truth-column", "label",
         "--normal-value", "normal", "--drop-columns", "difficulty", "--report", str(report)], "evaluation",
    )  # fmt: skip
    print(f"      offline on {args.test.name}: AUROC {evaluation['auroc']:.3f}, recall {evaluation['recall']:.3f}, "
          f"FPR {evaluation['false_positive_rate']:.3f}; report {report / 'report.html'}")  # fmt: skip
    return evaluation


def start_worker(args: argparse.Namespace, model: Path, bootstrap: str, log: Path) -> subprocess.Popen[bytes]:
    """Start the worker (in a session of its own: see :func:`main`); :func:`wait_ready` waits for it."""
    env = dict(os.environ, WORKER_LOG_FORMAT="text", WORKER_LOG_LEVEL="INFO")
    command = [sys.executable, "-m", "worker", "--model", str(model), "--bootstrap-servers", bootstrap,
               "--input-topic", args.topic, "--output-topic", f"{args.topic}.anomalies", "--dead-letter-topic",
               f"{args.topic}.dlq", "--group-id", "kestrel-demo", "--metrics-host", "127.0.0.1",
               "--metrics-port", str(args.metrics_port)]  # fmt: skip
    with log.open("wb") as out:
        # Its own session: Ctrl-C reaches only the demo, which stops the worker (a clean drain) before
        # the broker it drains to.
        process = subprocess.Popen(
            command, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    return process


def wait_ready(args: argparse.Namespace, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 90
    while http_status(f"http://127.0.0.1:{args.metrics_port}/readyz") != 200:
        if process.poll() is not None:
            raise StepError(f"the worker exited with code {process.returncode}; see {log}")
        if time.monotonic() > deadline:
            raise StepError(f"the worker was not ready within 90 s; see {log}")
        time.sleep(0.2)


def http_status(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:  # noqa: S310 - local address
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)
    except OSError:
        return 0


def read_metrics(port: int) -> dict[str, float]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as response:
            return parse_metrics(response.read().decode())
    except OSError:
        return {}


def counted_lines(args: argparse.Namespace, tally: Tally, stop: threading.Event) -> Iterator[SourceLine]:
    for line in itertools.islice(iter_lines(args.test), args.events):
        if stop.is_set():
            return
        if line.record is not None:
            tally.count_sent(line.record)
        yield line


def send_events(
    args: argparse.Namespace, bootstrap: str, tally: Tally, failure: list[BaseException], stop: threading.Event
) -> None:
    try:
        sink = KafkaPublisher(KafkaSettings(bootstrap_servers=bootstrap))
        for value in MALFORMED[: args.malformed]:
            sink.send(args.topic, value, None, [])
            tally.sent_malformed += 1
        # The test file has no id or time: add them (the model was trained with these columns).
        options = ReplayOptions(topic=args.topic, rate=args.rate, add_id="event_id", add_timestamp="ts",
                                key_field="event_id", drop=frozenset({"difficulty"}), id_prefix="demo")  # fmt: skip
        replay(counted_lines(args, tally, stop), sink, options)
        sink.close(5.0)
    except BaseException as exc:  # reported by the main thread
        failure.append(exc)


def watch(args: argparse.Namespace, bootstrap: str, tally: Tally) -> dict[str, Any]:
    """Replay in a thread; show progress every second; return once every event is accounted for."""
    failure: list[BaseException] = []
    stop = threading.Event()
    sender = threading.Thread(target=send_events, args=(args, bootstrap, tally, failure, stop), daemon=True)
    tail = TopicTail(bootstrap, f"{args.topic}.anomalies")
    start = time.monotonic()
    sender.start()
    shown, processed, metrics, last_line = 0, 0.0, {}, 0.0
    try:
        while True:
            for record in tail.poll(timeout_ms=500):
                anomaly = tally.add_anomaly(record.value, record.timestamp_ms)
                if anomaly is not None and shown < args.show:
                    shown += 1
                    print(f"      ANOMALY {anomaly['event_id']} score {anomaly['score']:.2f} "
                          f"(threshold {anomaly['threshold']:.2f}, p={anomaly['p_value']:.4f}) true label "
                          f"{anomaly['event'].get('label')!r}: {anomaly['explanation']['text']}")  # fmt: skip
            metrics = read_metrics(args.metrics_port) or metrics
            processed = metric_sum(metrics, "kestrel_events_total")
            sent = tally.sent_normal + tally.sent_anomalous + tally.sent_malformed
            elapsed = time.monotonic() - start
            # Records, repeated ones included: the worker counts an event scored again after a
            # restart each time (found in review: counting distinct ids, the demo waited to its timeout).
            done = not sender.is_alive() and processed >= sent and tally.records >= anomaly_count(metrics)
            if elapsed - last_line >= 1.0 or done:
                last_line = elapsed
                print(f"      {elapsed:6.1f} s  sent {sent:>6}  scored {processed - rejected(metrics):>6.0f}  "
                      f"flagged {tally.flagged:>5}  rejected {rejected(metrics):>3.0f}  "
                      f"{processed / max(elapsed, 1e-9):,.0f} events/s", flush=True)  # fmt: skip
            if failure:
                raise StepError(f"replaying failed: {type(failure[0]).__name__}: {failure[0]}")
            if done:
                break
            if elapsed > args.timeout:
                raise StepError(f"not every event was processed within {args.timeout} s (sent {sent}, "
                                f"processed {processed:.0f})")  # fmt: skip
    finally:
        # Interrupted or failed: the replay stops at its next event and closes its producer while
        # the broker still runs (a producer left to the interpreter's exit waits for a dead broker).
        stop.set()
        sender.join(10.0)
        tail.close()
    return {"seconds": time.monotonic() - start, "metrics": metrics}


def rejected(metrics: dict[str, float]) -> float:
    return metric_sum(metrics, "kestrel_events_total", outcome="rejected")


def anomaly_count(metrics: dict[str, float]) -> float:
    return metric_sum(metrics, "kestrel_events_total", outcome="anomaly")


def stop_process(process: subprocess.Popen[bytes] | None, timeout_s: float = 30) -> int | None:
    if process is None or process.poll() is not None:
        return None if process is None else process.returncode
    process.send_signal(signal.SIGTERM)
    try:
        return process.wait(timeout_s)
    except subprocess.TimeoutExpired:
        process.kill()
        return process.wait(5)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    data = ROOT / "data" / "nsl-kdd"
    p = argparse.ArgumentParser(
        prog="python -m deploy.demo",
        description=__doc__.splitlines()[0],
        epilog="Exit codes: 0 every event accounted for, 1 a step failed or events unaccounted, 130 interrupted.",
        formatter_class=DefaultsHelpFormatter,
    )
    p.add_argument("--events", type=int, default=None, help="events to replay (default: the whole test file)")
    p.add_argument("--rate", type=float, default=2000.0, help="events per second (0 = as fast as possible)")
    p.add_argument("--train", type=Path, default=data / "KDDTrain+_20Percent.csv.gz", help="training file")
    p.add_argument("--test", type=Path, default=data / "KDDTest+.csv.gz", help="file replayed into the stream")
    p.add_argument("--out", type=Path, default=ROOT / "out" / "demo", help="model, report, logs")
    p.add_argument("--broker-port", type=int, default=0, help="embedded broker port (0 = any free port)")
    p.add_argument("--metrics-port", type=int, default=0, help="worker metrics port (0 = any free port)")
    p.add_argument("--topic", default="demo.events", help="input topic")
    p.add_argument("--target-fpr", type=float, default=0.05, help="false-positive rate to calibrate for")
    p.add_argument("--epochs", type=int, default=None, help="training epochs (default: the trainer's)")
    p.add_argument("--reuse-model", action="store_true", help="skip training when OUT/model exists")
    p.add_argument("--malformed", type=int, default=len(MALFORMED), help="malformed messages to send (DLQ)")
    p.add_argument("--show", type=int, default=5, help="anomalies to print with their explanation")
    p.add_argument("--timeout", type=float, default=600.0, help="seconds to wait for the stream to drain")
    p.add_argument("--keep-running", action="store_true", help="leave broker and worker running at the end")
    p.add_argument("--summary-json", type=Path, default=None, help="also write the summary here")
    args = p.parse_args(argv)
    args.metrics_port = args.metrics_port or free_port()
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    model, report, log = args.out / "model", args.out / "report", args.out / "worker.log"
    broker: EmbeddedBroker | None = None
    worker: subprocess.Popen[bytes] | None = None
    # The broker and the worker run in sessions of their own, so a terminal's Ctrl-C or hang-up
    # reaches only this process, which then stops the worker (a clean drain) before the broker.
    for stop_signal in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(stop_signal, _interrupt)
    keep = False
    summary_out: dict[str, Any] | None = None
    try:
        offline = step(
            1, "training on the normal connections of the NSL-KDD training file", lambda: train(args, model, report)
        )
        broker = step(
            2,
            "starting the embedded Kafka broker (Tansu, in memory)",
            lambda: EmbeddedBroker(args.broker_port or None, own_session=True).start(),
        )
        bootstrap = broker.bootstrap_servers
        step(
            2,
            f"creating topics on {bootstrap}",
            lambda: create_topics(
                bootstrap, [(args.topic, 3), (f"{args.topic}.anomalies", 1), (f"{args.topic}.dlq", 1)]
            ),
        )
        worker = step(3, "starting the worker (python -m worker)", lambda: start_worker(args, model, bootstrap, log))
        step(3, "waiting for the worker to be ready", lambda: wait_ready(args, worker, log))
        print(f"      metrics: http://127.0.0.1:{args.metrics_port}/metrics  (worker log: {log})")
        tally = Tally(label_field="label", normal_value="normal")
        rate = "as fast as possible" if args.rate <= 0 else f"{args.rate:,.0f} events/s"
        run = step(
            4, f"replaying {args.test.name} into '{args.topic}' at {rate}", lambda: watch(args, bootstrap, tally)
        )
        pids = {"worker": worker.pid, "broker": broker.pid}
        summary = step(5, "summary", lambda: summarise(args, tally, run, offline, model, report, bootstrap, pids))
        summary_out = summary
        keep = args.keep_running
        if keep:
            print(
                f"\nLeft running: broker {bootstrap} (pid {broker.pid}), worker pid {worker.pid}, metrics "
                f"http://127.0.0.1:{args.metrics_port}/metrics; topics {args.topic} (input), "
                f"{args.topic}.anomalies, {args.topic}.dlq.\n"
                f"  Follow the anomalies: python -m worker.tail --topic {args.topic}.anomalies "
                f"--bootstrap-servers {bootstrap}\n"
                f"  Stop them with: kill {worker.pid} {broker.pid}"
            )
        return 0 if summary["unaccounted"] == 0 else 1
    except StepError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("\ninterrupted: stopping everything", file=sys.stderr)
        return 130
    finally:
        code = None
        if not keep:
            # A second Ctrl-C (or a hang-up) must not cut the clean-up short and orphan the children.
            for stop_signal in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
                signal.signal(stop_signal, signal.SIG_IGN)
            try:
                code = stop_process(worker)
                if code not in (None, 0):
                    print(f"warning: the worker exited with code {code}; see {log}", file=sys.stderr)
            finally:
                if broker is not None:
                    broker.stop()
        if summary_out is not None and args.summary_json:  # written after clean-up, so "stopped" is true
            final = summary_out | {"stopped": not keep, "worker_exit_code": code}
            args.summary_json.write_text(json.dumps(final, indent=2))


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def summarise(
    args: argparse.Namespace,
    tally: Tally,
    run: dict[str, Any],
    offline: dict[str, Any],
    model: Path,
    report: Path,
    bootstrap: str,
    pids: dict[str, int],
) -> dict[str, Any]:
    metrics = run["metrics"]
    processed = metric_sum(metrics, "kestrel_events_total")
    bound = "bounded by the replay rate" if args.rate > 0 else "replayed as fast as possible, on a shared machine"
    summary = tally.summary() | {
        "processed": int(processed),
        "rejected_to_dead_letter": int(rejected(metrics)),
        # Never below 0: an event scored again after a restart counts twice in ``processed``.
        "unaccounted": max(0, int(tally.sent_normal + tally.sent_anomalous + tally.sent_malformed - processed)),
        "scored_again": max(0, int(processed - (tally.sent_normal + tally.sent_anomalous + tally.sent_malformed))),
        "throughput_events_per_s": round(processed / run["seconds"], 1),
        "offline_auroc": offline["auroc"],
        "model": str(model),
        "report": str(report / "report.html"),
        "metrics_url": f"http://127.0.0.1:{args.metrics_port}/metrics",
        "broker": bootstrap,
        "pids": pids,
    }
    print(
        f"      events {summary['events_sent']} ({summary['attacks_sent']} attacks, {summary['normal_sent']} normal, "
        f"{summary['malformed_sent']} malformed -> dead-letter topic)\n"
        f"      flagged {summary['flagged']}: precision {summary['precision']:.3f}, recall {summary['recall']:.3f}, "
        f"false-positive rate on normal traffic {summary['false_positive_rate']:.3f} "
        f"(calibrated for {args.target_fpr})\n"
        f"      unaccounted events: {summary['unaccounted']} (scored again after a restart: "
        f"{summary['scored_again']}); throughput {summary['throughput_events_per_s']:,.0f} "
        f"events/s ({bound}; see benchmarks/ for capacity)\n"
        f"      end-to-end latency p50 {summary['latency_ms']['p50']} ms, p95 {summary['latency_ms']['p95']} ms, "
        f"p99 {summary['latency_ms']['p99']} ms\n"
        f"      report: {summary['report']}\n      metrics: {summary['metrics_url']}"
    )  # fmt: skip
    return summary
