"""``python -m worker.tail``: pretty lines and JSON lines per record kind; a real topic; broker errors."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest

from worker.anomaly_record import build_anomaly_record, encode_anomaly_record
from worker.record_format import TailRecord, format_line, json_line
from worker.settings import KafkaSettings, tool_kafka_settings
from worker.tail import follow, main

ROOT = Path(__file__).resolve().parents[2]

ANOMALY = {
    "event_id": "e-7",
    "score": 3.14159,
    "threshold": 1.5,
    "p_value": 0.00123,
    "nearest_class": "web",
    "nearest_distance": 0.75,
    "explanation": {
        "text": "src_bytes=54540 (12.3σ) vs class 'web'",
        "fields": [{"field": "src_bytes", "value": 54540, "deviation": 12.34}],
    },
    "event": {"event_id": "e-7", "src_bytes": 54540},
}
DLQ_HEADERS = (
    ("kestrel.error.type", b"InvalidEventError"),
    ("kestrel.error.reason", b"invalid_json"),
    ("kestrel.error.message", b"not valid JSON"),
    ("kestrel.source.topic", b"events"),
    ("kestrel.source.partition", b"2"),
    ("kestrel.source.offset", b"41"),
)


def test_an_anomaly_shows_id_score_p_value_nearest_class_and_top_deviation() -> None:
    line = format_line(TailRecord(0, 5, 0, json.dumps(ANOMALY).encode(), b"e-7"))
    assert (
        line == "0@5 ANOMALY e-7 score 3.142 (threshold 1.500) p=0.00123 nearest web (d=0.750): src_bytes=54540 (12.3σ)"
    )


def test_a_real_anomaly_record_is_recognised() -> None:
    record = build_anomaly_record(
        event_id="x", event_timestamp=None, detected_at=None, score=2.0, threshold=1.0, p_value=0.01,
        nearest_class="0", nearest_distance=1.0, margin=float("nan"), model_version="m1", deviations=[], event={},
    )  # fmt: skip
    assert format_line(TailRecord(0, 0, 0, encode_anomaly_record(record))).startswith("0@0 ANOMALY x score 2.000")


def test_a_dead_letter_shows_its_reason_headers_and_source() -> None:
    line = format_line(TailRecord(0, 9, 0, b"{not json", None, DLQ_HEADERS))
    assert line == "0@9 DEAD LETTER events/2@41 InvalidEventError/invalid_json: not valid JSON | {not json"
    dropped = format_line(TailRecord(0, 9, 0, None, None, (*DLQ_HEADERS, ("kestrel.error.value_dropped", b"99"))))
    assert dropped.endswith("not valid JSON [value_dropped=99] | (null)")


def test_other_records_are_shown_as_compact_json_or_text() -> None:
    assert format_line(TailRecord(1, 2, 0, b'{"label": 1,  "id": "a"}', b"a")) == '1@2 key=a {"label":1,"id":"a"}'
    assert format_line(TailRecord(1, 3, 0, b"\xff plain")) == "1@3 \\xff plain"


def test_control_characters_from_a_record_cannot_break_the_line_or_reach_the_terminal() -> None:
    line = format_line(TailRecord(0, 9, 0, b"bad\n\x1b[31mred", None, DLQ_HEADERS))
    assert "\n" not in line and "\x1b" not in line
    assert line.endswith("| bad\\n\\x1b[31mred")
    odd = {**ANOMALY, "event_id": "e\r7", "explanation": "not an object"}
    assert format_line(TailRecord(0, 5, 0, json.dumps(odd).encode())).startswith("0@5 ANOMALY e\\r7 score 3.142")


def test_json_lines_keep_every_header_in_order_even_a_repeated_name() -> None:
    """Found in review: headers were a JSON object, and a name the input repeated kept only its last value."""
    headers = [("retry", b"1"), ("retry", b"2"), ("kestrel.error.reason", b"invalid_json")]
    out = json.loads(json_line(TailRecord(0, 9, 0, b"x", None, headers)))
    assert out["headers"] == [["retry", "1"], ["retry", "2"], ["kestrel.error.reason", "invalid_json"]]


def test_a_null_header_value_stays_null() -> None:
    """Found in review: a null header value (librdkafka and Java producers send them) was shown as
    an empty one, in both modes the same as ``b""``."""
    record = TailRecord(0, 9, 0, b"{bad", None, (("nullable", None), ("empty", b"")))
    assert json.loads(json_line(record))["headers"] == [["nullable", None], ["empty", ""]]
    letter = TailRecord(0, 9, 0, b"{bad", None, (("nullable", None), ("kestrel.error.reason", b"invalid_json")))
    assert format_line(letter) == "0@9 DEAD LETTER ?/?@? ?/invalid_json:  | {bad"  # the pretty mode takes it


def test_json_lines_keep_integers_beyond_64_bits_and_bytes_that_are_not_text() -> None:
    """Found in review: ``--json`` rounded a 100-bit integer (orjson's parse holds it as a float),
    and a key or header that is not UTF-8 came out the same as its escaped text."""
    big = 123456789012345678901234567890
    value = b'{"event_id":"%d",\r\n "event":{"event_id":%d,"src_bytes":%d}}' % (big, big, big)
    line = json_line(TailRecord(0, 1, 0, value, b"\xff", (("trace", b"\xfe"), ("ok", b"v")), "anomalies"))
    assert "\n" not in line
    out = json.loads(line)
    assert out["value"]["event"] == {"event_id": big, "src_bytes": big}
    assert out["key_base64"] == "/w==" and "key" not in out
    assert out["headers"] == [["trace", None, "/g=="], ["ok", "v"]]
    assert json.loads(json_line(TailRecord(0, 1, 0, b"{}", b"\\xff")))["key"] == "\\xff"


def test_json_lines_keep_coordinates_headers_and_the_value() -> None:
    out = json.loads(json_line(TailRecord(0, 9, 123, b"\xff\xfe", b"k", DLQ_HEADERS, "events.dlq")))
    assert out["topic"] == "events.dlq" and out["offset"] == 9 and out["key"] == "k"
    assert ["kestrel.error.reason", "invalid_json"] in out["headers"] and out["value_base64"] == "//4="
    assert json.loads(json_line(TailRecord(0, 1, 0, b'{"a": 1}')))["value"] == {"a": 1}
    assert json.loads(json_line(TailRecord(0, 1, 0, b"abc")))["value_text"] == "abc"


class ListSource:
    def __init__(self, batches: list[list[TailRecord]]) -> None:
        self.batches = batches

    def poll(self, timeout_ms: int = 200) -> list[TailRecord]:
        return self.batches.pop(0) if self.batches else []

    def close(self) -> None:
        pass


def test_follow_stops_after_max_records() -> None:
    records = [TailRecord(0, i, 0, b"{}") for i in range(5)]
    assert [r.offset for r in follow(ListSource([records[:2], [], records[2:]]), 3)] == [0, 1, 2]


def test_an_illegal_topic_name_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--topic", "bad topic", "--bootstrap-servers", "127.0.0.1:1"]) == 2
    assert capsys.readouterr().err.startswith("error: --topic: 'bad topic' is not a legal Kafka topic name")


def test_a_misspelt_connection_variable_is_warned_about(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Found in review: tail and replay read WORKER_KAFKA__* and ignored a misspelt one silently."""
    monkeypatch.setenv("WORKER_KAFKA__BOOTSTRAP_SERVER", "broker:9092")
    monkeypatch.setenv("WORKER_KAFK__SASL_USERNAME", "ann")
    assert main(["--topic", "t", "--bootstrap-servers", "127.0.0.1:1"]) == 1  # unreachable: exit 1
    err = capsys.readouterr().err
    assert (
        "warning: unknown setting WORKER_KAFKA__BOOTSTRAP_SERVER (did you mean WORKER_KAFKA__BOOTSTRAP_SERVERS?)" in err
    )
    assert "warning: unknown setting WORKER_KAFK__SASL_USERNAME (did you mean WORKER_KAFKA__SASL_USERNAME?)" in err


def test_settings_come_from_the_worker_environment_and_the_option_wins() -> None:
    env = {"WORKER_KAFKA__BOOTSTRAP_SERVERS": "a:1", "WORKER_KAFKA__SECURITY_PROTOCOL": "SSL"}
    assert tool_kafka_settings(env, None).bootstrap_servers == "a:1"
    assert tool_kafka_settings(env, "b:2") == KafkaSettings(bootstrap_servers="b:2", security_protocol="SSL")  # type: ignore[arg-type]


def test_unreachable_broker_is_one_clear_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--topic", "anomalies", "--bootstrap-servers", "127.0.0.1:1"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: cannot reach 127.0.0.1:1") and len(err.strip().splitlines()) == 1


