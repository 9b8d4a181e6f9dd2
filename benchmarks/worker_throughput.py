"""Worker performance figures against the embedded broker (prints them; not a timed test).

Run: ``.venv/bin/python benchmarks/worker_throughput.py [--events 100000] [--client both] [--overlap both]``

Measures, on NSL-KDD-shaped events with about 5 % attacks, in one run:
1. the pure pipeline alone at batch 500 on one core (torch.set_num_threads(1));
2. per client (``--client kafka-python|confluent|both``): a bare consumer's read rate on the
   topic (kafka-python ``poll(500)`` / librdkafka ``consume(1000)``), and the worker's throughput
   (``python -m worker --kafka-client ...`` subprocess) on the same topic, with ratios and the
   share of the worker's time spent scoring (``kestrel_scoring_seconds_total``); with
   ``--overlap both`` once with ``--overlap-batches true`` (the default) and once ``false``;
3. per client, end-to-end latency at steady 2,000 and 20,000 events/s with the default batch
   wait: anomaly record arrival on the output topic minus the event timestamp (p50/p99), plus the
   worker's own ``kestrel_processing_latency_seconds`` histogram p99 bucket;
4. the worker's resident memory (VmRSS and peak VmHWM).
"""

from __future__ import annotations

import argparse
import math
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import orjson
import torch
from threadpoolctl import threadpool_limits

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests"), str(ROOT / "tests" / "worker")]

from confluent_kafka import Consumer as LibrdkafkaConsumer  # noqa: E402
from confluent_kafka import Producer as LibrdkafkaProducer  # noqa: E402
from kafka import KafkaConsumer  # noqa: E402
from kafka_harness import TopicReader, Topics, WorkerProcess, committed_offsets, produce, wait_for  # noqa: E402
from tiny_model import load_rows, to_event  # noqa: E402

from detector.model import Detector  # noqa: E402
from detector.spec_inference import infer_spec  # noqa: E402
from training.config import TrainConfig  # noqa: E402
from training.fit import FitConfig, fit_detector  # noqa: E402
from worker.embedded_broker import EmbeddedBroker  # noqa: E402
from worker.outcomes import RawRecord  # noqa: E402
from worker.pipeline import score_batch  # noqa: E402
from worker.typed_decode import TypedDecoder  # noqa: E402


def train_model(out_dir: Path) -> Path:
    """The model the worker is measured with: trained with the trainer's defaults on NSL-KDD's normal rows."""
    rows = load_rows(30_000)
    normal = [to_event(r, i, 1_700_000_000.0 + i) for i, r in enumerate(rows) if r["label"] == "normal"]
    spec = infer_spec(normal, id_field="event_id", timestamp_field="ts")
    fit = fit_detector(normal, spec, FitConfig(train=TrainConfig(threads=2, progress=False)))
    return fit.detector.save(out_dir, fit.metadata)


def make_events(n: int, attack_share: float = 0.05) -> list[bytes]:
    rows = load_rows(20_000)
    normal = [r for r in rows if r["label"] == "normal"]
    attack = [r for r in rows if r["label"] != "normal"]
    rng = np.random.default_rng(0)
    is_attack = rng.random(n) < attack_share
    out = []
    for i in range(n):
        pool = attack if is_attack[i] else normal
        out.append(orjson.dumps(to_event(pool[int(rng.integers(len(pool)))], i, time.time())))
    return out


def bare_consumer_rate(bootstrap: str, topic: str, n: int) -> float:
    consumer = KafkaConsumer(
        topic, bootstrap_servers=bootstrap, group_id=f"bare-{time.time_ns()}", auto_offset_reset="earliest",
        enable_auto_commit=False, session_timeout_ms=6000, heartbeat_interval_ms=2000,
    )  # fmt: skip
    seen, start = 0, None
    while seen < n:
        for batch in consumer.poll(timeout_ms=500, max_records=500).values():
            start = start or time.perf_counter()
            seen += len(batch)
    assert start is not None
    rate = seen / (time.perf_counter() - start)
    consumer.close(autocommit=False)
    return rate


def bare_librdkafka_rate(bootstrap: str, topic: str, n: int) -> float:
    consumer = LibrdkafkaConsumer({
        "bootstrap.servers": bootstrap, "group.id": f"bare-{time.time_ns()}", "auto.offset.reset": "earliest",
        "enable.auto.commit": False,
    })  # fmt: skip
    consumer.subscribe([topic])
    seen, start = 0, None
    while seen < n:
        messages = consumer.consume(num_messages=1000, timeout=0.5)
        if messages:
            start = start or time.perf_counter()
            seen += sum(1 for m in messages if m.error() is None)
    assert start is not None
    rate = seen / (time.perf_counter() - start)
    consumer.close()
    return rate


