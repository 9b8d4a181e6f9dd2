"""The replayer: faithful by default (bytes as read, NaN kept, no key), explicit changes, invalid lines, delivery."""

from __future__ import annotations

import gzip
import json
import math
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path

import pytest
from fakes import FakePublisher
from hypothesis import given
from hypothesis import strategies as st

from detector.table_reader import SourceLine, iter_lines
from worker.errors import BrokerError, PublishError
from worker.replay import SHOW_SKIPPED, InvalidLineError, ReplayOptions, ReplayStoppedError, main, replay
from worker.settings import KafkaSettings
from worker.topic_tools import TopicTail, create_topics, existing_topics

ROOT = Path(__file__).resolve().parents[2]


def lines_of(tmp_path: Path, text: bytes, name: str = "e.jsonl") -> list[SourceLine]:
    path = tmp_path / name
    path.write_bytes(text)
    return list(iter_lines(path))


JSONL = b'{"a": 1, "x": NaN}\n{"a":2,"x":Infinity, "id": "k2"}\r\n\n{ "a" : -Infinity }\n'


def test_by_default_every_line_is_published_byte_for_byte_without_key(tmp_path: Path) -> None:
    publisher = FakePublisher()
    summary = replay(lines_of(tmp_path, JSONL), publisher, ReplayOptions(topic="t"))
    assert summary.published == 3 and summary.skipped == ()
    assert [value for _, value, _, _ in publisher.sent] == [
        b'{"a": 1, "x": NaN}',
        b'{"a":2,"x":Infinity, "id": "k2"}',
        b'{ "a" : -Infinity }',
    ]
    assert [key for _, _, key, _ in publisher.sent] == [None, None, None]


def test_key_field_keys_records_without_changing_them(tmp_path: Path) -> None:
    publisher = FakePublisher()
    replay(lines_of(tmp_path, JSONL), publisher, ReplayOptions(topic="t", key_field="id"))
    assert [key for _, _, key, _ in publisher.sent] == [None, b"k2", None]
    assert publisher.sent[1][1] == b'{"a":2,"x":Infinity, "id": "k2"}'


def test_ids_and_timestamps_are_added_only_when_asked_and_missing_and_nan_stays_nan() -> None:
    lines = [
        SourceLine(1, {"a": 1.5, "x": math.nan, "label": "x"}),
        SourceLine(2, {"a": 2, "event_id": "keep-me", "ts": 5.0}),
    ]
    options = ReplayOptions(
        topic="t",
        add_id="event_id",
        add_timestamp="ts",
        key_field="event_id",
        drop=frozenset({"label"}),
        id_prefix="run",
    )
    publisher = FakePublisher()
    replay(lines, publisher, options, clock=lambda: 100.0)
    assert [value for _, value, _, _ in publisher.sent] == [
        b'{"a":1.5,"x":NaN,"event_id":"run-0","ts":100.0}',
        b'{"a":2,"event_id":"keep-me","ts":5.0}',
    ]
    assert [key for _, _, key, _ in publisher.sent] == [b"run-0", b"keep-me"]


def test_csv_rows_become_compact_json_events(tmp_path: Path) -> None:
    publisher = FakePublisher()
    replay(lines_of(tmp_path, b"a,b,c\n1,x,\n2.5,nan,7\n", "e.csv"), publisher, ReplayOptions(topic="t"))
    assert [value for _, value, _, _ in publisher.sent] == [b'{"a":1,"b":"x","c":null}', b'{"a":2.5,"b":"nan","c":7}']


def test_an_invalid_line_stops_after_flushing_and_says_where_and_how_many(tmp_path: Path) -> None:
    publisher = FakePublisher()
    lines = lines_of(tmp_path, b'{"a": 1}\n{"a": 2}\n{broken\n{"a": 3}\n')
    with pytest.raises(InvalidLineError) as caught:
        replay(lines, publisher, ReplayOptions(topic="t"))
    assert caught.value.line_no == 3 and caught.value.published == 2
    assert "e.jsonl:3: invalid JSON" in str(caught.value)
    assert publisher.flushed_at == [2]


