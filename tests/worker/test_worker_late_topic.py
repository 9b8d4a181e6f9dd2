"""A worker started before its input topic exists reads it as soon as it appears, on both clients
(found in review: librdkafka looked for the topic again only after its 300 s metadata interval)."""

from __future__ import annotations

import time
from typing import Any

import pytest
from expectations import renumber
from kafka_harness import Topics, WorkerProcess, committed_offsets, events_bytes, produce, wait_for
from tiny_model import TinyModel

pytestmark = pytest.mark.kafka


def test_a_topic_created_after_the_worker_started_is_read_within_seconds(
    kafka_client: str, kafka_broker: Any, tiny_model: TinyModel
) -> None:
    bootstrap = kafka_broker.bootstrap_servers
    topics = Topics.unique(bootstrap)
    late = Topics(f"late-{topics.input}", topics.output, topics.dlq, topics.group)  # not created
    worker = WorkerProcess(tiny_model.path, bootstrap, late, client=kafka_client)
    try:
        time.sleep(6)  # subscribed and told the topic is not there (kafka-python's metadata request may create it)
        assert worker.process.poll() is None, worker.log()
        events = renumber(tiny_model.normal_events[:200], "late")
        ends = produce(bootstrap, late.input, events_bytes(events))  # the broker creates it on first use
        wait_for(
            lambda: committed_offsets(bootstrap, late.group, late.input, ends) == ends,
            40,
            "every event of the new topic committed",
        )
        assert worker.metric("kestrel_events_total") == len(events)
    finally:
        worker.stop_quietly()
