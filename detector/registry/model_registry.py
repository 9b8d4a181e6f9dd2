"""Model registry: every trained artifact under its version, one atomically replaced live pointer.

Layout (``REGISTRY_DIR``)::

    versions/<model_version>/   verified artifact directories, immutable once added
    LIVE                        the live version name and a newline, replaced atomically
    history.jsonl               one JSON record per promotion or roll-back, with its reason
    pending.json                the last pointer move's record, written before ``LIVE`` is replaced
    reports/<name>/<file>       decision reports (retrain gate JSON, HTML evaluations, ...)

A version directory appears complete or not at all (staged copy, verified, then renamed), and is
never modified afterwards, so a reader that reads ``LIVE`` and then loads ``versions/<v>/`` never
sees a half-written model. Promotions hold an exclusive lock so concurrent promoters serialise.
A pointer move writes its record to ``pending.json``, replaces ``LIVE``, then appends the record to
``history.jsonl``; a crash between the last two leaves a record the next reader completes
(:func:`detector.registry.records.unrecorded_move`), so a roll-back is never mistaken for a promotion.
A version directory that resolves outside the registry (a symlink out) is refused, as the worker
refuses it.

Typical worker use (cheap to poll)::

    registry = ModelRegistry(registry_dir)
    version = registry.read_pointer()          # one small read
    if version != current:
        detector = registry.load_version(version)
"""

from __future__ import annotations

import json
import logging
import re
import tempfile
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from detector.artifact import artifact_file_names
from detector.artifact_files import copy_artifact_files
from detector.errors import ArtifactError, RegistryError
from detector.model import Detector
from detector.registry.records import (
    Action,
    HistoryRecord,
    VersionInfo,
    default_actor,
    history_line,
    live_stack,
    parse_history,
    unrecorded_move,
    version_info,
)
from detector.registry.storage import LocalStorage, RegistryStorage
from detector.signing import SIGNATURE, Ed25519PrivateKey, Ed25519PublicKey, sign_artifact

__all__ = ["ANY_LIVE", "LiveChangedError", "ModelRegistry", "VersionConflictError"]

logger = logging.getLogger(__name__)

LIVE_KEY = "LIVE"
HISTORY_KEY = "history.jsonl"
PENDING_KEY = "pending.json"
VERSIONS_PREFIX = "versions"
REPORTS_PREFIX = "reports"
MANIFEST_NAME = "manifest.json"


class LiveChangedError(RegistryError):
    """A compare-and-swap promotion found ``LIVE`` naming another version than the one expected."""


class VersionConflictError(RegistryError):
    """The version is already registered with other content (another manifest under the same name)."""


ANY_LIVE: object = object()
"""Sentinel for :meth:`ModelRegistry.promote`: no compare-and-swap on ``LIVE``."""
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")


