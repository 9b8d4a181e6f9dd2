"""Typed errors shared by trainer and worker.

Every error the project raises on purpose derives from :class:`DetectorError`, so a caller can
catch "ours" without catching programming errors. Where the meaning matches a built-in, the
class also derives from it (``ValueError``), so generic callers keep working.
"""

from __future__ import annotations


class DetectorError(Exception):
    """Root of every error raised on purpose by this project."""


class InvalidEventError(DetectorError, ValueError):
    """An event breaks the inbound contract (wrong type, NaN/inf, missing field, not JSON, ...).

    Attributes:
        reason: a short, stable machine-readable reason (used as a metric label).
        field: the offending field, when there is one.
    """

    def __init__(self, message: str, *, reason: str, field: str | None = None) -> None:
        super().__init__(message)
        self.reason = reason
        self.field = field


class SpecError(DetectorError, ValueError):
    """A feature spec is inconsistent with itself or with the data."""


class ArtifactError(DetectorError):
    """A model artifact is missing, tampered with, truncated or incompatible."""


class DataError(DetectorError, ValueError):
    """A training/evaluation data file cannot be used (bad format, missing column, bad value)."""


class UsageError(DetectorError, ValueError):
    """A command line asks for something impossible (options that go together, an out-of-range value).

    Command-line tools exit with status 2 for it, as argparse does for a malformed command line.
    """


class NotFittedError(DetectorError, RuntimeError):
    """A component was used before it was fitted."""


class RegistryError(DetectorError):
    """The model registry cannot do what was asked (unknown version, broken pointer, no roll-back target)."""
