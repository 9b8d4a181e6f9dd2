"""A record batch the Kafka client cannot decompress (a corrupt gzip payload under a valid checksum,
as a broker with a damaged log or a faulty producer serves it), on both clients.

Found in review: librdkafka stops at such a batch and hands back its error on every fetch, which
the confluent source dropped after a rate-limited log line: the partition stalled unseen, its lag
counted as pending work, and after ``WORKER_NO_PROGRESS_TIMEOUT_S`` liveness failed, so a restart
read the same batch and the worker crash-looped. Both clients now set the partition aside at the
batch (paused, logged once as ``partition_unreadable``, ``kestrel_unreadable_partitions``), and the
other partitions are read and committed to their ends.
"""

from __future__ import annotations

from typing import Any

import pytest
from corrupt_batches import send
from expectations import renumber
from kafka_harness import Topics, assert_one_partition_set_aside, events_bytes
from tiny_model import TinyModel

pytestmark = [pytest.mark.kafka, pytest.mark.slow]


def test_a_batch_the_client_cannot_decompress_sets_its_partition_aside_and_the_others_go_on(
    kafka_client: str, kafka_broker: Any, tiny_model: TinyModel
) -> None:
    bootstrap = kafka_broker.bootstrap_servers
    topics = Topics.unique(bootstrap, partitions=3)
    events = events_bytes(renumber(tiny_model.normal_events[:40], "u"))
    send(bootstrap, topics.input, [(i % 3, v) for i, v in enumerate(events[:30])])  # offsets 0-9 each
    send(bootstrap, topics.input, [(0, v) for v in events[30:35]], corrupt=True)  # offsets 10-14
    send(bootstrap, topics.input, [(0, v) for v in events[35:40]])  # 15-19, behind the batch
    ends, expected = {0: 20, 1: 10, 2: 10}, {0: 10, 1: 10, 2: 10}
    assert_one_partition_set_aside(tiny_model.path, bootstrap, topics, kafka_client, ends, expected, at=10)
