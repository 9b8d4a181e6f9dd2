"""Typed errors of the worker (all derive from :class:`detector.errors.DetectorError`)."""

from __future__ import annotations

from detector.errors import ArtifactError, DetectorError


class WorkerError(DetectorError):
    """Root of the errors the worker raises on purpose."""


class SettingsError(WorkerError, ValueError):
    """A setting is missing or invalid; the message is one line meant for the operator."""


class BrokerError(WorkerError):
    """The Kafka broker could not be reached or refused a request (retryable).

    ``fatal`` says the client itself is broken: retrying with it is useless, it must be rebuilt.
    """

    def __init__(self, message: str, *, fatal: bool = False) -> None:
        super().__init__(message)
        self.fatal = fatal


class UnreadableBatchError(BrokerError):
    """The client cannot read a fetched batch of one partition (a corrupt record, a header name
    that is not UTF-8, a codec not installed): that partition was paused at ``offset``, before the
    batch's unread records, and the others go on (not fatal)."""

    def __init__(self, message: str, *, partition: tuple[str, int], offset: int) -> None:
        super().__init__(message)
        self.partition = partition
        self.offset = offset


class PublishError(BrokerError):
    """Some produced records were not acknowledged by the broker in time."""


class RecordRefusedError(PublishError):
    """The client refused one record itself (over the request limit, neither key nor value): the
    record's fault, not the broker's; sending it again cannot succeed."""


class CommitError(BrokerError):
    """An offset commit failed; the offsets stay uncommitted and will be retried."""


class BrokerStartError(WorkerError):
    """The embedded broker could not be started."""


class NoLiveVersionError(WorkerError, ArtifactError):
    """The model registry has no live version yet (nothing promoted): a worker started with
    ``--registry`` waits for one, alive and not ready."""
