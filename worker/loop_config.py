"""The loop's settings: topics, batching, limits and retry timing (:class:`LoopConfig`, built
from the worker's settings at the entry point)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class LoopConfig:
    """Topics, batching, limits and retry timing of the loop (seconds unless named ``_ms``).

    ``undeliverable``: what to do with an output the broker refuses ``max_attempts`` times:
    ``skip`` (count, log its source coordinates, commit past it) or ``stop`` (stop the worker
    without committing the batch, exit code 1). ``overlap_batches``: poll and score the next
    batch while this one's outputs are in flight (see :mod:`worker.loop`).
    """

    output_topic: str
    dead_letter_topic: str
    batch_size: int = 500
    batch_wait_ms: int = 20
    max_value_bytes: int = 65536
    max_request_bytes: int = 1_000_000
    idle_poll_ms: int = 100
    flush_timeout_s: float = 5.0
    commit_timeout_ms: int = 5000
    backoff_initial_s: float = 0.2
    backoff_max_s: float = 5.0
    probe_interval_s: float = 2.0
    lag_interval_s: float = 1.0
    shutdown_timeout_s: float = 20.0
    rebuild_after_failures: int = 3
    rebuild_after_s: float = 10.0
    undeliverable: str = "skip"
    overlap_batches: bool = True
    #: Under load, commit at most this often (0: after every batch). Fewer commit requests (a
    #: kafka-python commit waits for the broker's answer); a crash re-reads at most this much more.
    commit_interval_s: float = 0.0
    #: Longest wait, inside a rebalance, for the batch in flight to be acknowledged (kafka-python
    #: runs the callback on its I/O thread: no heartbeats meanwhile, so well under the session timeout).
    revoke_flush_timeout_s: float = 1.0
    #: Longest wait per output topic for the producer's start-up metadata (see ``Sink.prepare``).
    prepare_timeout_s: float = 5.0
