"""Model registry under crashes and races: a pointer move killed half-way, two adds of one model."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
from small_artifact import build_artifact

import detector.registry.model_registry as model_registry
from detector.registry import ModelRegistry
from detector.registry.records import Action, HistoryRecord, history_line
from detector.registry.storage import LocalStorage


class Killed(BaseException):
    """Stands for SIGKILL: not an Exception, so nothing on the way out handles it."""


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    root = tmp_path_factory.mktemp("artifacts")
    return [build_artifact(root / f"model-{seed}", seed) for seed in (1, 2, 3)]


@pytest.fixture
def registry(tmp_path: Path) -> ModelRegistry:
    return ModelRegistry(tmp_path / "registry")


def kill_before_history(monkeypatch: pytest.MonkeyPatch) -> None:
    """The process dies after ``LIVE`` was replaced, before its history line is appended."""

    def die(self: ModelRegistry, record: object) -> None:
        raise Killed

    monkeypatch.setattr(ModelRegistry, "_append_history", die)


def test_a_rollback_killed_before_its_history_line_is_not_taken_for_a_promotion(
    registry: ModelRegistry, artifacts: list[Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    a, b, c = (registry.add(x) for x in artifacts)
    for version in (a, b, c):
        registry.promote(version, f"promote {version}")
    with monkeypatch.context() as patch:
        kill_before_history(patch)
        with pytest.raises(Killed):
            registry.rollback("c is bad")
    assert registry.live_version() == b
    last_seen = [(r.action, r.version) for r in registry.history()][-1]
    again = registry.rollback("further back")
    assert (again.version, again.previous) == (a, b)  # never back to the bad c
    assert last_seen == ("rollback", b)  # a reader saw the roll-back before the next move wrote it down
    assert [(r.action, r.version, r.previous) for r in registry.history()] == [
        ("promote", a, None),
        ("promote", b, a),
        ("promote", c, b),
        ("rollback", b, c),
        ("rollback", a, b),
    ]
    assert len(registry.storage.local_path("history.jsonl").read_text().splitlines()) == 5


def test_a_promotion_killed_before_its_history_line_is_completed_once(
    registry: ModelRegistry, artifacts: list[Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    a, b, c = (registry.add(x) for x in artifacts)
    registry.promote(a, "initial")
    with monkeypatch.context() as patch:
        kill_before_history(patch)
        with pytest.raises(Killed):
            registry.promote(b, "next")
    registry.promote(c, "after the crash")
    registry.promote(c, "again")  # the completed record is not appended a second time
    assert [(r.version, r.previous, r.reason) for r in registry.history()] == [
        (a, None, "initial"),
        (b, a, "next"),
        (c, b, "after the crash"),
        (c, c, "again"),
    ]
    assert registry.rollback("undo").version == b


def test_a_move_killed_before_the_pointer_changed_leaves_no_trace(
    registry: ModelRegistry, artifacts: list[Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    a, b = (registry.add(x) for x in artifacts[:2])
    registry.promote(a, "initial")
    real_replace = LocalStorage.replace_atomic

    def die_on_live(self: LocalStorage, key: str, data: bytes) -> None:
        if key == "LIVE":
            raise Killed
        real_replace(self, key, data)

    with monkeypatch.context() as patch:
        patch.setattr(LocalStorage, "replace_atomic", die_on_live)
        with pytest.raises(Killed):
            registry.promote(b, "never happened")
    assert registry.live_version() == a
    assert [r.version for r in registry.history()] == [a]
    registry.promote(b, "for real")
    assert [(r.version, r.reason) for r in registry.history()] == [(a, "initial"), (b, "for real")]


def test_a_stale_pending_record_is_not_replayed_when_live_names_its_version_again(
    registry: ModelRegistry, artifacts: list[Path]
) -> None:
    """An older build (which writes no pending record) rolls back and promotes again: LIVE names
    the version of the last pending record once more, whose move is in the history already."""
    a, b = (registry.add(x) for x in artifacts[:2])
    registry.promote(a, "initial")
    registry.promote(b, "newer")  # the pending record now holds this promotion of b

    def older_build_moves(version: str, previous: str, action: Action, reason: str) -> None:
        registry.storage.replace_atomic("LIVE", f"{version}\n".encode())
        record = HistoryRecord(at="2030-01-01T00:00:00+00:00", version=version, previous=previous,
                               reason=reason, actor="old", action=action)  # fmt: skip
        registry.storage.append_bytes("history.jsonl", history_line(record))

    older_build_moves(a, b, "rollback", "old build: roll back")
    older_build_moves(b, a, "promote", "old build: promote again")
    expected = [(a, "initial"), (b, "newer"), (a, "old build: roll back"), (b, "old build: promote again")]
    assert [(r.version, r.reason) for r in registry.history()] == expected
    registry.promote(a, "back")
    assert [(r.version, r.reason) for r in registry.history()] == [*expected, (a, "back")]


def test_an_add_that_loses_the_race_to_an_identical_add_returns_the_version(
    registry: ModelRegistry, artifacts: list[Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    other = ModelRegistry(registry.storage.local_path("LIVE").parent)  # another process's handle
    real_verify = model_registry._verify_copy
    raced: list[str] = []
    racing: list[bool] = []

    def verify_while_another_adds(version: str) -> Callable[[Path], None]:
        check = real_verify(version)

        def verify(staged: Path) -> None:
            check(staged)
            if not racing:  # the other add renames its copy in between our check and our rename
                racing.append(True)
                raced.append(other.add(artifacts[0]))

        return verify

    monkeypatch.setattr(model_registry, "_verify_copy", verify_while_another_adds)
    version = registry.add(artifacts[0])
    assert raced == [version]
    versions_dir = registry.storage.local_path("versions")
    assert sorted(p.name for p in versions_dir.iterdir()) == [version]  # no staging leftovers
    assert json.loads((versions_dir / version / "manifest.json").read_text())["model_version"] == version


def test_local_storage_copy_in_onto_a_copy_that_appeared_meanwhile_raises_file_exists(tmp_path: Path) -> None:
    storage = LocalStorage(tmp_path / "store")
    source = tmp_path / "src"
    source.mkdir()
    (source / "f.txt").write_text("hello")

    def another_copy_wins(staged: Path) -> None:
        storage.copy_dir_in(source, "versions/v1")

    with pytest.raises(FileExistsError, match="appeared meanwhile"):
        storage.copy_dir_in(source, "versions/v1", verify=another_copy_wins)
    assert storage.list_keys("versions") == ["v1"]
    assert storage.read_bytes("versions/v1/f.txt") == b"hello"
