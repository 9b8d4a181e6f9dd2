"""What a consumer-group rebalance under load repeats or loses: exact accounting on the real broker.

One worker (``python -m worker``) reads a steady stream; a second joins, reads a while and leaves
with SIGTERM (a scale 1 -> 2 -> 1, as a rolling update or an autoscaler does), ``--cycles`` times.
Every event sent is one the model flags, so every input offset must give exactly one anomaly
record: the script reads the output topic back and prints the events produced, the records read,
the repeated and the missing ones, per client. Not a test (timing and load decide how often a
rebalance lands in the middle of a batch); ``tests/worker/test_worker_kafka.py`` holds one cycle.

    python benchmarks/rebalance_repeats.py --client both --rate 300 --cycles 3
    python benchmarks/rebalance_repeats.py --client kafka-python --rate 1500

Uses the embedded broker, or ``KAFKA_BOOTSTRAP_SERVERS`` when set.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests"), str(ROOT / "tests" / "worker")]

import orjson  # noqa: E402
from expectations import expected_flags  # noqa: E402
from kafka import KafkaProducer  # noqa: E402
from kafka_harness import TopicReader, Topics, WorkerProcess, committed_offsets, wait_for  # noqa: E402
from tiny_model import TinyModel, build_tiny_model  # noqa: E402

from worker.embedded_broker import EmbeddedBroker  # noqa: E402

PARTITIONS = 4


@contextmanager
def _bootstrap() -> Iterator[str]:
    configured = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    if configured:
        yield configured
        return
    with EmbeddedBroker() as broker:
        yield broker.bootstrap_servers


def _flagged_pool(model: TinyModel) -> list[dict[str, Any]]:
    """Attack events the model flags whatever the batch (its offline expectation says so)."""
    expected = expected_flags(model.path, model.attack_events)
    return [e for e in model.attack_events if e["event_id"] in expected.must_flag]


class _Stream:
    """Sends ``pool`` events, renumbered, at ``rate`` a second from a thread until stopped."""

    def __init__(self, bootstrap: str, topic: str, pool: list[dict[str, Any]], rate: float) -> None:
        self.sent: list[str] = []
        self.ends: dict[int, int] = {}
        self._args = (bootstrap, topic, pool, rate)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        bootstrap, topic, pool, rate = self._args
        producer = KafkaProducer(bootstrap_servers=bootstrap, linger_ms=5)
        futures = []
        start = time.monotonic()
        while not self._stop.is_set():
            i = len(self.sent)
            event = {**pool[i % len(pool)], "event_id": f"ev-{i}"}
            futures.append(producer.send(topic, orjson.dumps(event)))
            self.sent.append(event["event_id"])
            delay = start + (i + 1) / rate - time.monotonic()
            if delay > 0:
                time.sleep(delay)  # pacing the stream
        producer.flush(60)
        for future in futures:
            meta = future.get(30)
            self.ends[meta.partition] = max(self.ends.get(meta.partition, 0), meta.offset + 1)
        producer.close()

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(120)


def run(client: str, model: TinyModel, bootstrap: str, rate: float, cycles: int) -> dict[str, Any]:
    topics = Topics.unique(bootstrap, partitions=PARTITIONS)
    stream = _Stream(bootstrap, topics.input, _flagged_pool(model), rate)
    first = WorkerProcess(model.path, bootstrap, topics, client=client)
    exit_codes: list[int] = []
    try:
        first.wait_ready(60)
        stream.start()
        time.sleep(3)
        for _ in range(cycles):
            second = WorkerProcess(model.path, bootstrap, topics, client=client)
            try:
                second.wait_ready(60)
                time.sleep(4)
                exit_codes.append(second.terminate(60))
            finally:
                second.stop_quietly()
            time.sleep(5)
        stream.stop()
        wait_for(
            lambda: committed_offsets(bootstrap, topics.group, topics.input, stream.ends) == stream.ends,
            120,
            "every offset committed",
            1.0,
        )
        exit_codes.append(first.terminate(60))
    finally:
        first.stop_quietly()
    reader = TopicReader(bootstrap, topics.output)
    try:
        keys = [m.key.decode() for m in reader.drain_all(quiet_s=3.0)]
    finally:
        reader.close()
    counts = Counter(keys)
    return {
        "client": client,
        "produced": len(stream.sent),
        "records": len(keys),
        "repeated": sum(n - 1 for n in counts.values() if n > 1),
        "missing": len(set(stream.sent) - set(counts)),
        "exit_codes": exit_codes,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--client", choices=["kafka-python", "confluent", "both"], default="both")
    parser.add_argument("--rate", type=float, default=300.0, help="events per second (default 300)")
    parser.add_argument("--cycles", type=int, default=3, help="joins and leaves of the second worker (default 3)")
    args = parser.parse_args()
    clients = ["kafka-python", "confluent"] if args.client == "both" else [args.client]
    with tempfile.TemporaryDirectory() as scratch, _bootstrap() as bootstrap:
        model = build_tiny_model(Path(scratch) / "model")
        for client in clients:
            result = run(client, model, bootstrap, args.rate, args.cycles)
            counts = ", ".join(f"{k} {result[k]}" for k in ("produced", "records", "repeated", "missing"))
            joins = f"{args.cycles} joins and leaves"
            print(f"{client:12s} {args.rate:.0f} events/s, {joins}: {counts}, exit codes {result['exit_codes']}")


if __name__ == "__main__":
    main()
