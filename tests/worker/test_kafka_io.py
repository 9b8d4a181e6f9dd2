"""Settings that would crash or stall the worker later, a batch kafka-python cannot read, and a
librdkafka producer's fatal error."""

from __future__ import annotations

import zlib
from types import SimpleNamespace

import kafka.errors as kafka_errors
import pytest
from confluent_kafka import Consumer, KafkaError, KafkaException
from confluent_kafka import TopicPartition as ConfluentPartition
from kafka import TopicPartition

from worker import confluent_io
from worker.errors import BrokerError, SettingsError, UnreadableBatchError
from worker.kafka_io import KafkaSource
from worker.settings import load_settings


@pytest.mark.parametrize("topic", ["bad topic", "events/x", "..", ".", "t" * 250, "événements"])
def test_illegal_topic_names_are_refused_at_start_up(topic: str) -> None:
    with pytest.raises(SettingsError, match="legal Kafka topic name"):
        load_settings({"model_dir": "m", "kafka": {"output_topic": topic}})


def test_input_limit_is_bounded_by_what_the_producer_can_send() -> None:
    with pytest.raises(SettingsError, match="a third of max_request_bytes"):
        load_settings({"model_dir": "m", "kafka": {"max_message_bytes": 400_000}})
    settings = load_settings(
        {"model_dir": "m", "kafka": {"max_message_bytes": 400_000, "max_request_bytes": 1_200_000}}
    )
    assert settings.kafka.max_request_bytes == 1_200_000
    with pytest.raises(SettingsError):
        load_settings({"model_dir": "m", "kafka": {"max_request_bytes": 1000}})


def test_undeliverable_policy_values() -> None:
    assert load_settings({"model_dir": "m"}).undeliverable_policy == "skip"
    assert load_settings({"model_dir": "m", "undeliverable_policy": "stop"}).undeliverable_policy == "stop"
    with pytest.raises(SettingsError):
        load_settings({"model_dir": "m", "undeliverable_policy": "retry-forever"})


def test_kafka_client_choice() -> None:
    assert load_settings({"model_dir": "m"}).kafka_client == "kafka-python"
    assert load_settings({"model_dir": "m", "kafka_client": "confluent"}).kafka_client == "confluent"
    with pytest.raises(SettingsError):
        load_settings({"model_dir": "m", "kafka_client": "librdkafka"})


def _raised_in(module: str, error: Exception) -> Exception:
    """``error`` as raised by code of ``module`` (a file name under kafka-python's package)."""
    namespace: dict[str, Exception] = {"error": error}
    try:
        exec(compile("raise error", module, "exec"), namespace)  # a frame with that file name
    except Exception as exc:
        return exc
    raise AssertionError("not raised")


UNREADABLE = [
    kafka_errors.CorruptRecordError("Found invalid record structure: UnicodeDecodeError(...)"),
    kafka_errors.UnsupportedCodecError("Libraries for lz4 compression codec not found"),
    _raised_in("/site-packages/kafka/record/default_records.py", UnicodeDecodeError("utf-8", b"\xff", 0, 1, "bad")),
    # found in review: a batch that does not decompress raised the codec's own error out of the loop
    _raised_in("/site-packages/kafka/codec.py", zlib.error("Error -3 while decompressing data")),
]


def _raising(error: Exception, fetcher: object = None) -> KafkaSource:
    source = KafkaSource.__new__(KafkaSource)
    paused: list[TopicPartition] = []
    consumer = SimpleNamespace(
        poll=lambda **kw: (_ for _ in ()).throw(error), _fetcher=fetcher, pause=paused.append, paused=paused
    )
    source._consumer = consumer  # type: ignore[assignment]
    return source


@pytest.mark.parametrize("error", UNREADABLE)
def test_a_batch_kafka_python_cannot_read_sets_its_partition_aside(error: Exception) -> None:
    """Found in review: kafka-python keeps a dead iterator after such an error and never fetches
    again; as a transient error the worker sat idle for good, healthy and lag 0."""
    stuck = SimpleNamespace(topic_partition=TopicPartition("in", 2), next_fetch_offset=7)
    fetcher = SimpleNamespace(_next_partition_records=stuck)
    source = _raising(error, fetcher)
    with pytest.raises(UnreadableBatchError) as failed:
        source.poll(10, 10)
    assert (failed.value.partition, failed.value.offset, failed.value.fatal) == (("in", 2), 7, False)
    assert "partition in[2] paused at offset 7" in str(failed.value)
    assert fetcher._next_partition_records is None and source._consumer.paused == [TopicPartition("in", 2)]


