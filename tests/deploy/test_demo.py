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


@pytest.mark.kafka
@pytest.mark.slow
@pytest.mark.timeout(600)
def test_ctrl_c_stops_the_worker_cleanly_then_the_broker(tmp_path: Path) -> None:
    """A terminal's Ctrl-C signals the demo's whole process group mid-replay: the worker drains and
    commits (exit 0) before the broker stops, and nothing is left to fail at exit."""
    out = tmp_path / "demo"
    process = subprocess.Popen(
        [sys.executable, "-m", "deploy.demo", "--events", "20000", "--rate", "500", "--epochs", "1", "--out", str(out)],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
    )  # fmt: skip
    try:
        assert process.stdout is not None
        seen = ""
        while "scored" not in seen:  # a progress line: the replay is running
            line = process.stdout.readline()
            assert line, f"the demo ended before replaying: {seen[-3000:]}"
            seen += line
        os.killpg(process.pid, signal.SIGINT)  # what a terminal sends: the whole foreground group
        stdout, stderr = process.communicate(timeout=120)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
    assert process.returncode == 130, stdout[-2000:] + stderr[-2000:]
    assert "interrupted: stopping everything" in stderr
    assert "Traceback" not in stderr and "warning" not in stderr, stderr[-3000:]
    log = (out / "worker.log").read_text()
    assert "worker_stopped reason=SIGTERM clean=True exit_code=0" in log, log[-3000:]


def test_demo_names_the_failing_step(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "deploy.demo", "--train", str(tmp_path / "missing.csv"), "--out", str(tmp_path)],
        cwd=ROOT, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 1
    assert "error: step 1" in done.stderr or "error: training failed" in done.stderr
    assert "missing.csv" in done.stderr
