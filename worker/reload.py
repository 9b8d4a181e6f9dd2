"""Hot reload: a background thread that watches the registry's ``LIVE`` pointer.

Every ``interval_s`` the watcher reads the pointer (one small read). When it names a version
other than the one last handed to the loop, the watcher loads and verifies that artifact on its
own thread (never on the hot path) and hands it over with the loop's swap hook
(:meth:`worker.loop.WorkerLoop.swap_model`), which applies it between two batches. Roll-back is
just another pointer change.

A version that fails to load or verify is refused: the old model keeps serving,
``kestrel_model_reload_failures_total`` is incremented, ``kestrel_model_reload_failing`` is 1 until
the pointer names a model that loads (or the one served), and the failure is logged once. The same
pointer target is retried only after a backoff (doubling from ``retry_backoff_s`` up to
``max_backoff_s``), or at once when the pointer is written again (another version, or the same
version promoted again after a fix), so a broken version is never reloaded in a tight loop.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from detector.errors import DetectorError
from detector.registry import ModelRegistry
from detector.signing import Ed25519PublicKey
from worker.metrics import WorkerMetrics
from worker.model_loading import LoadedModel, load_registry_version

logger = logging.getLogger(__name__)

#: Hands a verified model to the loop (``WorkerLoop.swap_model``); must be thread-safe.
SwapHook = Callable[[LoadedModel], None]


@dataclass
class _Failure:
    target: str
    retry_at: float
    backoff_s: float
    #: The registry's last move when it failed (:meth:`ModelRegistry.promotion_token`).
    pointer: bytes | None = None


class RegistryWatcher:
    """Watches ``REGISTRY_DIR/LIVE`` and swaps verified new versions into the loop.

    Args:
        registry_dir: the model registry directory.
        serving_version: the version the loop serves at start.
        swap: thread-safe hook that serves a model from the next batch on.
        metrics: the worker's metrics (only the reload-failure counter is touched here; the
            loop counts successful reloads when it applies the swap).
        interval_s: seconds between two pointer reads.
        retry_backoff_s: first wait before the same failed target is tried again.
        max_backoff_s: cap of the doubling backoff.
        clock: monotonic clock (injected by tests).
        public_key: accept only versions signed with this key (``WORKER_MODEL_PUBLIC_KEY``).
    """

    def __init__(
        self,
        registry_dir: Path,
        serving_version: str,
        swap: SwapHook,
        metrics: WorkerMetrics,
        interval_s: float,
        retry_backoff_s: float = 60.0,
        max_backoff_s: float = 900.0,
        clock: Callable[[], float] = time.monotonic,
        public_key: Ed25519PublicKey | None = None,
    ) -> None:
        self.registry = ModelRegistry(registry_dir, public_key=public_key)
        self.interval_s = interval_s
        self.retry_backoff_s = retry_backoff_s
        self.max_backoff_s = max_backoff_s
        self._serving = serving_version
        self._swap = swap
        self._metrics = metrics
        self._clock = clock
        self._failure: _Failure | None = None
        self._pointer_missing_logged = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="registry-watcher", daemon=True)

    @property
    def serving_version(self) -> str:
        """The version last handed to the loop (or served at start)."""
        return self._serving

    def start(self) -> None:
        """Start the watcher thread (a daemon: it never keeps the process alive)."""
        logger.info(
            "registry_watch_started", extra={"registry": str(self.registry.storage), "interval_s": self.interval_s}
        )
        self._thread.start()

    def stop(self, timeout_s: float = 5.0) -> None:
        """Stop the thread and wait up to ``timeout_s`` for it (a load in progress finishes first)."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout_s)

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                self.check_once()
            except Exception as exc:  # the watcher must outlive any one bad version
                self._failed("unexpected-error", None, exc)

    def check_once(self) -> LoadedModel | None:
        """Read the pointer once; load, verify and hand over a new version if it changed.

        Never raises for registry or artifact trouble: a failure is counted and logged.

        Returns:
            the model handed to the loop, or ``None`` when nothing was swapped.
        """
        pointer = self.registry.promotion_token()  # before the read: a later move is seen next time
        try:
            version = self.registry.read_pointer()
        except (DetectorError, OSError) as exc:
            self._failed(f"unreadable-pointer: {exc}", None, exc, pointer)
            return None
        if self.registry.promotion_token() != pointer:
            # A move was written between the two reads (its record first, then LIVE): read it
            # whole at the next poll (found in review: a version was paired with the move before
            # it, and a broken one was loaded, counted and logged twice).
            return None
        # The move's record counts for this version only if it names it: LIVE is replaced after
        # the record is written, so in between the record names the next version.
        move = pointer if _names(pointer, version) else None
        if version is None:
            self._metrics.model_reload_failing.set(0)  # nothing named, nothing failing (the backoff stays)
            if not self._pointer_missing_logged:
                logger.warning("registry_pointer_missing", extra={"serving_version": self._serving})
                self._pointer_missing_logged = True
            return None
        self._pointer_missing_logged = False
        if version == self._serving:
            self._cleared()  # e.g. a roll-back away from a broken version
            return None
        failure = self._failure
        if (
            failure is not None
            and failure.target == version
            and move in (None, failure.pointer)
            and self._clock() < failure.retry_at
        ):
            # Still failing (set again: a pointer missing meanwhile cleared the gauge). A new move
            # to the same version (promoted again after a fix) is tried at once.
            self._metrics.model_reload_failing.set(1)
            return None
        return self._load_and_swap(version, move)

    def _load_and_swap(self, version: str, pointer: bytes | None) -> LoadedModel | None:
        try:
            model = load_registry_version(self.registry, version)
        except (DetectorError, OSError) as exc:
            self._failed(version, version, exc, pointer)
            return None
        except Exception as exc:  # a bug meeting this version: back off from it like any bad version
            self._failed(version, version, exc, pointer)
            return None
        self._cleared()
        previous, self._serving = self._serving, version
        self._swap(model)
        logger.info(
            "model_reload_ready",
            extra={"old_version": previous, "new_version": version, "load_seconds": round(model.load_seconds, 4)},
        )
        return model

    def _cleared(self) -> None:
        """The pointer names what this worker serves: no failure stands."""
        self._failure = None
        self._metrics.model_reload_failing.set(0)

    def _failed(self, target: str, version: str | None, exc: BaseException, pointer: bytes | None = None) -> None:
        now = self._clock()
        failure = self._failure
        if failure is not None and failure.target == target and pointer in (None, failure.pointer):
            if now < failure.retry_at:
                return  # same trouble, still backing off: no new count, no new log line
            backoff = min(failure.backoff_s * 2, self.max_backoff_s)
            pointer = failure.pointer
        else:
            backoff = self.retry_backoff_s
        self._failure = _Failure(target, now + backoff, backoff, pointer)
        self._metrics.model_reload_failures.inc()
        self._metrics.model_reload_failing.set(1)
        logger.error(
            "model_reload_failed",
            extra={
                "version": version,
                "serving_version": self._serving,
                "error": str(exc),
                "retry_in_s": backoff,
            },
        )


def _names(token: bytes | None, version: str | None) -> bool:
    """Whether the registry's last move record (``pending.json``, one history line) moved ``LIVE``
    to ``version``."""
    if token is None or version is None:
        return False
    try:
        record = json.loads(token)
    except ValueError:
        return False
    return isinstance(record, dict) and record.get("version") == version
