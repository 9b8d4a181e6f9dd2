"""The model registry: versions, the live pointer, history and reports (see :mod:`.model_registry`).

* :mod:`detector.registry.model_registry` — :class:`ModelRegistry`, the registry itself.
* :mod:`detector.registry.records` — version info and history records (pure).
* :mod:`detector.registry.storage` — the key/bytes storage interface and its local backend.

The public names are re-exported here, so ``from detector.registry import ModelRegistry`` is the
one import a user needs.
"""

from detector.registry.model_registry import ANY_LIVE, LiveChangedError, ModelRegistry, VersionConflictError
from detector.registry.records import HistoryRecord, VersionInfo
from detector.registry.storage import LocalStorage, RegistryStorage

__all__ = [
    "ANY_LIVE",
    "HistoryRecord",
    "LiveChangedError",
    "LocalStorage",
    "ModelRegistry",
    "RegistryStorage",
    "VersionConflictError",
    "VersionInfo",
]