@pytest.mark.parametrize("error", [*UNREADABLE, kafka_errors.IllegalStateError("closed")])
def test_without_the_fetchers_state_such_a_batch_rebuilds_the_consumer(error: Exception) -> None:
    with pytest.raises(BrokerError) as failed:
        _raising(error).poll(10, 10)
    assert failed.value.fatal and not isinstance(failed.value, UnreadableBatchError)


@pytest.mark.parametrize("error", [ValueError("bug"), AssertionError("coordinator"), zlib.error("elsewhere")])
def test_an_error_not_raised_while_decoding_rebuilds_the_consumer_and_pauses_nothing(error: Exception) -> None:
    """Any exception out of kafka-python's poll stays in the loop, and only one raised while it
    decoded a batch sets a partition aside: the fetcher holds the partition it is draining."""
    stuck = SimpleNamespace(topic_partition=TopicPartition("in", 2), next_fetch_offset=7)
    source = _raising(error, SimpleNamespace(_next_partition_records=stuck))
    with pytest.raises(BrokerError) as failed:
        source.poll(10, 10)
    assert failed.value.fatal and not isinstance(failed.value, UnreadableBatchError)
    assert source._consumer.paused == []


def test_a_broker_away_is_not_fatal_for_kafka_python() -> None:
    with pytest.raises(BrokerError) as failed:
        _raising(kafka_errors.KafkaTimeoutError("broker away")).poll(10, 10)
    assert not failed.value.fatal


def test_librdkafka_takes_the_workers_short_fetch_queue_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    # librdkafka postpones a partition's next fetch by 1 s by default once the consumer's prefetch
    # queue is full; a worker that drains the queue faster waited out the rest of that second under
    # a backlog (benchmarks/librdkafka_fetch_backoff.py). The real client must accept the shorter
    # backoff (a misspelt or unsupported property makes it refuse the configuration).
    seen: dict[str, object] = {}

    class Recording(Consumer):  # type: ignore[misc]
        def __init__(self, config: dict[str, object]) -> None:
            seen.update(config)
            super().__init__(config)

    monkeypatch.setattr(confluent_io, "Consumer", Recording)
    settings = load_settings({"model_dir": "m", "kafka": {"bootstrap_servers": "127.0.0.1:1"}}).kafka
    source = confluent_io.ConfluentSource(settings, lambda partitions, lost=False: None, lambda partitions: None)
    try:
        assert seen["fetch.queue.backoff.ms"] == confluent_io.FETCH_QUEUE_BACKOFF_MS
        assert confluent_io.FETCH_QUEUE_BACKOFF_MS <= 100
    finally:
        source.close(1000)


def test_the_librdkafka_assignment_keeps_its_last_answer_when_the_client_errs() -> None:
    """Found in review: an error read as "nothing assigned", and the loop dropped the uncommitted
    offsets of every partition it owns (their records were then repeated after a restart)."""
    answers: list[object] = [
        [ConfluentPartition("in", 0), ConfluentPartition("in", 1)],
        KafkaException(KafkaError(KafkaError._TRANSPORT, "broker away")),
    ]

    def assignment() -> object:
        answer = answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer

    source = confluent_io.ConfluentSource.__new__(confluent_io.ConfluentSource)
    source._consumer = SimpleNamespace(assignment=assignment)  # type: ignore[assignment]
    source._assignment, source._assignment_read_at, source._last_assignment = None, 0.0, set()
    source._in_rebalance = True  # read afresh every time (no cache)
    assert source.assignment() == {("in", 0), ("in", 1)}
    assert source.assignment() == {("in", 0), ("in", 1)}
    assert answers == []


def test_a_librdkafka_committed_offset_it_could_not_read_is_unknown_not_uncommitted() -> None:
    """Found in review: a partition whose committed offset came back with an error was read as
    "no commit", so nothing kept a batch in flight from committing below the group's offset."""

    def committed(partitions: list[ConfluentPartition], timeout: float) -> list[SimpleNamespace]:
        # 0: committed at 17; 1: the coordinator erred (librdkafka sets the partition's error); 2: no commit yet
        erred = KafkaError(KafkaError.COORDINATOR_LOAD_IN_PROGRESS)
        offsets, errors = {0: 17}, {1: erred}
        return [
            SimpleNamespace(topic=tp.topic, partition=tp.partition, offset=offsets.get(tp.partition, -1001),
                            error=errors.get(tp.partition))
            for tp in partitions
        ]  # fmt: skip

    source = confluent_io.ConfluentSource.__new__(confluent_io.ConfluentSource)
    source._consumer = SimpleNamespace(committed=committed)  # type: ignore[assignment]
    zero, one, two = (ConfluentPartition("in", p) for p in range(3))
    assert source._group_committed([zero, two]) == {("in", 0): 17}
    assert source._group_committed([zero, one, two]) is None
