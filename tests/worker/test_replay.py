"""The replayer: rows -> JSON events (ids, timestamps, dropped columns), rate limiting, delivery."""

from __future__ import annotations

import gzip
import json
import uuid
from pathlib import Path

import orjson
import pytest

from worker.replay import ReplayOptions, main, replay, to_events
from worker.topic_tools import TopicTail, create_topics


class FakePublisher:
    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes | None, bytes | None]] = []
        self.flushed_at: list[int] = []

    def send(self, topic: str, value: bytes | None, key: bytes | None, headers: list[tuple[str, bytes]]) -> None:
        self.sent.append((topic, value, key))

    def flush(self, timeout_s: float) -> None:
        self.flushed_at.append(len(self.sent))


def test_events_get_ids_and_timestamps_only_when_missing() -> None:
    rows = [{"a": 1, "label": "x"}, {"a": 2, "event_id": "keep-me", "ts": 5.0}]
    options = ReplayOptions(topic="t", drop=frozenset({"label"}), id_prefix="run")
    events = list(to_events(rows, options, clock=lambda: 100.0))
    assert events == [{"a": 1, "event_id": "run-0", "ts": 100.0}, {"a": 2, "event_id": "keep-me", "ts": 5.0}]


def test_limit_and_no_added_fields() -> None:
    rows = [{"a": i} for i in range(10)]
    options = ReplayOptions(topic="t", limit=3, id_field=None, timestamp_field=None)
    assert list(to_events(rows, options, clock=lambda: 0.0)) == [{"a": 0}, {"a": 1}, {"a": 2}]


def test_replay_sends_json_keyed_by_id_and_flushes_at_the_end() -> None:
    publisher = FakePublisher()
    summary = replay([{"a": i} for i in range(5)], publisher, ReplayOptions(topic="events", id_prefix="p"))
    assert summary.sent == 5
    assert [key for _, _, key in publisher.sent] == [f"p-{i}".encode() for i in range(5)]
    assert orjson.loads(publisher.sent[2][1] or b"")["a"] == 2
    assert publisher.flushed_at[-1] == 5  # every event flushed before returning


def test_rate_limit_asks_to_sleep_for_the_schedule() -> None:
    publisher = FakePublisher()
    slept: list[float] = []
    replay([{"a": i} for i in range(4)], publisher, ReplayOptions(topic="t", rate=10.0), sleep=slept.append)
    # Event k is due k/10 s after the start; the fake sleep does not advance the clock, so the
    # waits asked for are the whole schedule: about 0.1, 0.2 and 0.3 s.
    assert slept == pytest.approx([0.1, 0.2, 0.3], abs=0.05)


def test_command_reports_a_missing_file_in_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main([str(tmp_path / "nope.csv"), "--topic", "t", "--bootstrap-servers", "127.0.0.1:1"])
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith("error: ") and "nope.csv" in err and len(err.strip().splitlines()) == 1


@pytest.mark.kafka
def test_replays_a_gzip_csv_into_a_real_topic(kafka_broker, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "events.csv.gz"
    with gzip.open(path, "wt") as fh:
        fh.write("a,b\n1,x\n2,y\n3,z\n")
    topic = f"replay-{uuid.uuid4().hex[:8]}"
    create_topics(kafka_broker.bootstrap_servers, [(topic, 1)])
    assert main([str(path), "--topic", topic, "--bootstrap-servers", kafka_broker.bootstrap_servers]) == 0
    tail = TopicTail(kafka_broker.bootstrap_servers, topic)
    seen: list[dict[str, object]] = []
    for _ in range(50):
        seen += [json.loads(r.value or b"") for r in tail.poll(200)]
        if len(seen) >= 3:
            break
    tail.close()
    assert [(e["a"], e["b"]) for e in seen] == [(1, "x"), (2, "y"), (3, "z")]
    assert all(isinstance(e["event_id"], str) and isinstance(e["ts"], float) for e in seen)
