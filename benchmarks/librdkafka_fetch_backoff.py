"""A busy librdkafka consumer against its fetch-queue backoff (prints figures; not a timed test).

Run: ``.venv/bin/python benchmarks/librdkafka_fetch_backoff.py [--events 400000] [--cost-us 10]
[--queue-kbytes 65536 16384] [--rounds 2]``

librdkafka stops fetching once the consumer's prefetch queue is full (``queued.max.messages.kbytes``,
64 MB, or ``queued.min.messages``) and postpones each partition's next fetch by
``fetch.queue.backoff.ms`` (1000 ms by default). A consumer that drains the queue faster than that
finds it empty and waits. This script puts the throughput benchmark's events (about 870 bytes) on
one topic of the embedded broker, then reads them with the worker's poll pattern (``consume(500,
0)``, then a blocking ``poll`` when nothing is queued) and a fixed CPU cost per message standing in
for scoring, once per backoff value and prefetch queue size, each read in a fresh process. It
prints the read rate, the time spent waiting for messages (and in how many stalls), and how far the
reading process's peak resident memory rose above its level before the consumer was made (most of
it the queue).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

from confluent_kafka import Consumer

ROOT = Path(__file__).resolve().parents[1]


def busy(microseconds: float) -> None:
    """Hold the CPU for ``microseconds`` (the stand-in for scoring)."""
    end = time.perf_counter() + microseconds / 1e6
    while time.perf_counter() < end:
        pass


def memory_mb(field: str) -> float:
    """This process's ``VmRSS`` or ``VmHWM`` (peak), MB."""
    line = next(x for x in Path("/proc/self/status").read_text().splitlines() if x.startswith(field))
    return float(line.split()[1]) / 1024


def read_all(
    bootstrap: str, topic: str, n: int, backoff_ms: int, queue_kbytes: int, cost_us: float
) -> dict[str, float]:
    """Read ``n`` messages, timed from the first one; the figures of :func:`main`'s lines."""
    before = memory_mb("VmRSS")
    consumer = Consumer({
        "bootstrap.servers": bootstrap, "group.id": f"backoff-{time.time_ns()}", "auto.offset.reset": "earliest",
        "enable.auto.commit": False, "enable.auto.offset.store": False, "fetch.wait.max.ms": 20,
        "fetch.queue.backoff.ms": backoff_ms, "queued.max.messages.kbytes": queue_kbytes,
    })  # fmt: skip
    try:
        consumer.subscribe([topic])
        seen, waited, stalls, start = 0, 0.0, 0, None
        while seen < n:
            messages = consumer.consume(num_messages=500, timeout=0)
            if not messages and start is not None:  # a stall: wait, however many polls it takes
                stalls += 1
                waited_from = time.perf_counter()
                while not messages:
                    first = consumer.poll(0.5)
                    if first is not None:
                        messages = [first, *consumer.consume(num_messages=499, timeout=0)]
                waited += time.perf_counter() - waited_from
            elif not messages:  # before the first message: joining the group, not timed
                first = consumer.poll(0.5)
                messages = [first] if first is not None else []
            if messages and start is None:
                start = time.perf_counter()
            errors = [m.error() for m in messages if m.error() is not None]
            if any(e.fatal() for e in errors):
                raise RuntimeError(f"consumer failed: {errors}")
            seen += len(messages) - len(errors)
            busy(cost_us * len(messages))
        assert start is not None
        elapsed = time.perf_counter() - start
    finally:
        consumer.close()
    return {"rate": seen / elapsed, "elapsed": elapsed, "waited": waited, "stalls": stalls,
            "memory_mb": memory_mb("VmHWM") - before}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=400_000)
    parser.add_argument("--cost-us", type=float, default=10.0, help="CPU per message (the worker: about 10 us)")
    parser.add_argument("--queue-kbytes", type=int, nargs="+", default=[65536], help="librdkafka's default: 65536")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument(
        "--read", nargs=5, metavar=("BOOTSTRAP", "TOPIC", "N", "BACKOFF_MS", "QUEUE_KB"), help="internal"
    )
    args = parser.parse_args()
    if args.read:  # one read, in its own process (so that its memory is its own)
        bootstrap, topic, n, backoff, queue = args.read
        print(json.dumps(read_all(bootstrap, topic, int(n), int(backoff), int(queue), args.cost_us)))
        return
    sys.path[:0] = [str(ROOT), str(ROOT / "benchmarks"), str(ROOT / "tests"), str(ROOT / "tests" / "worker")]
    from kafka_harness import Topics, produce  # noqa: PLC0415
    from worker_throughput import make_events  # noqa: PLC0415

    from worker.confluent_io import FETCH_QUEUE_BACKOFF_MS  # noqa: PLC0415
    from worker.embedded_broker import EmbeddedBroker  # noqa: PLC0415

    values = make_events(args.events)
    with EmbeddedBroker() as broker:
        bootstrap = broker.bootstrap_servers
        topic = Topics.unique(bootstrap).input
        produce(bootstrap, topic, values, linger_ms=20, batch_size=256 * 1024)
        print(f"{len(values):,} events on 3 partitions, {args.cost_us} us of CPU per message")
        for _ in range(args.rounds):
            for queue in args.queue_kbytes:
                for backoff, label in ((1000, "librdkafka's default"), (FETCH_QUEUE_BACKOFF_MS, "the worker's")):
                    command = [sys.executable, __file__, "--cost-us", str(args.cost_us), "--read", bootstrap, topic]
                    command += [str(len(values)), str(backoff), str(queue)]
                    out = subprocess.run(command, check=True, capture_output=True, text=True).stdout
                    r = json.loads(out.strip().splitlines()[-1])
                    print(
                        f"queue {queue:>6} kB, fetch.queue.backoff.ms {backoff:>4} ({label}): {r['rate']:,.0f} msgs/s, "
                        f"waited {r['waited']:.2f} s of {r['elapsed']:.2f} s ({r['waited'] / r['elapsed']:.0%}) in "
                        f"{r['stalls']} stalls, peak memory +{r['memory_mb']:.0f} MB"
                    )


if __name__ == "__main__":
    main()