class ModelRegistry:
    """Registered model versions and the live pointer.

    Args:
        root: the registry directory (local filesystem) or any :class:`RegistryStorage`.
        public_key: when given, :meth:`load_version` (and so :meth:`promote`) accepts only
            artifacts whose ``manifest.sig`` verifies with it (:mod:`detector.signing`).
    """

    def __init__(self, root: Path | str | RegistryStorage, public_key: Ed25519PublicKey | None = None) -> None:
        self.storage: RegistryStorage = LocalStorage(root) if isinstance(root, (str, Path)) else root
        self.public_key = public_key

    def __repr__(self) -> str:
        return f"ModelRegistry({self.storage!r})"

    # ---------------------------------------------------------------- versions
    def add(self, artifact_dir: Path | str, signing_key: Ed25519PrivateKey | None = None) -> str:
        """Verify an artifact and copy it in as ``versions/<model_version>/``; returns the version.

        Adding an artifact whose identical copy is already registered returns its version, once
        the registered copy is checked as :meth:`load_version` would (hashes, inside the registry).
        With ``signing_key`` the registered copy gets a ``manifest.sig`` (the source is untouched).

        Raises:
            ArtifactError: the artifact does not load and verify (tampered, truncated, ...), or
                it is already registered and the registered copy does not verify or resolves
                outside the registry.
            VersionConflictError: the version is already registered with different content.
            RegistryError: its name cannot be used as a directory name.
        """
        with tempfile.TemporaryDirectory(prefix="kestrel-add-") as tmp:
            # Only the artifact's own files, as plain files: a link or a stray file in the source
            # directory (a private key next to a received model) never enters the registry.
            source = Path(artifact_dir)
            version = Detector.load(source).version  # what is wrong with the source, named as such
            names = artifact_file_names(source)
            if signing_key is None and (source / SIGNATURE).exists():
                names.append(SIGNATURE)
            copy_artifact_files(source, names, Path(tmp) / "artifact")
            if signing_key is not None:
                sign_artifact(Path(tmp) / "artifact", signing_key)
            return self._add_clean(Path(tmp) / "artifact", version)

    def _add_clean(self, source: Path, version: str) -> str:
        """:meth:`add` of a directory holding nothing but the artifact's files (the copy is loaded
        and checked to be ``version`` before it becomes visible, or compared with the registered one)."""
        _check_name(version, "model version")
        self._require_inside(version)  # a workers' loader refuses what lies outside: so does add
        key = _version_key(version)
        if self.storage.exists(key):
            return self._same_or_conflict(source, version)
        try:
            self.storage.copy_dir_in(source, key, verify=_verify_copy(version))
        except FileExistsError:  # another process added it between the check and the rename
            return self._same_or_conflict(source, version)
        logger.info("registry_version_added", extra={"version": version})
        return version

    def _same_or_conflict(self, source: Path, version: str) -> str:
        key = _version_key(version)
        self._require_inside(version)
        registered = self.storage.read_bytes(f"{key}/{MANIFEST_NAME}")
        if registered != (source / MANIFEST_NAME).read_bytes():
            raise VersionConflictError(f"version {version} is already registered with different content")
        signature = source / SIGNATURE
        if signature.exists():  # a signed copy must not be taken as added when the registry's is not
            stored = self.storage.read_bytes(f"{key}/{SIGNATURE}")
            if stored != signature.read_bytes():
                how = "unsigned" if stored is None else "with a signature by another key"
                raise RegistryError(
                    f"version {version} is already registered {how}; a registered version is never changed"
                    " (register the signed model before promoting it, or keep the registry's copy)"
                )
        try:  # the same manifest proves nothing about the registered files (bit rot, a bad restore)
            Detector.load(self.storage.local_path(key))
        except ArtifactError as exc:
            raise ArtifactError(
                f"version {version} is already registered, but its registered copy fails: {exc}"
            ) from exc
        return version

    def versions(self) -> list[VersionInfo]:
        """Every registered version, oldest first (by ``created_at``, then name)."""
        live = self._pointer_or_none()
        infos = [self._info(v, live) for v in self.storage.list_keys(VERSIONS_PREFIX) if _NAME.fullmatch(v)]
        return sorted(infos, key=lambda i: (i.created_at or "", i.version))

    def show(self, version: str) -> VersionInfo:
        """One version's information.

        Raises:
            RegistryError: unknown version.
        """
        self._require_version(version)
        return self._info(version, self._pointer_or_none())

    def version_path(self, version: str) -> Path:
        """Local directory of a registered version, checked to lie inside the registry.

        Raises:
            RegistryError: unknown version.
            ArtifactError: the version directory resolves outside the registry (a symlink out of
                it): what is outside is not what was verified on the way in.
        """
        self._require_version(version)
        self._require_inside(version)
        return self.storage.local_path(_version_key(version))

    def load_version(self, version: str) -> Detector:
        """Load and verify a registered version.

        Raises:
            RegistryError: unknown version.
            ArtifactError: the stored artifact no longer verifies or resolves outside the registry,
                its manifest names another version (a model copied in by hand under another
                name, which workers refuse), or a public key is configured and the artifact is
                unsigned or its signature does not verify.
        """
        detector = Detector.load(self.version_path(version), self.public_key)
        if detector.version != version:
            raise ArtifactError(
                f"artifact under versions/{version} has model_version {detector.version!r}; workers refuse it "
                "(register a model with `registry add`, which names its directory after its version)"
            )
        return detector

    def is_registered(self, version: str) -> bool:
        """Whether ``versions/<version>/`` holds a manifest (a registered version, not checked)."""
        return _NAME.fullmatch(version) is not None and self.storage.exists(f"{_version_key(version)}/{MANIFEST_NAME}")

    def _require_version(self, version: str) -> None:
        _check_name(version, "version")
        if not self.storage.exists(f"{_version_key(version)}/{MANIFEST_NAME}"):
            known = ", ".join(self.storage.list_keys(VERSIONS_PREFIX)[-5:]) or "none"
            raise RegistryError(f"unknown model version {version!r} (latest registered: {known})")

    def _require_inside(self, version: str) -> None:
        key = _version_key(version)
        if not self.storage.resolves_inside(key):
            raise ArtifactError(_outside(version, self.storage.local_path(key)))

    def _info(self, version: str, live: str | None) -> VersionInfo:
        """One version's information; an entry that cannot be read is described, not raised."""
        key = _version_key(version)
        path = self.storage.local_path(key)
        raw, problem = None, None
        try:
            if not self.storage.resolves_inside(key):
                problem = _outside(version, path)
            else:
                raw = self.storage.read_bytes(f"{key}/{MANIFEST_NAME}")
        except RegistryError as exc:  # e.g. a directory of another uid with mode 0700
            problem = str(exc)
        return version_info(version, raw, path, is_live=version == live, problem=problem)

    # ------------------------------------------------------------ live pointer
    def read_pointer(self) -> str | None:
        """The version named by ``LIVE`` (one small read; no other check), or ``None`` if unset.

        Cheap enough to poll every few seconds: compare the result with the version you serve.

        Raises:
            RegistryError: ``LIVE`` exists but does not hold a valid version name.
        """
        raw = self.storage.read_bytes(LIVE_KEY)
        if raw is None:
            return None
        text = raw.decode("utf-8", errors="replace").strip()
        if not _NAME.fullmatch(text):
            raise RegistryError(f"live pointer {LIVE_KEY} holds no valid version name: {text[:80]!r}")
        return text

    def promotion_token(self) -> bytes | None:
        """What identifies the last move of ``LIVE``: every promotion and roll-back writes a new one
        (its record, with the time), to the same version too, while copying or touching ``LIVE``
        does not (found in review: keyed on the file's inode and time, an rsync'd or touched
        pointer had a broken version retried at every poll). ``None`` when there is none to read.
        A watcher that failed to load a version tries it again at once when this changes."""
        try:
            return self.storage.read_bytes(PENDING_KEY)
        except RegistryError:
            return None

    def live_version(self) -> str | None:
        """The live version, checked to be registered; ``None`` if nothing was promoted yet.

        Raises:
            RegistryError: the pointer is malformed or names a version that is not registered.
        """
        version = self.read_pointer()
        if version is not None and not self.storage.exists(f"{_version_key(version)}/{MANIFEST_NAME}"):
            raise RegistryError(f"live pointer names version {version!r}, which is not in {VERSIONS_PREFIX}/")
        return version

    def live_path(self) -> Path | None:
        """Directory of the live version (see :meth:`live_version`), or ``None``."""
        version = self.live_version()
        return None if version is None else self.storage.local_path(_version_key(version))

    def _pointer_or_none(self) -> str | None:
        try:
            return self.read_pointer()
        except RegistryError:
            return None

    # ------------------------------------------------------ promotion, history
    def promote(
        self,
        version: str,
        reason: str,
        actor: str | None = None,
        *,
        verify: bool = True,
        expected_live: str | object | None = ANY_LIVE,
    ) -> HistoryRecord:
        """Make ``version`` live: replace ``LIVE`` atomically, then append a history record.

        Args:
            version: a registered version.
            reason: why (required, kept in the history).
            actor: who or what promotes; defaults to :func:`default_actor`.
            verify: load and verify the artifact first, so ``LIVE`` never names a broken model.
            expected_live: compare-and-swap: promote only if ``LIVE`` still names this version
                (``None``: no version is live yet), checked under the promotion lock. The default
                :data:`ANY_LIVE` promotes whatever is live now (an operator's explicit choice).

        Raises:
            LiveChangedError: ``LIVE`` no longer names ``expected_live`` (nothing was changed).
            RegistryError: unknown version or empty reason.
            ArtifactError: ``verify`` and the stored artifact no longer verifies.
        """
        with self.storage.lock():
            self._complete_history_locked()
            if expected_live is not ANY_LIVE:
                current = self._pointer_or_none()
                if current != expected_live:
                    raise LiveChangedError(
                        f"live model changed while deciding: LIVE names {current or 'nothing'}, "
                        f"the decision compared against {expected_live or 'no live model'}"
                    )
            return self._move_pointer_locked(version, reason, actor, "promote", verify)

    def rollback(self, reason: str, actor: str | None = None, *, verify: bool = True) -> HistoryRecord:
        """Promote the version that was live before the current one, per the history.

        Repeated roll-backs walk further back (promote A, B, C; roll back twice gives A).

        Raises:
            RegistryError: no earlier live version to return to, or empty reason.
        """
        with self.storage.lock():
            stack = live_stack(self._complete_history_locked(), self._pointer_or_none())
            if len(stack) < 2:
                raise RegistryError("nothing to roll back to: no version was live before the current one")
            return self._move_pointer_locked(stack[-2], reason, actor, "rollback", verify)

    def _move_pointer_locked(
        self, version: str, reason: str, actor: str | None, action: Action, verify: bool
    ) -> HistoryRecord:
        if not reason.strip():
            raise RegistryError(f"a reason is required to {action}")
        self._require_version(version)
        if verify:
            self.load_version(version)
        record = HistoryRecord(
            at=datetime.now(UTC).isoformat(),
            version=version,
            previous=self._pointer_or_none(),
            reason=reason.strip(),
            actor=actor or default_actor(),
            action=action,
        )
        # The record first, then the pointer (the truth), then the history: a crash after the
        # pointer moved leaves the record in PENDING_KEY, and the next move, roll-back or history
        # read completes the history from it (:func:`unrecorded_move`).
        self.storage.replace_atomic(PENDING_KEY, history_line(record))
        self.storage.replace_atomic(LIVE_KEY, f"{version}\n".encode())
        self._append_history(record)
        logger.info("registry_pointer_moved", extra={"version": version, "previous": record.previous, "action": action})
        return record

    def _append_history(self, record: HistoryRecord) -> None:
        line = history_line(record)
        existing = self.storage.read_bytes(HISTORY_KEY)
        if existing and not existing.endswith(b"\n"):  # a torn earlier append: keep ours on its own line
            line = b"\n" + line
        self.storage.append_bytes(HISTORY_KEY, line)

    def history(self) -> list[HistoryRecord]:
        """Every promotion and roll-back, oldest first. Unreadable lines are skipped with a warning.

        A move whose history line a crash prevented is included (see :func:`unrecorded_move`).
        """
        records = parse_history(self.storage.read_bytes(HISTORY_KEY) or b"")
        move = unrecorded_move(self.storage.read_bytes(PENDING_KEY), self._pointer_or_none(), records)
        return records if move is None else [*records, move]

    def _complete_history_locked(self) -> list[HistoryRecord]:
        """Append the record of a move that a crash left out of the history; returns the history."""
        records = parse_history(self.storage.read_bytes(HISTORY_KEY) or b"")
        move = unrecorded_move(self.storage.read_bytes(PENDING_KEY), self._pointer_or_none(), records)
        if move is not None:
            self._append_history(move)
            records.append(move)
            logger.warning("registry_history_completed", extra={"version": move.version, "action": move.action})
        return records

    # ----------------------------------------------------------------- reports
    def write_report(self, version_or_name: str, name: str, data: bytes | str | Mapping[str, Any]) -> Path:
        """Store ``reports/<version_or_name>/<name>``; a mapping is written as indented JSON.

        Returns:
            the report's local path.
        """
        _check_name(version_or_name, "report folder")
        _check_name(name, "report name")
        if isinstance(data, Mapping):
            payload = (json.dumps(data, indent=2, sort_keys=True, allow_nan=False) + "\n").encode("utf-8")
        else:
            payload = data.encode("utf-8") if isinstance(data, str) else bytes(data)
        key = f"{REPORTS_PREFIX}/{version_or_name}/{name}"
        self.storage.write_bytes(key, payload)
        return self.storage.local_path(key)

    def read_report(self, version_or_name: str, name: str) -> bytes:
        """Bytes of a stored report.

        Raises:
            RegistryError: no such report.
        """
        _check_name(version_or_name, "report folder")
        _check_name(name, "report name")
        data = self.storage.read_bytes(f"{REPORTS_PREFIX}/{version_or_name}/{name}")
        if data is None:
            raise RegistryError(f"no report {name!r} under {REPORTS_PREFIX}/{version_or_name}/")
        return data

    def reports(self, version_or_name: str) -> list[str]:
        """Names of the reports stored under ``reports/<version_or_name>/``."""
        _check_name(version_or_name, "report folder")
        return self.storage.list_keys(f"{REPORTS_PREFIX}/{version_or_name}")


def _version_key(version: str) -> str:
    return f"{VERSIONS_PREFIX}/{version}"


def _check_name(name: str, what: str) -> None:
    if not _NAME.fullmatch(name):
        raise RegistryError(f"invalid {what} {name!r}: use letters, digits, '.', '_' or '-' (at most 128)")


def _outside(version: str, path: Path) -> str:
    return f"{VERSIONS_PREFIX}/{version} resolves outside the registry ({path.resolve()})"


def _verify_copy(version: str) -> Callable[[Path], None]:
    def verify(staged: Path) -> None:
        copied = Detector.load(staged).version
        if copied != version:
            raise RegistryError(f"copied artifact has version {copied!r}, expected {version!r}")

    return verify
