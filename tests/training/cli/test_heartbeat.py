"""Progress lines for a redirected ``fit``: one per interval, naming the current stage, none after the end."""

from __future__ import annotations

import io
import time

from training.cli.heartbeat import Heartbeat


def wait_for(condition, timeout_s: float = 5.0) -> bool:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.01)
    return False


def test_lines_name_the_current_stage_and_stop_at_exit() -> None:
    stream = io.StringIO()
    with Heartbeat(stream, "reading data.csv", interval_s=0.02) as heartbeat:
        assert wait_for(lambda: "reading data.csv" in stream.getvalue())
        heartbeat.stage = "training on 10 normal rows"
        assert wait_for(lambda: "training on 10 normal rows" in stream.getvalue())
    lines = stream.getvalue().splitlines()
    assert all(line.startswith("progress: ") and line.endswith(" s)") for line in lines)
    time.sleep(0.1)
    assert stream.getvalue().splitlines() == lines  # the thread has stopped


def test_a_short_command_prints_nothing() -> None:
    stream = io.StringIO()
    with Heartbeat(stream, "reading", interval_s=60.0):
        pass
    assert stream.getvalue() == ""
