"""Where a busy worker's CPU goes, by thread, and what else the machine does meanwhile (prints figures).

Run: ``.venv/bin/python benchmarks/worker_threads_cpu.py --client kafka-python|confluent [--events 300000]``

Starts the embedded broker, produces NSL-KDD-shaped events (the throughput benchmark's), trains
the benchmark's model (or takes ``--model``), starts ``python -m worker`` on them and, once it has
processed 20,000 events, reads ``/proc`` for ``--seconds``: the worker's rate over the window, the
CPU share of each of its threads (the loop runs on the main thread; the others are the Kafka
client's, the metrics endpoint's, torch's), the broker's CPU share and the machine's idle share.
A main thread well under 100% is waiting (for the client's I/O thread, the broker or the GIL); one
near 100% is bound by its own work.
"""

from __future__ import annotations

import argparse
import glob
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "benchmarks"), str(ROOT / "tests" / "worker")]

from kafka_harness import Topics, WorkerProcess, produce  # noqa: E402
from worker_throughput import make_events, train_model  # noqa: E402

from worker.embedded_broker import EmbeddedBroker  # noqa: E402

TICKS = os.sysconf("SC_CLK_TCK")


def _cpu_ticks(stat_path: str) -> int:
    fields = Path(stat_path).read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])  # utime + stime


def _threads(pid: int) -> dict[int, int]:
    out = {}
    for task in glob.glob(f"/proc/{pid}/task/*"):
        try:
            out[int(Path(task).name)] = _cpu_ticks(f"{task}/stat")
        except OSError:
            continue
    return out


def _broker_ticks() -> int:
    total = 0
    for proc in glob.glob("/proc/[0-9]*"):
        try:
            if Path(f"{proc}/comm").read_text().strip() == "tansu":
                total += _cpu_ticks(f"{proc}/stat")
        except OSError:
            continue
    return total


def _machine() -> tuple[int, int]:
    fields = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    return fields[3], sum(fields)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--client", choices=["kafka-python", "confluent"], default="confluent")
    parser.add_argument("--events", type=int, default=300_000)
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--model", type=Path, default=None)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp, EmbeddedBroker() as broker:
        model = args.model or train_model(Path(tmp) / "model")
        topics = Topics.unique(broker.bootstrap_servers)
        produce(broker.bootstrap_servers, topics.input, make_events(args.events), linger_ms=20, batch_size=256 * 1024)
        worker = WorkerProcess(model, broker.bootstrap_servers, topics, client=args.client)
        worker.wait_ready(60)
        while worker.metric("kestrel_events_total") < 20_000:
            time.sleep(0.1)
        pid = worker.process.pid
        start, done = time.perf_counter(), worker.metric("kestrel_events_total")
        threads, broker_cpu, (idle, total) = _threads(pid), _broker_ticks(), _machine()
        time.sleep(args.seconds)
        threads_after, broker_after, (idle_after, total_after) = _threads(pid), _broker_ticks(), _machine()
        seconds, done_after = time.perf_counter() - start, worker.metric("kestrel_events_total")
        worker.terminate(30)
    if done_after >= args.events:
        print("warning: the worker finished inside the window; use more --events")
    print(f"[{args.client}] {(done_after - done) / seconds:,.0f} events/s over {seconds:.1f} s")
    shares = {t: (ticks - threads.get(t, 0)) / TICKS / seconds for t, ticks in threads_after.items()}
    print(f"  main thread (the loop): {shares.pop(pid, 0.0):.0%} of a core")
    others = sorted((s for s in shares.values() if s >= 0.01), reverse=True)
    print("  other threads above 1%: " + (", ".join(f"{s:.0%}" for s in others) or "none"))
    print(f"  broker (tansu): {(broker_after - broker_cpu) / TICKS / seconds:.0%} of a core")
    print(f"  machine idle: {(idle_after - idle) / max(total_after - total, 1):.0%} of all cores")


if __name__ == "__main__":
    main()