def test_skip_invalid_counts_the_lines_it_skips(tmp_path: Path) -> None:
    publisher = FakePublisher()
    text = b'{"a": 1}\n[1, 2]\n\xff\xfe\n{broken\n{"a": 3}\n'
    summary = replay(lines_of(tmp_path, text), publisher, ReplayOptions(topic="t", skip_invalid=True))
    assert summary.published == 2
    assert [s.split(": ", 1)[1] for s in summary.skipped] == [
        "expected a JSON object, got list",
        "not UTF-8",
        "invalid JSON (Expecting property name enclosed in double quotes)",
    ]
    assert summary.skipped_count == 3


def test_a_file_of_invalid_lines_keeps_only_the_first_messages(tmp_path: Path) -> None:
    summary = replay(lines_of(tmp_path, b"{broken\n" * 1000 + b'{"a": 1}\n'), FakePublisher(),
                     ReplayOptions(topic="t", skip_invalid=True))  # fmt: skip
    assert summary.published == 1 and summary.skipped_count == 1000 and len(summary.skipped) == SHOW_SKIPPED


@pytest.mark.parametrize("options", [{"add_id": "id"}, {"key_field": "k"}], ids=["rewritten", "keyed"])
def test_a_line_that_cannot_be_written_as_utf8_is_an_invalid_line(tmp_path: Path, options: dict[str, str]) -> None:
    """Found in review: JSON lets a lone surrogate through ("\\ud800"), and re-encoding the event
    or its key raised ``UnicodeEncodeError`` out of the command (a traceback, --skip-invalid or not)."""
    text = b'{"a": 1}\n{"a": 2, "k": "\\ud800", "c": "\\ud800"}\n{"a": 3}\n'
    publisher = FakePublisher()
    with pytest.raises(InvalidLineError, match="line 2: cannot be written as UTF-8") as caught:
        replay(lines_of(tmp_path, text), publisher, ReplayOptions(topic="t", **options))  # type: ignore[arg-type]
    assert caught.value.published == 1 and publisher.flushed_at == [1]
    summary = replay(lines_of(tmp_path, text), FakePublisher(), ReplayOptions(topic="t", skip_invalid=True, **options))  # type: ignore[arg-type]
    assert summary.published == 2 and summary.skipped_count == 1


def test_a_line_the_producer_refuses_is_an_invalid_line_that_says_where(tmp_path: Path) -> None:
    """Found in review: a line over the request limit stopped the command with only the client's
    error: no line, no count of what was published before it, and --skip-invalid could not skip it."""
    text = b'{"a": 1}\n{"a": "' + b"x" * 500 + b'"}\n{"a": 3}\n'
    publisher = FakePublisher(max_request_bytes=200)
    with pytest.raises(InvalidLineError, match=r"line 2: the producer refused it .*MessageSizeTooLarge") as caught:
        replay(lines_of(tmp_path, text), publisher, ReplayOptions(topic="t"))
    assert caught.value.published == 1 and publisher.flushed_at == [1]
    publisher = FakePublisher(max_request_bytes=200)
    summary = replay(lines_of(tmp_path, text), publisher, ReplayOptions(topic="t", skip_invalid=True))
    assert summary.published == 2 and [v for _, v, _, _ in publisher.sent] == [b'{"a": 1}', b'{"a": 3}']


def test_a_broker_failure_at_send_names_the_line_and_is_not_skipped(tmp_path: Path) -> None:
    class NoMetadata(FakePublisher):
        def send(self, topic: str, value: bytes | None, key: bytes | None, headers: list[tuple[str, bytes]]) -> None:
            if len(self.sent) == 2:
                raise PublishError("send failed: KafkaTimeoutError: no metadata for topic 't'")
            super().send(topic, value, key, headers)

    publisher = NoMetadata()
    with pytest.raises(ReplayStoppedError, match=r"line 3: send failed") as stopped:
        replay(lines_of(tmp_path, b'{"a": 1}\n{"a": 2}\n{"a": 3}\n{"a": 4}\n'), publisher,
               ReplayOptions(topic="t", skip_invalid=True))  # fmt: skip
    assert (stopped.value.published, stopped.value.acknowledged, stopped.value.line_no) == (2, True, 2)
    assert publisher.flushed_at == [2]


