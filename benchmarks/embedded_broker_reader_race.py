"""Whether a consumer reading while several producers write one partition of the embedded broker
misses records that the log holds (prints figures; docs/design.md, "Limits and known issues").

Run: ``.venv/bin/python benchmarks/embedded_broker_reader_race.py [--producers 4] [--trials 10]``

Per trial: a new one-partition topic; a kafka-python consumer polls it from offset 0 in a thread
while ``--producers`` kafka-python producers (one connection each, idempotent as the client
defaults) write ``--records`` records each concurrently; then a fresh consumer reads the settled
log. Prints, per trial, the records the concurrent reader got, the gaps in its offsets, and what
the fresh read holds; then the trials with a skip.
"""

from __future__ import annotations

import argparse
import itertools
import sys
import threading
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT)]

from kafka import KafkaConsumer, KafkaProducer, TopicPartition  # noqa: E402
from kafka.admin import KafkaAdminClient, NewTopic  # noqa: E402

from worker.embedded_broker import EmbeddedBroker  # noqa: E402


def _reader(bootstrap: str, tp: TopicPartition) -> KafkaConsumer:
    consumer = KafkaConsumer(
        bootstrap_servers=bootstrap, enable_auto_commit=False, fetch_max_wait_ms=5, auto_offset_reset="earliest"
    )
    consumer.assign([tp])
    consumer.seek(tp, 0)
    return consumer


def _write(bootstrap: str, topic: str, producer_no: int, records: int) -> None:
    producer = KafkaProducer(bootstrap_servers=bootstrap, linger_ms=1, batch_size=2_000)
    for i in range(records):
        producer.send(topic, value=f"{producer_no}-{i}".encode().ljust(200, b"x"), partition=0)
    producer.flush()
    producer.close()


def _fresh_read(bootstrap: str, tp: TopicPartition) -> tuple[int, int]:
    """(records, distinct values) of the settled log."""
    consumer = _reader(bootstrap, tp)
    offsets: list[int] = []
    values: set[bytes] = set()
    quiet = 0
    while quiet < 5:
        got = consumer.poll(timeout_ms=300)
        quiet = 0 if got else quiet + 1
        for batch in got.values():
            offsets.extend(m.offset for m in batch)
            values.update(m.value.split(b"x", 1)[0] for m in batch)
    consumer.close()
    return len(offsets), len(values)


def trial(bootstrap: str, producers: int, records: int) -> tuple[int, list[tuple[int, int]], tuple[int, int]]:
    topic = f"race-{uuid.uuid4().hex[:8]}"
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    admin.create_topics([NewTopic(topic, 1, 1)])
    admin.close()
    tp = TopicPartition(topic, 0)
    consumer = _reader(bootstrap, tp)
    seen: list[int] = []
    stop = threading.Event()

    def read() -> None:
        while not stop.is_set():
            for batch in consumer.poll(timeout_ms=50).values():
                seen.extend(m.offset for m in batch)

    reader = threading.Thread(target=read)
    reader.start()
    writers = [threading.Thread(target=_write, args=(bootstrap, topic, k, records)) for k in range(producers)]
    for w in writers:
        w.start()
    for w in writers:
        w.join()
    time.sleep(2.0)
    stop.set()
    reader.join()
    consumer.close()
    gaps = [(a, b) for a, b in itertools.pairwise(seen) if b != a + 1]
    return len(set(seen)), gaps, _fresh_read(bootstrap, tp)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--producers", type=int, default=4)
    parser.add_argument("--records", type=int, default=1_500, help="records per producer")
    parser.add_argument("--trials", type=int, default=10)
    args = parser.parse_args()
    total = args.producers * args.records
    skipped = 0
    with EmbeddedBroker() as broker:
        for n in range(args.trials):
            read, gaps, (fresh, distinct) = trial(broker.bootstrap_servers, args.producers, args.records)
            skipped += bool(gaps)
            print(
                f"trial {n}: concurrent reader got {read} of {total}, gaps {gaps[:3]};"
                f" fresh read {fresh} records, {distinct} distinct",
                flush=True,
            )
    print(f"{skipped} of {args.trials} trials: the concurrent reader skipped records ({args.producers} producers)")


if __name__ == "__main__":
    main()