def test_help_shows_defaults(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["--help"])
    assert "(default: anomalies)" in capsys.readouterr().out


@pytest.mark.kafka
def test_tails_a_real_topic_from_the_beginning(kafka_broker, capsys: pytest.CaptureFixture[str]) -> None:  # type: ignore[no-untyped-def]
    from worker.kafka_publisher import KafkaPublisher  # noqa: PLC0415
    from worker.topic_tools import create_topics  # noqa: PLC0415

    bootstrap = kafka_broker.bootstrap_servers
    topic = f"tail-{uuid.uuid4().hex[:8]}"
    create_topics(bootstrap, [(topic, 1)])
    sink = KafkaPublisher(KafkaSettings(bootstrap_servers=bootstrap))
    sink.send(topic, json.dumps(ANOMALY).encode(), b"e-7", [])
    sink.send(topic, b"{not json", None, list(DLQ_HEADERS))
    sink.send(topic, b'{"a": 1}', None, [])
    sink.flush(10.0)
    sink.close(5.0)
    assert main(["--topic", topic, "--bootstrap-servers", bootstrap, "--from-beginning", "--max", "3"]) == 0
    out, err = capsys.readouterr()
    assert [line.split(" ")[1] for line in out.splitlines()] == ["ANOMALY", "DEAD", '{"a":1}']
    assert err.strip() == "3 records"
    assert main(["--topic", topic, "--bootstrap-servers", bootstrap, "--from-beginning", "--max", "1", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["value"]["event_id"] == "e-7"
    assert main(["--topic", "no-such-topic-here", "--bootstrap-servers", bootstrap]) == 1
    assert "no topic 'no-such-topic-here'" in capsys.readouterr().err


_PIPED_TAIL = """
import sys
import worker.topic_tools
from worker.record_format import TailRecord


class Endless:
    def __init__(self, settings, topic, from_beginning):
        self.polls = 0

    def poll(self, timeout_ms=200):
        self.polls += 1
        return [TailRecord(0, self.polls * 100 + i, 0, b'{"a": %d}' % i) for i in range(100)]

    def close(self):
        pass


worker.topic_tools.TopicFollower = Endless
from worker.tail import main

sys.exit(main(["--topic", "t", "--bootstrap-servers", "127.0.0.1:1"]))
"""


def test_a_reader_that_goes_away_stops_tail_quietly() -> None:
    """``python -m worker.tail ... | head -1``. Found in review: a ``BrokenPipeError`` traceback."""
    command = [sys.executable, "-c", _PIPED_TAIL]
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=ROOT)
    assert proc.stdout is not None and proc.stderr is not None
    first = proc.stdout.readline()
    proc.stdout.close()  # what head does after its line
    err = proc.stderr.read().decode()
    assert proc.wait(30) == 0 and first.startswith(b"0@") and "Traceback" not in err, err
    assert err.endswith(" records\n")


def test_a_value_orjson_cannot_write_back_is_shown_as_received() -> None:
    """Found in review: a value nested deeper than orjson writes stopped tail with a traceback,
    and an integer beyond 64 bits was shown rounded."""
    deep = b'{"a": ' + b"[" * 300 + b"]" * 300 + b"}"
    assert format_line(TailRecord(0, 1, 0, deep)) == "0@1 " + deep.decode()
    wide = b'{"event_id": 83962606556023347568268327321612582954,\n "a": 1}'
    assert format_line(TailRecord(0, 2, 0, wide)) == '0@2 {"event_id": 83962606556023347568268327321612582954,  "a": 1}'
    assert format_line(TailRecord(0, 3, 0, b'{"a": 1}')) == '0@3 {"a":1}'
    nested = b'{"event": {"ids": [1, 123456789012345678901234567890]}}'
    assert format_line(TailRecord(0, 4, 0, nested)) == "0@4 " + nested.decode()


@pytest.mark.kafka
@pytest.mark.parametrize(
    ("codec", "error"),
    [
        ("gzip", "zlib.error: Error -3 while decompressing data"),
        ("zstd", "kafka.errors.CorruptRecordError: [Error 2] CorruptRecordError: Found invalid"),
    ],
)
def test_a_batch_that_cannot_be_read_ends_tail_with_one_line_naming_where(
    kafka_broker: Any, capsys: pytest.CaptureFixture[str], codec: str, error: str
) -> None:
    """Found in review: the records before it were shown, then a ``zlib.error`` traceback; and a
    batch that decompresses to garbage (kafka-python's own ``CorruptRecordError``) was named
    without its partition and offset."""
    from corrupt_batches import send  # noqa: PLC0415

    from worker.topic_tools import create_topics  # noqa: PLC0415

    bootstrap = kafka_broker.bootstrap_servers
    topic = f"tail-{uuid.uuid4().hex[:8]}"
    create_topics(bootstrap, [(topic, 1)])
    send(bootstrap, topic, [(0, b'{"i": %d}' % i) for i in range(10)])
    send(
        bootstrap,
        topic,
        [(0, b'{"i": %d, "pad": "%s"}' % (i, b"ab" * 60)) for i in range(10, 15)],
        corrupt=True,
        codec=codec,
    )
    assert main(["--topic", topic, "--bootstrap-servers", bootstrap, "--from-beginning", "--max", "20", "--json"]) == 1
    out, err = capsys.readouterr()
    assert len(out.splitlines()) == 10
    (line,) = err.strip().splitlines()
    assert line.startswith(f"error: read failed: the record batch at partition 0 offset 10 cannot be read ({error}"), (
        line
    )
