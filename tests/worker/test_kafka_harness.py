"""The test harness's topic reader on the broker: each record once, and a missed stretch read again;
where worker logs go."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import kafka_harness
import pytest
from expectations import Expected
from kafka_harness import TopicReader, Topics, assert_flagged, produce

pytestmark = pytest.mark.kafka


def test_reader_keeps_each_record_once_and_reads_a_missed_stretch_again(kafka_broker: Any) -> None:
    bootstrap = kafka_broker.bootstrap_servers
    topics = Topics.unique(bootstrap, partitions=2)
    ends = produce(bootstrap, topics.input, [b"%d" % i for i in range(40)])
    reader = TopicReader(bootstrap, topics.input)
    first = [(m.partition, m.offset) for m in reader.drain_all(quiet_s=0.5)]
    assert sorted(first) == [(0, o) for o in range(ends.get(0, 0))] + [(1, o) for o in range(ends.get(1, 0))]
    # As a reader handed a later batch before an earlier one is stored: offsets 2-4 of the fullest
    # partition never arrived (the beginning, 0, too on the other partition).
    fullest = max(ends, key=lambda p: ends[p])
    skipped = {(fullest, 2), (fullest, 3), (fullest, 4), (1 - fullest, 0)}
    reader.messages[:] = [m for m in reader.messages if (m.partition, m.offset) not in skipped]
    for partition, offset in skipped:  # the state a skipped stretch leaves
        reader._offsets[partition].discard(offset)
    reader._reread.add((fullest, 2))  # as if offset 2 were a hole already read again in vain
    produce(bootstrap, topics.input, [b"late"])  # a poll that returns something finds the gap
    again = [(m.partition, m.offset) for m in reader.drain_all(quiet_s=0.5)]
    assert again == sorted(set(again))  # once each, in log order
    # Offsets 3-4 and the other partition's 0 back (the hole at 2 hides nothing), and the new record.
    assert set(first) - set(again) == {(fullest, 2)} and len(set(again) - set(first)) == 1
    reader.close()


def test_a_missing_anomaly_report_says_whether_the_log_holds_the_records(kafka_broker: Any) -> None:
    bootstrap = kafka_broker.bootstrap_servers
    topics = Topics.unique(bootstrap, partitions=1)
    produce(bootstrap, topics.output, [b"{}"] * 5, keys=[b"e-%d" % i for i in range(5)])
    flagged = {"e-0", "e-1", "e-2", "e-9"}  # e-9 was never written
    expected = Expected(must_flag=flagged, may_flag=flagged, flag_rate_normals=0.0)
    where: dict[str, Any] = {"bootstrap": bootstrap, "topic": topics.output, "workers": []}
    with pytest.raises(AssertionError, match=r"3 expected anomaly records .* a fresh read finds 2 of them"):
        assert_flagged(["e-0"], expected, **where)
    assert_flagged(sorted(flagged), expected, **where)
    with pytest.raises(AssertionError, match="e-3"):
        assert_flagged([*flagged, "e-3"], expected, **where)


def test_worker_logs_go_to_pytests_temporary_directory_and_elsewhere_to_one_removed_at_exit(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    logs = kafka_harness.WorkerLogs
    assert logs.path().is_relative_to(tmp_path_factory.getbasetemp())
    monkeypatch.setattr(logs, "directory", None)
    registered: list[tuple[Any, ...]] = []
    monkeypatch.setattr(kafka_harness.atexit, "register", lambda *a, **k: registered.append(a))
    made = logs.path()
    assert made.is_dir() and logs.path() == made
    assert registered == [(kafka_harness.shutil.rmtree, made)]
    Path.rmdir(made)
