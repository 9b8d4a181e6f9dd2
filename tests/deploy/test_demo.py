"""The demo end to end in short mode: trains, streams through the embedded broker, cleans up."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

#: Floors for the short run (2,000 KDDTest+ events, model trained on the full training normals).
MIN_PRECISION = 0.85
MIN_RECALL = 0.80


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = Path(f"/proc/{pid}/stat")
    return stat.exists() and stat.read_text().split()[2] != "Z"  # a zombie is not running


@pytest.mark.kafka
@pytest.mark.slow
@pytest.mark.timeout(900)
def test_demo_short_mode(tmp_path: Path) -> None:
    summary_path = tmp_path / "summary.json"
    done = subprocess.run(
        [sys.executable, "-m", "deploy.demo", "--events", "2000", "--rate", "0", "--out", str(tmp_path / "demo"),
         "--summary-json", str(summary_path)],
        cwd=ROOT, capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    summary = json.loads(summary_path.read_text())
    assert summary["events_sent"] == 2000 + summary["malformed_sent"]
    assert summary["malformed_sent"] > 0
    assert summary["unaccounted"] == 0
    assert summary["rejected_to_dead_letter"] == summary["malformed_sent"]
    assert summary["precision"] >= MIN_PRECISION
    assert summary["recall"] >= MIN_RECALL
    assert summary["stopped"] is True
    assert summary["worker_exit_code"] == 0  # clean SIGTERM: everything committed
    assert not _alive(summary["pids"]["worker"])
    assert not _alive(summary["pids"]["broker"])
    assert (tmp_path / "demo" / "report" / "report.html").is_file()
    for step in ("[1/5]", "[2/5]", "[3/5]", "[4/5]", "[5/5]", "ANOMALY", "precision"):
        assert step in done.stdout


def _processes_mentioning(text: str) -> list[int]:
    """Live processes whose command line contains ``text``."""
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            if text.encode() in cmdline.read_bytes() and _alive(int(cmdline.parent.name)):
                found.append(int(cmdline.parent.name))
        except OSError:  # ended meanwhile
            continue
    return found


@pytest.mark.kafka
@pytest.mark.slow
@pytest.mark.timeout(600)
@pytest.mark.parametrize(
    ("stop_signal", "when"),
    [
        (signal.SIGINT, "scored"),  # Ctrl-C mid-replay (a progress line is out)
        (signal.SIGHUP, "scored"),  # the terminal closed mid-replay
        (signal.SIGINT, "waiting for the worker to be ready"),  # Ctrl-C before the worker is ready
    ],
)
def test_a_terminal_signal_stops_the_worker_then_the_broker_and_leaves_nothing_running(
    tmp_path: Path, stop_signal: signal.Signals, when: str
) -> None:
    """A terminal signals the demo's whole process group: the worker and the broker, in sessions of
    their own, are stopped by the demo, the worker first (it drains and commits, exit 0), and
    nothing is left running or failing at exit."""
    out = tmp_path / "demo"
    process = subprocess.Popen(
        [sys.executable, "-m", "deploy.demo", "--events", "20000", "--rate", "500", "--epochs", "1", "--out", str(out)],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
    )  # fmt: skip
    try:
        assert process.stdout is not None
        seen = ""
        while when not in seen:
            line = process.stdout.readline()
            assert line, f"the demo ended before {when!r}: {seen[-3000:]}"
            seen += line
        broker = seen.split("creating topics on ", 1)[1].split()[0]
        os.killpg(process.pid, stop_signal)  # what a terminal sends: the whole foreground group
        stdout, stderr = process.communicate(timeout=120)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
    assert process.returncode == 130, stdout[-2000:] + stderr[-2000:]
    assert "interrupted: stopping everything" in stderr
    assert "Traceback" not in stderr, stderr[-3000:]
    assert not _processes_mentioning(str(out / "model")), "the worker was left running"
    assert not _processes_mentioning(f"tcp://{broker}"), "the broker was left running"
    if when == "scored":  # a ready worker drains; one still starting may stop before it logs
        log = (out / "worker.log").read_text()
        assert "warning" not in stderr, stderr[-3000:]
        assert "worker_stopped reason=SIGTERM clean=True exit_code=0" in log, log[-3000:]


def test_demo_names_the_failing_step(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "deploy.demo", "--train", str(tmp_path / "missing.csv"), "--out", str(tmp_path)],
        cwd=ROOT, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 1
    assert "error: step 1" in done.stderr or "error: training failed" in done.stderr
    assert "missing.csv" in done.stderr


def test_watch_ends_when_the_worker_publishes_an_anomaly_again(monkeypatch: pytest.MonkeyPatch) -> None:
    """Found in review: the worker is at-least-once and counts an event scored again each time,
    while the tally counts an event once; the demo waited to its timeout (600 s) and failed."""
    import argparse  # noqa: PLC0415

    import orjson  # noqa: PLC0415

    from deploy.demo import run as demo  # noqa: PLC0415
    from deploy.demo.tally import Tally  # noqa: PLC0415
    from worker.record_format import TailRecord  # noqa: PLC0415

    record = orjson.dumps({"event_id": "demo-0", "score": 9.0, "threshold": 1.0, "p_value": 0.001,
                           "event": {"label": "neptune", "ts": 1.0}, "explanation": {"text": "x"}})  # fmt: skip

    class Tail:
        def __init__(self, *args: object) -> None:
            self.batches = [[TailRecord(0, 0, 2000, record)], [TailRecord(0, 1, 2000, record)]]

        def poll(self, timeout_ms: int = 200) -> list[TailRecord]:
            return self.batches.pop(0) if self.batches else []

        def close(self) -> None:
            pass

    def send_events(args: object, bootstrap: str, tally: Tally, failure: object, stop: object) -> None:
        tally.sent_anomalous += 1  # one attack sent, which the worker scored twice

    monkeypatch.setattr(demo, "TopicTail", Tail)
    monkeypatch.setattr(demo, "send_events", send_events)
    monkeypatch.setattr(demo, "read_metrics", lambda port: {'kestrel_events_total{outcome="anomaly"}': 2.0})
    tally = Tally("label", "normal")
    demo.watch(argparse.Namespace(topic="t", show=0, metrics_port=1, timeout=5.0), "x", tally)
    assert (tally.flagged, tally.repeated_records, tally.records) == (1, 1, 2)
