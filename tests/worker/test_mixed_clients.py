"""A kafka-python and a librdkafka worker in one consumer group: a client switch done as a rolling
update (the Python package defaults to kafka-python, the image to librdkafka). Both clients offer
their default assignment strategies (range, then roundrobin) and commit bare offsets, so they form
one group, split the partitions, and each reads where the other committed. A review also ran the
switch under load, both ways, every offset accounted (no test here: minutes of CI)."""

from __future__ import annotations

from typing import Any

import pytest
from expectations import expected_flags, renumber
from kafka_harness import TopicReader, Topics, WorkerProcess, committed_offsets, events_bytes, produce, wait_for
from tiny_model import TinyModel

pytestmark = [pytest.mark.kafka, pytest.mark.slow]


def test_a_kafka_python_worker_and_a_librdkafka_worker_share_one_group(
    kafka_broker: Any, tiny_model: TinyModel
) -> None:
    bootstrap = kafka_broker.bootstrap_servers
    topics = Topics.unique(bootstrap, partitions=4)
    events = renumber(tiny_model.attack_events + tiny_model.normal_events, "m")
    expected = expected_flags(tiny_model.path, events)
    out = TopicReader(bootstrap, topics.output)
    old = WorkerProcess(tiny_model.path, bootstrap, topics, client="kafka-python")
    new: WorkerProcess | None = None
    try:
        old.wait_ready(60)  # the fleet as it was; it leads the group
        new = WorkerProcess(tiny_model.path, bootstrap, topics, client="confluent")
        new.wait_ready(60)
        pair = (old, new)
        wait_for(lambda: all(w.status("/readyz") == 200 for w in pair), 60, "both assigned")
        ends = produce(bootstrap, topics.input, events_bytes(events))
        wait_for(lambda: committed_offsets(bootstrap, topics.group, topics.input, ends) == ends, 90, "all committed")
        counts = [w.metric("kestrel_events_total") for w in pair]
        assert min(counts) > 0 and sum(counts) == len(events), counts
        ids = [m.key.decode() for m in out.drain_all()]
        assert expected.must_flag <= set(ids) <= expected.may_flag and len(ids) == len(set(ids))
        assert old.terminate(30) == 0, old.log()  # the last kafka-python worker goes ...
        more = renumber(tiny_model.normal_events[:100], "after")
        ends = produce(bootstrap, topics.input, events_bytes(more))  # ... and the other reads on from its commits
        wait_for(lambda: committed_offsets(bootstrap, topics.group, topics.input, ends) == ends, 90, "all committed")
        assert new.metric("kestrel_events_total") == counts[1] + len(more)
        assert new.terminate(30) == 0, new.log()
    finally:
        out.close()
        old.stop_quietly()
        if new is not None:
            new.stop_quietly()
