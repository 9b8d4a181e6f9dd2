"""An in-memory stand-in for the ``KafkaConsumer`` calls the retrain job's window reader makes.

``test_kafka_consumer_contract.py`` runs the same behaviours against it and a real
``KafkaConsumer`` on the embedded broker (or ``KAFKA_BOOTSTRAP_SERVERS``): what a partition lists,
where it begins and (at most) ends, the offset for a time, seek/poll/position, and the window the
reader gets from the same records.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from kafka import TopicPartition

TOPIC = "events"


@dataclass
class Message:
    offset: int
    timestamp: int
    value: bytes


class FakeConsumer:
    """Just what the window reader uses of ``KafkaConsumer``; counts the most values it handed out.

    Event ``i`` lives on partition ``i % partitions`` at timestamp ``base_ms + i * step_ms`` (newest =
    highest ``i``), value ``{"i": i}``. ``end_behind`` makes ``end_offsets`` answer that many records short of
    each partition's end, as a broker that reports a batch-based end does (the embedded one answers
    with the start of the last record batch).
    """

    def __init__(
        self,
        partitions: int,
        per_partition: int,
        batch: int = 50,
        *,
        topic: str = TOPIC,
        base_ms: int = 1_000,
        step_ms: int = 1,
        end_behind: int = 0,
    ) -> None:
        self.topic = topic
        self.logs: dict[int, list[Message]] = {p: [] for p in range(partitions)}
        for i in range(partitions * per_partition):
            p = i % partitions
            self.logs[p].append(Message(len(self.logs[p]), base_ms + i * step_ms, json.dumps({"i": i}).encode()))
        self.batch = batch
        self.end_behind = end_behind
        self.assigned: list[TopicPartition] = []
        self.positions: dict[TopicPartition, int] = {}
        self.handed_out = 0
        self.polls = 0

    def partitions_for_topic(self, topic: str) -> set[int] | None:
        return set(self.logs) if topic == self.topic else None

    def assign(self, tps: list[TopicPartition]) -> None:
        self.assigned = list(tps)

    def end_offsets(self, tps: list[TopicPartition]) -> dict[TopicPartition, int]:
        return {tp: max(0, len(self.logs[tp.partition]) - self.end_behind) for tp in tps}

    def beginning_offsets(self, tps: list[TopicPartition]) -> dict[TopicPartition, int]:
        return dict.fromkeys(tps, 0)

    def offsets_for_times(self, wanted: dict[TopicPartition, int]) -> dict[TopicPartition, Message | None]:
        """The first record at or after each time (as the client's ``OffsetAndTimestamp``), or ``None``."""
        return {tp: next((m for m in self.logs[tp.partition] if m.timestamp >= ts), None) for tp, ts in wanted.items()}

    def seek(self, tp: TopicPartition, offset: int) -> None:
        self.positions[tp] = offset

    def position(self, tp: TopicPartition) -> int:
        return self.positions[tp]

    def poll(self, timeout_ms: int) -> dict[TopicPartition, list[Message]]:
        self.polls += 1
        out = {}
        for tp in self.assigned:
            got = self.logs[tp.partition][self.positions[tp] : self.positions[tp] + self.batch]
            if got:
                out[tp] = got
                self.positions[tp] += len(got)
                self.handed_out += len(got)
        return out

    def close(self, autocommit: bool = True) -> None:
        self.closed = True
