"""A busy librdkafka consumer against its fetch-queue backoff (prints figures; not a timed test).

Run: ``.venv/bin/python benchmarks/librdkafka_fetch_backoff.py [--events 400000] [--cost-us 10]
[--queue-kbytes 65536 16384]``

librdkafka stops fetching a partition once its prefetch queue is full (``queued.max.messages.kbytes``,
64 MB, or ``queued.min.messages``) and postpones the partition's next fetch by
``fetch.queue.backoff.ms`` (1000 ms by default). A consumer that drains the queue faster than that
finds it empty and waits. This script reads one topic of the throughput benchmark's events
(about 870 bytes) on the embedded broker with the worker's poll pattern (``consume(500, 0)``, then
a blocking ``poll`` when nothing is queued) and a fixed CPU cost per message standing in for
scoring, once per backoff value and prefetch queue size (``queued.max.messages.kbytes``), and
prints the read rate, the time spent blocked in ``poll`` and how far the process's resident memory
rose above its level before the consumer was made (most of it the queue).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from confluent_kafka import Consumer

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "benchmarks"), str(ROOT / "tests"), str(ROOT / "tests" / "worker")]

from kafka_harness import Topics, produce  # noqa: E402
from worker_throughput import make_events  # noqa: E402

from worker.confluent_io import FETCH_QUEUE_BACKOFF_MS  # noqa: E402
from worker.embedded_broker import EmbeddedBroker  # noqa: E402


def busy(microseconds: float) -> None:
    """Hold the CPU for ``microseconds`` (the stand-in for scoring)."""
    end = time.perf_counter() + microseconds / 1e6
    while time.perf_counter() < end:
        pass


def resident_mb() -> float:
    """This process's resident memory now (VmRSS), MB."""
    line = next(x for x in Path("/proc/self/status").read_text().splitlines() if x.startswith("VmRSS"))
    return float(line.split()[1]) / 1024


def read_all(
    bootstrap: str, topic: str, n: int, backoff_ms: int, queue_kbytes: int, cost_us: float
) -> tuple[float, float, int, float]:
    """Read ``n`` messages; return (messages/s, seconds blocked in poll, blocking polls, MB of
    resident memory at most above the level before), timed from the first message."""
    before = peak = resident_mb()
    consumer = Consumer({
        "bootstrap.servers": bootstrap, "group.id": f"backoff-{time.time_ns()}", "auto.offset.reset": "earliest",
        "enable.auto.commit": False, "enable.auto.offset.store": False, "fetch.wait.max.ms": 20,
        "fetch.queue.backoff.ms": backoff_ms, "queued.max.messages.kbytes": queue_kbytes,
    })  # fmt: skip
    consumer.subscribe([topic])
    seen, blocked, blocks, start = 0, 0.0, 0, None
    while seen < n:
        messages = consumer.consume(num_messages=500, timeout=0)
        if not messages:
            waited_from = time.perf_counter()
            first = consumer.poll(0.5)
            if start is not None:
                blocked += time.perf_counter() - waited_from
                blocks += 1
            messages = [first, *consumer.consume(num_messages=499, timeout=0)] if first is not None else []
        if messages and start is None:
            start = time.perf_counter()
        seen += len(messages)
        busy(cost_us * len(messages))
        if seen % 20_000 < len(messages):
            peak = max(peak, resident_mb())
    assert start is not None
    consumer.close()
    return seen / (time.perf_counter() - start), blocked, blocks, peak - before


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=400_000)
    parser.add_argument("--cost-us", type=float, default=10.0, help="CPU per message (the worker: about 10 us)")
    parser.add_argument("--queue-kbytes", type=int, nargs="+", default=[65536], help="librdkafka's default: 65536")
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    values = make_events(args.events)
    with EmbeddedBroker() as broker:
        bootstrap = broker.bootstrap_servers
        topic = Topics.unique(bootstrap).input
        produce(bootstrap, topic, values, linger_ms=20, batch_size=256 * 1024)
        print(f"{len(values):,} events on 3 partitions, {args.cost_us} us of CPU per message")
        for _ in range(args.rounds):
            for queue in args.queue_kbytes:
                for backoff, label in ((1000, "librdkafka's default"), (FETCH_QUEUE_BACKOFF_MS, "the worker's")):
                    rate, blocked, blocks, grown = read_all(bootstrap, topic, len(values), backoff, queue, args.cost_us)
                    elapsed = len(values) / rate
                    print(
                        f"queue {queue:>6} kB, fetch.queue.backoff.ms {backoff:>4} ({label}): {rate:,.0f} msgs/s, "
                        f"blocked in poll {blocked:.2f} s of {elapsed:.2f} s ({blocked / elapsed:.0%}, "
                        f"{blocks} waits), memory +{grown:.0f} MB"
                    )


if __name__ == "__main__":
    main()