def test_csv_row_with_wrong_cell_count_is_invalid(tmp_path: Path) -> None:
    summary = replay(
        lines_of(tmp_path, b"a,b\n1,2\n3\n4,5\n", "e.csv"), FakePublisher(), ReplayOptions(topic="t", skip_invalid=True)
    )
    assert summary.published == 2 and summary.skipped == (f"{tmp_path / 'e.csv'}:3: expected 2 cells, found 1",)


def test_limit_counts_published_events() -> None:
    publisher = FakePublisher()
    replay([SourceLine(i, {"a": i}) for i in range(10)], publisher, ReplayOptions(topic="t", limit=3))
    assert [value for _, value, _, _ in publisher.sent] == [b'{"a":0}', b'{"a":1}', b'{"a":2}']


@given(
    st.lists(
        st.dictionaries(st.text(max_size=5), st.floats() | st.integers() | st.text(max_size=5), max_size=4), max_size=5
    )
)
def test_jsonl_round_trip_is_byte_for_byte(events: list[dict[str, object]]) -> None:
    raw = [json.dumps(e).encode() for e in events]  # json writes NaN / Infinity literals
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "e.jsonl"
        path.write_bytes(b"".join(r + b"\n" for r in raw))
        publisher = FakePublisher()
        replay(iter_lines(path), publisher, ReplayOptions(topic="t"))
    assert [value for _, value, _, _ in publisher.sent] == raw


def test_rate_limit_asks_to_sleep_for_the_schedule() -> None:
    publisher = FakePublisher()
    slept: list[float] = []
    replay(
        [SourceLine(i, {"a": i}) for i in range(4)], publisher, ReplayOptions(topic="t", rate=10.0), sleep=slept.append
    )
    # Event k is due k/10 s after the start; the fake sleep does not advance the clock, so the
    # waits asked for are the whole schedule: about 0.1, 0.2 and 0.3 s.
    assert slept == pytest.approx([0.1, 0.2, 0.3], abs=0.05)


def test_command_reports_a_missing_file_in_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main([str(tmp_path / "nope.csv"), "--topic", "t", "--bootstrap-servers", "127.0.0.1:1"])
    err = capsys.readouterr().err
    assert code == 1
    assert err.startswith("error: ") and "nope.csv" in err and len(err.strip().splitlines()) == 1


def read_back(bootstrap: str, topic: str, count: int) -> list[tuple[bytes | None, bytes | None]]:
    tail = TopicTail(bootstrap, topic)
    seen: list[tuple[bytes | None, bytes | None]] = []
    try:
        for _ in range(50):
            seen += [(r.key, r.value) for r in tail.poll(200)]
            if len(seen) >= count:
                break
    finally:
        tail.close()
    return seen


def test_a_negative_rate_is_a_usage_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "e.jsonl"
    path.write_bytes(b'{"a": 1}\n')
    assert main([str(path), "--topic", "t", "--rate", "-1"]) == 2
    assert capsys.readouterr().err.strip() == "error: --rate and --limit must not be negative"


@pytest.mark.parametrize("topic", ["bad topic", "..", "x" * 250, "événements"])
def test_an_illegal_topic_name_is_a_usage_error_not_invalid_lines(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], topic: str
) -> None:
    """Found in review: refused by the producer at each send, every line was "invalid", and with
    --skip-invalid the replay exited 0 having published nothing."""
    path = tmp_path / "e.jsonl"
    path.write_bytes(b'{"a": 1}\n')
    assert main([str(path), "--topic", topic, "--skip-invalid", "--bootstrap-servers", "127.0.0.1:1"]) == 2
    assert (
        capsys.readouterr().err.strip()
        == f"error: --topic: {topic!r} is not a legal Kafka topic name (letters, digits, '.', '_', '-'; 1-249)"
    )