def pipeline_rates(model_dir: Path, values: list[bytes], batch: int = 500, passes: int = 5) -> list[float]:
    """Events/s of ``passes`` timed passes over all events (after one warm-up batch)."""
    torch.set_num_threads(1)
    threadpool_limits(limits=1, user_api="blas")  # as the worker does
    detector = Detector.load(model_dir)
    decoder = TypedDecoder(detector.spec)  # built once per model, as the worker does
    records = [RawRecord("events", 0, i, 0, None, v) for i, v in enumerate(values)]
    score_batch(records[:batch], detector, max_value_bytes=65536, now_s=0.0, decoder=decoder)
    rates = []
    for _ in range(passes):
        start = time.perf_counter()
        for i in range(0, len(records), batch):
            score_batch(records[i : i + batch], detector, max_value_bytes=65536, now_s=0.0, decoder=decoder)
        rates.append(len(records) / (time.perf_counter() - start))
    return rates


def print_pipeline_rate(model_dir: Path, values: list[bytes]) -> float:
    print(f"events: {len(values)}, mean size {np.mean([len(v) for v in values]):.0f} bytes")
    rates = pipeline_rates(model_dir, values)
    detector = Detector.load(model_dir)
    records = [RawRecord("events", 0, i, 0, None, v) for i, v in enumerate(values)]
    flagged = sum(
        len(score_batch(records[i : i + 500], detector, max_value_bytes=65536, now_s=0.0).flagged)
        for i in range(0, len(records), 500)
    )
    print(
        f"model {detector.version}: {flagged:,} of {len(values):,} events flagged ({100 * flagged / len(values):.1f}%)"
    )
    print(
        f"pipeline alone (batch 500, 1 thread): median {np.median(rates):,.0f} events/s over {len(rates)} passes "
        f"(range {min(rates):,.0f}-{max(rates):,.0f})"
    )
    return float(np.median(rates))


def worker_rate(
    model_dir: Path, bootstrap: str, topics: Topics, ends: dict[int, int], client: str, overlap: bool = True
) -> tuple[float, float, WorkerProcess]:
    """The worker's events/s, and the share of its wall time spent scoring (its
    ``kestrel_scoring_seconds_total`` over the same interval; NaN for too short a run)."""
    worker = WorkerProcess(model_dir, bootstrap, topics, client=client, extra=_overlap_flag(overlap))
    worker.wait_ready(60)
    total = sum(ends.values())
    # Rendering /metrics costs the worker CPU (polled every 50 ms it took 13% of its samples), so
    # it is read five times a second and the rate taken between the first and the last reading
    # that fell strictly inside the run: steady-state, whatever the reading interval.
    samples: list[tuple[float, float, float]] = []
    deadline = time.monotonic() + 300
    while not samples or samples[-1][1] < total:
        if time.monotonic() > deadline:
            raise AssertionError(f"the worker did not read all {total} events in 300 s")
        text = worker.metrics_text()
        samples.append((time.perf_counter(), worker.metric("kestrel_events_total", text), worker.metric(SCORING, text)))
        time.sleep(0.2)
    inside = [s for s in samples if 0 < s[1] < total]
    if len(inside) >= 2 and inside[-1][0] - inside[0][0] >= 1.0:
        elapsed = inside[-1][0] - inside[0][0]
        rate = (inside[-1][1] - inside[0][1]) / elapsed
        scoring = (inside[-1][2] - inside[0][2]) / elapsed
    else:  # too short a run to have two readings inside it: whole run, reading interval included
        first = next(t for t, n, _ in samples if n > 0)
        rate, scoring = total / max(samples[-1][0] - first, 1e-9), float("nan")
    wait_for(lambda: committed_offsets(bootstrap, topics.group, topics.input, ends) == ends, 30, "commit")
    return rate, scoring, worker


SCORING = "kestrel_scoring_seconds_total"


def _share(value: float) -> str:
    return "n/a (too short a run)" if math.isnan(value) else f"{value:.0%}"


def _overlap_flag(overlap: bool) -> list[str]:
    return ["--overlap-batches", "true" if overlap else "false"]


def steady_latency(
    model_dir: Path, bootstrap: str, rate: int, seconds: float, client: str, overlap: bool = True
) -> dict[str, float]:
    topics = Topics.unique(bootstrap)
    worker = WorkerProcess(model_dir, bootstrap, topics, client=client, extra=_overlap_flag(overlap))
    out = TopicReader(bootstrap, topics.output)
    try:
        worker.wait_ready(60)
        template = [orjson.loads(v) for v in make_events(2000)]
        producer = LibrdkafkaProducer({"bootstrap.servers": bootstrap, "linger.ms": 1})  # the cheaper generator
        start, sent = time.perf_counter(), 0
        while sent < rate * seconds:
            due = int((time.perf_counter() - start) * rate)
            while sent < due:
                event = template[sent % len(template)]
                event["ts"] = time.time()
                event["event_id"] = f"lat-{sent}"
                producer.produce(topics.input, orjson.dumps(event))
                sent += 1
            producer.poll(0)
            time.sleep(0.002)  # pacing the generator
        producer.flush(30)
        wait_for(lambda: worker.metric("kestrel_events_total") >= sent, 60, "latency run drained")
        arrivals: list[float] = []
        for message in out.drain_all():
            record = orjson.loads(message.value)
            ts = record["event"]["ts"]
            arrivals.append(message.timestamp / 1000.0 - ts)
        lat = np.array(arrivals)
        rss, hwm = _memory(worker.process.pid)
        return {
            "sent": float(sent), "anomalies": float(len(lat)),
            "p50_ms": float(np.percentile(lat, 50) * 1000), "p99_ms": float(np.percentile(lat, 99) * 1000),
            "worker_hist_p99_le_s": _hist_p99(worker.metrics_text()), "rss_mb": rss, "hwm_mb": hwm,
        }  # fmt: skip
    finally:
        out.close()
        worker.terminate(30)


