"""The librdkafka sink's handling of delivery errors, on fake producers (the broker-backed
behaviour is the contract suite's, tests/worker/test_kafka_contract.py)."""

from __future__ import annotations

import pytest
from confluent_kafka import KafkaError, KafkaException

from worker.confluent_sink import ConfluentSink
from worker.errors import PublishError
from worker.outcomes import RawRecord
from worker.output_guard import OutputRecord


class _FencedProducer:
    """A librdkafka producer whose idempotence broke (what a broker that lost its state causes):
    ``produce`` queues, ``poll``/``flush`` raise the fatal error, as confluent-kafka does without
    an ``error_cb``. The real case runs in tests/worker/test_worker_faults.py (broker SIGKILL)."""

    def __init__(self) -> None:
        self.produced = 0

    def produce(self, *args: object, **kwargs: object) -> None:
        self.produced += 1

    def _raise(self, *args: object) -> int:
        error = KafkaError(KafkaError.OUT_OF_ORDER_SEQUENCE_NUMBER, "sequence desynchronization", fatal=True)
        raise KafkaException(error)

    poll = flush = list_topics = _raise


def test_confluent_sink_turns_a_fatal_producer_error_into_a_reset_not_a_crash() -> None:
    producers: list[object] = [_FencedProducer(), _DeliveringProducer()]
    sink = ConfluentSink(lambda: producers.pop(0))  # type: ignore[arg-type, return-value]
    sink.send(OutputRecord("anomaly", "out", b"k", b"v", [], RawRecord("in", 0, 1, 0, None, b"{}")))
    mark = sink.mark()
    with pytest.raises(PublishError) as failed:
        sink.flush(1.0, through=mark)
    assert failed.value.fatal and "OUT_OF_ORDER_SEQUENCE_NUMBER" in str(failed.value)
    assert not sink.acknowledged(mark) and sink.pending == 1  # kept for the next producer
    sink.reset()
    assert sink.flush(1.0, through=mark) == [] and sink.pending == 0


class _DeliveringProducer:
    """Acknowledges every record at the next poll."""

    def __init__(self) -> None:
        self._reports: list[object] = []

    def produce(self, *args: object, on_delivery: object = None, **kwargs: object) -> None:
        self._reports.append(on_delivery)

    def poll(self, timeout: float = 0.0) -> int:
        reports, self._reports = self._reports, []
        for report in reports:
            report(None, None)  # type: ignore[operator]
        return len(reports)
