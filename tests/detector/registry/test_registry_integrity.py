"""Model registry integrity: a corrupt registered copy, a version stored outside, an unreadable entry."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from small_artifact import build_artifact

from detector.artifact import WEIGHTS
from detector.errors import ArtifactError, RegistryError
from detector.registry import ModelRegistry, VersionConflictError
from detector.registry import storage as storage_module
from detector.registry.storage import LocalStorage


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    root = tmp_path_factory.mktemp("artifacts")
    return [build_artifact(root / f"model-{seed}", seed) for seed in (1, 2)]


@pytest.fixture
def registry(tmp_path: Path) -> ModelRegistry:
    return ModelRegistry(tmp_path / "registry")


def corrupt(path: Path) -> None:
    data = bytearray(path.read_bytes())
    middle = len(data) // 2
    data[middle : middle + 16] = b"\xff" * 16
    path.write_bytes(bytes(data))


def test_adding_again_a_version_whose_registered_copy_is_corrupt_is_refused(
    registry: ModelRegistry, artifacts: list[Path]
) -> None:
    version = registry.add(artifacts[0])
    corrupt(registry.version_path(version) / WEIGHTS)
    with pytest.raises(ArtifactError, match=f"{version} is already registered, but its registered copy fails"):
        registry.add(artifacts[0])  # the source is fine; the registered copy is what would go live


def test_a_conflicting_version_is_a_typed_registry_error(
    registry: ModelRegistry, artifacts: list[Path], tmp_path: Path
) -> None:
    version = registry.add(artifacts[0])
    twin = tmp_path / "twin"
    shutil.copytree(artifacts[0], twin)
    manifest = (twin / "manifest.json").read_text()
    (registry.version_path(version) / "manifest.json").write_text(manifest.replace('"created_at"', '"created_at" '))
    with pytest.raises(VersionConflictError, match="already registered with different content") as info:
        registry.add(twin)
    assert isinstance(info.value, RegistryError)


@pytest.fixture
def outside_version(registry: ModelRegistry, artifacts: list[Path], tmp_path: Path) -> str:
    """``versions/<v>`` is a symlink to a copy of a valid artifact outside the registry."""
    live = registry.add(artifacts[0])
    registry.promote(live, "initial")
    elsewhere = tmp_path / "elsewhere" / "model"
    shutil.copytree(artifacts[1], elsewhere)
    version = str(ModelRegistry(tmp_path / "scratch").add(elsewhere))
    registry.storage.local_path(f"versions/{version}").symlink_to(elsewhere, target_is_directory=True)
    return version


def test_a_version_directory_outside_the_registry_is_refused(
    registry: ModelRegistry, outside_version: str, artifacts: list[Path]
) -> None:
    live = registry.live_version()
    reason = f"versions/{outside_version} resolves outside the registry"  # the worker's words
    for attempt in (
        lambda: registry.promote(outside_version, "symlinked in"),
        lambda: registry.load_version(outside_version),
        lambda: registry.version_path(outside_version),
        lambda: registry.add(artifacts[1]),
    ):
        with pytest.raises(ArtifactError, match=reason):
            attempt()
    assert registry.live_version() == live
    [info] = [i for i in registry.versions() if i.version == outside_version]
    assert info.error is not None and info.error.startswith(reason)
    assert registry.show(outside_version).error == info.error


def test_a_model_copied_in_under_another_name_is_refused_as_workers_refuse_it(
    registry: ModelRegistry, artifacts: list[Path]
) -> None:
    """Found in review: promoted (exit 0), after which every reload failed and no worker started."""
    live = registry.add(artifacts[0])
    registry.promote(live, "first")
    shutil.copytree(artifacts[1], registry.storage.local_path("versions/nsl-kdd-2026-12"))
    for attempt in (
        lambda: registry.promote("nsl-kdd-2026-12", "hand copy"),
        lambda: registry.load_version("nsl-kdd-2026-12"),
    ):
        with pytest.raises(ArtifactError, match=r"versions/nsl-kdd-2026-12 has model_version '.*'; workers refuse"):
            attempt()
    assert registry.live_version() == live


def test_a_symlinked_versions_folder_refuses_new_versions_too(tmp_path: Path, artifacts: list[Path]) -> None:
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "registry").mkdir()
    (tmp_path / "registry" / "versions").symlink_to(tmp_path / "elsewhere", target_is_directory=True)
    with pytest.raises(ArtifactError, match="resolves outside the registry"):
        ModelRegistry(tmp_path / "registry").add(artifacts[0])
    assert list((tmp_path / "elsewhere").iterdir()) == []


def test_an_unreadable_version_is_listed_with_its_problem(
    registry: ModelRegistry, artifacts: list[Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    readable, unreadable = (registry.add(a) for a in artifacts)
    registry.promote(readable, "initial")
    locked = registry.storage.local_path(f"versions/{unreadable}")
    real_open = os.open

    def denying_open(path: str | os.PathLike[str], flags: int, *args: int) -> int:
        if Path(path).is_relative_to(locked):  # as for a directory of another uid with mode 0700
            raise PermissionError(13, "Permission denied", str(path))
        return real_open(path, flags, *args)

    monkeypatch.setattr(storage_module.os, "open", denying_open)
    infos = {i.version: i for i in registry.versions()}
    assert infos[readable].error is None and infos[readable].is_live
    problem = infos[unreadable].error
    assert problem == f"cannot read versions/{unreadable}/manifest.json: Permission denied"
    assert infos[unreadable].created_at is None and infos[unreadable].manifest == {}
    assert registry.show(unreadable).error == problem


def test_local_storage_reports_an_unreadable_object_as_a_registry_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    storage = LocalStorage(tmp_path / "store")
    storage.replace_atomic("LIVE", b"v1\n")

    def denied(path: str | os.PathLike[str], flags: int, *args: int) -> int:
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr(storage_module.os, "open", denied)
    with pytest.raises(RegistryError, match="cannot read LIVE: Permission denied"):
        storage.read_bytes("LIVE")


@pytest.mark.parametrize("kind", ["fifo", "device"])
def test_local_storage_refuses_an_object_that_is_not_a_regular_file_without_hanging(tmp_path: Path, kind: str) -> None:
    """Found in review: a FIFO where LIVE was hung the worker's reload thread for good (a link to a
    device would read for ever)."""
    storage = LocalStorage(tmp_path / "store")
    storage.replace_atomic("LIVE", b"v1\n")
    live = storage.local_path("LIVE")
    live.unlink()
    if kind == "fifo":
        os.mkfifo(live)
    else:
        live.symlink_to("/dev/zero")
    with pytest.raises(RegistryError, match="cannot read LIVE: not a regular file"):
        storage.read_bytes("LIVE")


def test_a_version_whose_manifest_is_a_directory_is_listed_with_its_problem(tmp_path: Path) -> None:
    """Found in review: reading a directory raised out of the storage (and kept its descriptor)."""
    registry = ModelRegistry(tmp_path / "registry")
    (registry.storage.local_path("versions/v1") / "manifest.json").mkdir(parents=True)
    open_before = len(os.listdir("/proc/self/fd"))
    infos = registry.versions()
    assert [i.version for i in infos] == ["v1"] and infos[0].error
    with pytest.raises(RegistryError, match="a directory, not a file"):
        registry.storage.read_bytes("versions/v1/manifest.json")
    assert len(os.listdir("/proc/self/fd")) == open_before


def test_a_live_pointer_that_is_a_directory_is_an_error_not_nothing_promoted(tmp_path: Path) -> None:
    """Found in review: ``mkdir LIVE`` (or a bind mount of a missing host file) read as "nothing
    promoted yet": the worker waited for a model forever, and ``promote`` failed with a bare
    IsADirectoryError."""
    registry = ModelRegistry(tmp_path / "registry")
    registry.storage.local_path("LIVE").mkdir(parents=True)
    with pytest.raises(RegistryError, match="cannot read LIVE: a directory, not a file"):
        registry.read_pointer()
