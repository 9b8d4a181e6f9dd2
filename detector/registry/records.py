"""Records of the model registry: version information, history lines, and what they imply.

Pure functions and frozen dataclasses only; :mod:`detector.registry.model_registry` does the I/O.
"""

from __future__ import annotations

import getpass
import json
import logging
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

logger = logging.getLogger(__name__)

Scalar = str | int | float | bool | None
Action = Literal["promote", "rollback"]


@dataclass(frozen=True)
class VersionInfo:
    """One registered version.

    Attributes:
        version: the manifest ``model_version`` (also the directory name).
        created_at: ISO-8601 time the model was trained (from the manifest), if readable.
        path: the version's artifact directory (pass it to ``Detector.load``).
        is_live: whether ``LIVE`` names this version.
        threshold: the scorer threshold from the manifest, if readable.
        metrics: scalar values of the manifest's ``training`` and ``calibration`` sections,
            flattened to dotted keys (``training.best_epoch``, ``calibration.target_fpr``, ...).
        manifest: the whole manifest (empty when it could not be read).
        error: why the manifest could not be read, else ``None``.
    """

    version: str
    created_at: str | None
    path: Path
    is_live: bool
    threshold: float | None
    metrics: dict[str, Scalar]
    manifest: dict[str, Any] = field(repr=False, compare=False)
    error: str | None = None

    def as_dict(self, *, with_manifest: bool = False) -> dict[str, Any]:
        """JSON-ready form; the manifest only when asked."""
        out = asdict(self)
        out["path"] = str(self.path)
        if not with_manifest:
            del out["manifest"]
        return out


@dataclass(frozen=True)
class HistoryRecord:
    """One line of ``history.jsonl``: ``LIVE`` went from ``previous`` to ``version`` at ``at``."""

    at: str
    version: str
    previous: str | None
    reason: str
    actor: str
    action: Action

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def default_actor() -> str:
    """The login name of the current user, or ``unknown`` where there is none."""
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # containers often run as a uid without a passwd entry
        return "unknown"


def version_info(
    version: str, raw_manifest: bytes | None, path: Path, *, is_live: bool, problem: str | None = None
) -> VersionInfo:
    """Build a :class:`VersionInfo` from a version's ``manifest.json`` bytes (``None``: missing).

    ``problem`` (the entry could not be read at all, or lies outside the registry) becomes the
    info's ``error``, with an empty manifest.
    """
    manifest: dict[str, Any] = {}
    error = problem
    if problem is None:
        try:
            parsed = json.loads(raw_manifest) if raw_manifest is not None else None
            if not isinstance(parsed, dict):
                raise ValueError("missing or not a JSON object")
            manifest = parsed
        except ValueError as exc:
            error = f"unreadable manifest: {exc}"
        except RecursionError:
            error = "unreadable manifest: nested too deeply"
    scorer = manifest.get("scorer")
    threshold = scorer.get("threshold") if isinstance(scorer, dict) else None
    return VersionInfo(
        version=version,
        created_at=str(manifest["created_at"]) if "created_at" in manifest else None,
        path=path,
        is_live=is_live,
        threshold=float(threshold) if isinstance(threshold, (int, float)) else None,
        metrics=summarise_metrics(manifest),
        manifest=manifest,
        error=error,
    )


def parse_history(raw: bytes) -> list[HistoryRecord]:
    """Parse ``history.jsonl`` bytes, oldest first; unreadable lines (a torn append) are skipped with a warning."""
    records = []
    for number, line in enumerate(raw.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
            records.append(
                HistoryRecord(
                    at=str(item["at"]),
                    version=str(item["version"]),
                    previous=None if item.get("previous") is None else str(item["previous"]),
                    reason=str(item.get("reason", "")),
                    actor=str(item.get("actor", "")),
                    action="rollback" if item.get("action") == "rollback" else "promote",
                )
            )
        except (ValueError, KeyError, TypeError):
            logger.warning("registry_history_line_unreadable", extra={"line": number})
    return records


def history_line(record: HistoryRecord) -> bytes:
    """One ``history.jsonl`` line (UTF-8 JSON, sorted keys, trailing newline)."""
    return json.dumps(record.as_dict(), sort_keys=True, ensure_ascii=False).encode("utf-8") + b"\n"


def summarise_metrics(manifest: Mapping[str, Any]) -> dict[str, Scalar]:
    """Scalars of the manifest's ``training`` and ``calibration`` sections, as dotted keys (two levels deep)."""
    out: dict[str, Scalar] = {}
    for section in ("training", "calibration"):
        if isinstance(manifest.get(section), Mapping):
            _flatten(manifest[section], section, out, depth=2)
    return out


def _flatten(value: Any, prefix: str, out: dict[str, Scalar], depth: int) -> None:
    if isinstance(value, (str, int, float, bool)) or value is None:
        out[prefix] = value
    elif isinstance(value, Mapping) and depth > 0:
        for key, item in value.items():
            _flatten(item, f"{prefix}.{key}", out, depth - 1)


def live_stack(history: list[HistoryRecord], live: str | None) -> list[str]:
    """Versions that were live, most recent last, with rolled-back ones popped off.

    ``history`` must include a move that :func:`unrecorded_move` recovers: a roll-back missing
    from it would be taken for a promotion, and the next roll-back would return to the version
    just rolled back from.
    """
    stack: list[str] = []
    for record in history:
        if record.action == "rollback" and stack:
            stack.pop()
        if not stack or stack[-1] != record.version:
            stack.append(record.version)
    if live is not None and (not stack or stack[-1] != live):
        stack.append(live)  # LIVE set by hand, without a history line: taken as a promotion
    return stack


def unrecorded_move(pending: bytes | None, live: str | None, history: list[HistoryRecord]) -> HistoryRecord | None:
    """The pointer move that happened but whose history line is missing (a crash between the writes).

    A move writes its record to the pending key first, then replaces ``LIVE``, then appends the
    record to the history. So the pending record took effect when ``LIVE`` names its version; it
    is missing from the history when the history does not hold it. A pending move whose
    pointer write never happened (``LIVE`` still names another version) is ignored.

    Args:
        pending: the pending key's bytes (one history line), ``None`` when there is none.
        live: the version ``LIVE`` names now.
        history: the parsed history, oldest first.
    """
    records = parse_history(pending or b"")
    if len(records) != 1 or records[0].version != live:
        return None
    move = records[0]
    # Anywhere in the history, not only last: LIVE may name that version again later without this
    # file being rewritten (an older build's promotion, a restored backup), and it is then old news.
    return None if move in history else move
