"""Peak memory of the retrain job's Kafka window read (``training.retrain.kafka_source``), on the embedded broker.

Produces ``--events`` JSON events (about 600 bytes each, like NSL-KDD rows) to a fresh topic, then
reads the window in a fresh subprocess per setting and reports the subprocess's peak RSS minus
its RSS after imports, so the figure is the read's own memory.

    .venv/bin/python benchmarks/retrain_kafka_memory.py --events 60000
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
import uuid

import orjson
from kafka import KafkaProducer
from kafka.admin import KafkaAdminClient, NewTopic

from worker.embedded_broker import EmbeddedBroker

READ = """
import json, resource, sys, time
from training.retrain.kafka_source import KafkaWindow, read_recent_events
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
start = time.monotonic()
got = read_recent_events(KafkaWindow(sys.argv[1], sys.argv[2], last=int(sys.argv[3]) or None,
                         since_minutes=None if int(sys.argv[3]) else 600, max_events=int(sys.argv[4]), timeout_s=600))
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"events": len(got.events), "peak_mb": round((peak - base) / 1024, 1),
                  "seconds": round(time.monotonic() - start, 1)}))
"""


def produce(bootstrap: str, topic: str, n: int) -> None:
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    admin.create_topics([NewTopic(topic, 3, 1)])
    admin.close()
    producer = KafkaProducer(bootstrap_servers=bootstrap, linger_ms=20, batch_size=256 * 1024)
    now = int(time.time() * 1000) - n
    for i in range(n):
        event = {"event_id": f"e{i}", "ts": now + i, **{f"f{j}": float(i % 97 + j) for j in range(38)}}
        producer.send(topic, value=orjson.dumps(event), timestamp_ms=now + i)
    producer.flush(120)
    producer.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=60_000)
    args = parser.parse_args()
    settings = [
        ("--since, default cap", 0, 1_000_000),
        ("--since, --max-events 5000", 0, 5_000),
        ("--last 5000", 5_000, 10**6),
    ]
    with EmbeddedBroker() as broker:
        topic = f"bench-{uuid.uuid4().hex[:8]}"
        produce(broker.bootstrap_servers, topic, args.events)
        for name, last, cap in settings:
            out = subprocess.run(
                [sys.executable, "-c", READ, broker.bootstrap_servers, topic, str(last), str(cap)],
                capture_output=True,
                text=True,
                check=True,
            )
            print(json.dumps({"setting": name, "topic_events": args.events, **json.loads(out.stdout)}))


if __name__ == "__main__":
    main()