def _hist_p99(text: str) -> float:
    buckets = []
    for line in text.splitlines():
        if line.startswith("kestrel_processing_latency_seconds_bucket"):
            le = line.split('le="')[1].split('"')[0]
            buckets.append((float(le), float(line.rsplit(" ", 1)[1])))
    total = buckets[-1][1]
    return next(le for le, count in buckets if count >= 0.99 * total)


def _memory(pid: int) -> tuple[float, float]:
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(("VmRSS", "VmHWM")):
            name, value = line.split(":")
            fields[name] = float(value.split()[0]) / 1024
    return fields["VmRSS"], fields["VmHWM"]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--latency-seconds", type=float, default=15.0)
    parser.add_argument("--pipeline-only", action="store_true", help="only the pure-pipeline figure (no broker)")
    parser.add_argument("--model", type=Path, default=None, help="model to measure (default: train one, ~15 s)")
    parser.add_argument("--client", choices=["kafka-python", "confluent", "both"], default="both")
    parser.add_argument(
        "--overlap", choices=["on", "off", "both"], default="on",
        help="the worker's WORKER_OVERLAP_BATCHES (both: measure each, and their ratio)",
    )  # fmt: skip
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = args.model or train_model(Path(tmp) / "model")
        if args.pipeline_only:
            print_pipeline_rate(model_dir, make_events(args.events))
        else:
            clients = ["kafka-python", "confluent"] if args.client == "both" else [args.client]
            overlaps = {"on": [True], "off": [False], "both": [True, False]}[args.overlap]
            run_all(model_dir, args.events, args.latency_seconds, clients, overlaps)


def run_all(model_dir: Path, n_events: int, latency_seconds: float, clients: list[str], overlaps: list[bool]) -> None:
    bare_rate = {"kafka-python": bare_consumer_rate, "confluent": bare_librdkafka_rate}
    with EmbeddedBroker() as broker:
        bootstrap = broker.bootstrap_servers
        values = make_events(n_events)
        pipeline = print_pipeline_rate(model_dir, values)
        topics = Topics.unique(bootstrap)
        ends = produce(bootstrap, topics.input, values, linger_ms=20, batch_size=256 * 1024)
        rates: dict[tuple[str, bool], float] = {}
        for client in clients:
            bare = bare_rate[client](bootstrap, topics.input, len(values))
            print(f"[{client}] bare consumer read rate: {bare:,.0f} msgs/s")
            for overlap in overlaps:
                label = f"{client}, overlap {'on' if overlap else 'off'}"
                group = f"{topics.group}-{client}-{int(overlap)}"
                worker_topics = Topics(topics.input, topics.output, topics.dlq, group)
                rate, scoring, worker = worker_rate(model_dir, bootstrap, worker_topics, ends, client, overlap)
                rss, hwm = _memory(worker.process.pid)
                worker.terminate(30)
                rates[client, overlap] = rate
                print(
                    f"[{label}] worker throughput: {rate:,.0f} events/s = {rate / bare:.2f}x its bare consumer, "
                    f"{rate / pipeline:.2f}x the pure pipeline, scoring {_share(scoring)} of its time; "
                    f"RSS after {rss:.0f} MB, peak {hwm:.0f} MB"
                )
            if len(overlaps) == 2:
                print(f"[{client}] overlap on / off: {rates[client, True] / rates[client, False]:.2f}x")
        for overlap in overlaps:
            if len(clients) == 2:
                ratio = rates["confluent", overlap] / rates["kafka-python", overlap]
                print(f"confluent / kafka-python worker, overlap {'on' if overlap else 'off'}: {ratio:.2f}x")
        for client in clients:
            for steady in (2000, 20000):
                lat = steady_latency(model_dir, bootstrap, steady, latency_seconds, client, overlaps[0])
                print(
                    f"[{client}] steady {steady:,} events/s for {latency_seconds:.0f} s: {lat['anomalies']:.0f} "
                    f"anomaly records, end-to-end p50 {lat['p50_ms']:.0f} ms, p99 {lat['p99_ms']:.0f} ms "
                    f"(worker histogram p99 <= {lat['worker_hist_p99_le_s']} s); RSS {lat['rss_mb']:.0f} MB, "
                    f"peak {lat['hwm_mb']:.0f} MB"
                )


if __name__ == "__main__":
    main()