@pytest.mark.kafka
def test_replays_a_gzip_jsonl_byte_for_byte_into_a_real_topic(  # type: ignore[no-untyped-def]
    kafka_broker, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "events.jsonl.gz"
    path.write_bytes(gzip.compress(b'{"id": "a", "x": NaN}\n{oops\n{"id":"b","x":1e400}\n'))
    bootstrap = kafka_broker.bootstrap_servers
    topics = [f"replay-{uuid.uuid4().hex[:8]}" for _ in range(2)]
    create_topics(bootstrap, [(t, 1) for t in topics])

    assert main([str(path), "--topic", topics[0], "--bootstrap-servers", bootstrap]) == 1
    err = capsys.readouterr().err
    assert "events.jsonl.gz:2: invalid JSON" in err and "1 events were published before it" in err
    assert read_back(bootstrap, topics[0], 1) == [(None, b'{"id": "a", "x": NaN}')]

    argv = [str(path), "--topic", topics[1], "--bootstrap-servers", bootstrap, "--skip-invalid", "--key-field", "id"]
    assert main(argv) == 0
    out, err = capsys.readouterr()
    assert json.loads(out) | {"seconds": 0, "rate": 0} == {"published": 2, "skipped": 1, "seconds": 0, "rate": 0}
    assert "skipped " in err and ":2: invalid JSON" in err
    assert read_back(bootstrap, topics[1], 2) == [(b"a", b'{"id": "a", "x": NaN}'), (b"b", b'{"id":"b","x":1e400}')]


@pytest.mark.kafka
def test_a_topic_the_broker_does_not_have_is_warned_about_before_publishing(  # type: ignore[no-untyped-def]
    kafka_broker, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A misspelt topic is most often a typo: published anyway (brokers may create it), with a warning."""
    path = tmp_path / "e.jsonl"
    path.write_bytes(b'{"a": 1}\n')
    bootstrap = kafka_broker.bootstrap_servers
    existing = f"replay-{uuid.uuid4().hex[:8]}"
    create_topics(bootstrap, [(existing, 1)])
    assert main([str(path), "--topic", existing, "--bootstrap-servers", bootstrap]) == 0
    assert "warning" not in capsys.readouterr().err
    typo = existing + "x"
    assert main([str(path), "--topic", typo, "--bootstrap-servers", bootstrap]) == 0
    err = capsys.readouterr().err
    assert f"warning: topic {typo!r} does not exist on {bootstrap} yet (did you mean {existing!r}" in err


def test_an_unreachable_broker_fails_once_before_anything_is_published(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The topic check meets the dead broker first: one connect timeout, one line, no producer built."""
    with pytest.raises(BrokerError, match=r"cannot reach 127\.0\.0\.1:1: no broker answered within 200 ms"):
        existing_topics(KafkaSettings(bootstrap_servers="127.0.0.1:1", connect_timeout_ms=200))

    def no_publisher(*args: object) -> None:
        raise AssertionError("a producer was built for an unreachable broker")

    monkeypatch.setattr("worker.kafka_publisher.KafkaPublisher", no_publisher)
    monkeypatch.setattr(
        "worker.topic_tools.existing_topics",
        lambda settings: existing_topics(settings.model_copy(update={"connect_timeout_ms": 200})),
    )
    path = tmp_path / "e.jsonl"
    path.write_bytes(b'{"a": 1}\n')
    assert main([str(path), "--topic", "t", "--bootstrap-servers", "127.0.0.1:1"]) == 1
    assert capsys.readouterr().err == "error: cannot reach 127.0.0.1:1: no broker answered within 200 ms\n"


def test_the_connection_comes_from_the_workers_kafka_variables(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Brokers and security (SASL, TLS) as the worker and tail read them; --bootstrap-servers wins."""
    seen: list[KafkaSettings] = []

    class Publisher(FakePublisher):
        def __init__(self, settings: KafkaSettings) -> None:
            super().__init__()
            seen.append(settings)

        def close(self, timeout_s: float) -> None:
            pass

    monkeypatch.setattr("worker.kafka_publisher.KafkaPublisher", Publisher)
    monkeypatch.setattr("worker.topic_tools.existing_topics", lambda settings: {"t"})
    monkeypatch.setenv("WORKER_KAFKA__BOOTSTRAP_SERVERS", "kafka-0:9093")
    monkeypatch.setenv("WORKER_KAFKA__SECURITY_PROTOCOL", "SSL")
    path = tmp_path / "e.jsonl"
    path.write_bytes(b'{"a": 1}\n')
    assert main([str(path), "--topic", "t"]) == 0
    assert main([str(path), "--topic", "t", "--bootstrap-servers", "other:9093"]) == 0
    expected = [("kafka-0:9093", "SSL"), ("other:9093", "SSL")]
    assert [(s.bootstrap_servers, s.security_protocol) for s in seen] == expected


def _fake_publisher(monkeypatch: pytest.MonkeyPatch, interrupt_at: int | None = None) -> list[FakePublisher]:
    made: list[FakePublisher] = []

    class Publisher(FakePublisher):
        def __init__(self, settings: KafkaSettings) -> None:
            super().__init__()
            made.append(self)

        def send(self, topic: str, value: bytes | None, key: bytes | None, headers: list[tuple[str, bytes]]) -> None:
            if interrupt_at is not None and len(self.sent) == interrupt_at:
                raise KeyboardInterrupt  # Ctrl-C while the replay runs
            super().send(topic, value, key, headers)

        def close(self, timeout_s: float) -> None:
            pass

    monkeypatch.setattr("worker.kafka_publisher.KafkaPublisher", Publisher)
    monkeypatch.setattr("worker.topic_tools.existing_topics", lambda settings: {"t"})
    return made


def test_a_stopped_replay_says_how_many_events_were_published_and_where(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Found in review: Ctrl-C printed only "interrupted", and a file cut short only its read
    error, so a backfill could not tell where to resume."""
    path = tmp_path / "e.jsonl"
    path.write_bytes(b"".join(b'{"a": %d}\n' % i for i in range(5)))
    _fake_publisher(monkeypatch, interrupt_at=3)
    assert main([str(path), "--topic", "t"]) == 130
    err = capsys.readouterr().err
    assert (
        err
        == "error: interrupted; 3 events were published before it (all acknowledged); every line up to 3 was handled\n"
    )
    cut = tmp_path / "e.jsonl.gz"
    blob = gzip.compress(b"".join(b'{"a": %d, "pad": "%s"}\n' % (i, b"x" * 50) for i in range(20_000)))
    cut.write_bytes(blob[: len(blob) // 2])  # a copy cut short
    made = _fake_publisher(monkeypatch)
    assert main([str(cut), "--topic", "t"]) == 1
    err = capsys.readouterr().err
    assert f"; {len(made[0].sent)} events were published before it (all acknowledged)" in err
    assert err.startswith("error: cannot read") and len(made[0].sent) > 0


def test_skip_invalid_skips_a_csv_row_that_is_not_utf8(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Found in review: one byte that is not UTF-8 in a CSV ended the whole replay as a file error."""
    path = tmp_path / "e.csv"
    path.write_bytes(b"a,b\n1,2\n\xe9t\xe9,3\n4,5\n")
    made = _fake_publisher(monkeypatch)
    assert main([str(path), "--topic", "t", "--skip-invalid"]) == 0
    out = capsys.readouterr()
    assert json.loads(out.out)["published"] == 2 and json.loads(out.out)["skipped"] == 1
    assert "e.csv:3: not UTF-8" in out.err and len(made[0].sent) == 2


def test_ctrl_c_while_the_last_events_are_acknowledged_says_how_many(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Found in review: the final flush (up to 60 s on a slow broker) was outside the count."""
    path = tmp_path / "e.jsonl"
    path.write_bytes(b"".join(b'{"a": %d}\n' % i for i in range(5)))
    _fake_publisher(monkeypatch)
    calls = []

    def flush(self: FakePublisher, timeout_s: float) -> None:
        calls.append(timeout_s)
        if len(calls) == 1:
            raise KeyboardInterrupt

    monkeypatch.setattr(FakePublisher, "flush", flush)
    assert main([str(path), "--topic", "t"]) == 130
    err = capsys.readouterr().err
    assert (
        err
        == "error: interrupted; 5 events were published before it (all acknowledged); every line up to 5 was handled\n"
    )


def test_a_broker_that_stops_acknowledging_ends_with_the_count_and_the_line_to_resume_after(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Found in review: with the broker killed, the replay ended with "flush failed: ..." alone,
    neither how many events went out nor where to resume."""
    path = tmp_path / "e.jsonl"
    path.write_bytes(b"".join(b'{"a": %d}\n' % i for i in range(7)))
    monkeypatch.setattr("worker.replay.FLUSH_EVERY", 2)
    _fake_publisher(monkeypatch)
    calls = []

    def flush(self: FakePublisher, timeout_s: float) -> None:
        calls.append(timeout_s)
        if len(calls) >= 3:  # lines 1-4 acknowledged, then the broker is gone
            raise PublishError("flush failed: KafkaTimeoutError: Timeout waiting for future")

    monkeypatch.setattr(FakePublisher, "flush", flush)
    assert main([str(path), "--topic", "t"]) == 1
    assert capsys.readouterr().err == (
        "error: flush failed: KafkaTimeoutError: Timeout waiting for future; 6 events were published before it"
        " (not all acknowledged); every line up to 4 was acknowledged\n"
    )


@pytest.mark.kafka
def test_a_producer_closed_while_its_broker_is_gone_closes_without_a_traceback_at_exit(tmp_path: Path) -> None:
    """Found in review: kafka-python's close raised on its flush's timeout before closing, and its
    ``__del__`` tried again at interpreter exit: "Exception ignored in ... Traceback"."""
    script = tmp_path / "close.py"
    script.write_text(
        "import time\n"
        "from worker.embedded_broker import EmbeddedBroker, free_port\n"
        "from worker.kafka_publisher import KafkaPublisher\n"
        "from worker.settings import KafkaSettings\n"
        "broker = EmbeddedBroker(free_port()).start()\n"
        "publisher = KafkaPublisher(KafkaSettings(bootstrap_servers=broker.bootstrap_servers))\n"
        "publisher.send('t', b'{}', None, [])\n"
        "publisher.flush(30)\n"
        "broker.stop()\n"
        "publisher.send('t', b'{}', None, [])\n"
        "started = time.monotonic()\n"
        "publisher.close(1.0)\n"
        "print(f'closed in {time.monotonic() - started:.1f} s')\n",
        encoding="utf-8",
    )
    done = subprocess.run(
        [sys.executable, str(script)], check=False, capture_output=True, text=True, timeout=120, cwd=ROOT
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "Traceback" not in done.stderr and "Exception ignored" not in done.stderr, done.stderr[-2000:]
    assert float(done.stdout.split()[2]) < 10


class _BrokerRefusesEverything:
    """A kafka-python producer whose every record the broker answered with an error (retries used up,
    not enough replicas): each future done and failed."""

    class Failed:
        is_done = True

        def failed(self) -> bool:
            return True

    def send(self, topic: str, value: bytes | None = None, key: bytes | None = None, headers: object = None) -> object:
        return self.Failed()

    def flush(self, timeout: float | None = None) -> None:
        return None


def test_events_the_broker_failed_are_never_reported_acknowledged(tmp_path: Path) -> None:
    """Found in review of the broker-failure report: the publisher forgets what a failed flush
    reported, so a second flush to ask again said "all acknowledged", and the operator was told to
    resume after events that were lost."""
    from worker.kafka_publisher import KafkaPublisher  # noqa: PLC0415

    publisher = KafkaPublisher.__new__(KafkaPublisher)
    publisher._producer = _BrokerRefusesEverything()  # type: ignore[assignment]
    publisher._futures = []
    with pytest.raises(ReplayStoppedError) as stopped:
        replay(lines_of(tmp_path, b'{"a": 1}\n{"a": 2}\n{"a": 3}\n'), publisher, ReplayOptions(topic="t"))
    assert (stopped.value.published, stopped.value.acknowledged, stopped.value.line_no) == (3, False, None)
