"""Model registry: add, list, show, promote, roll back, history, reports and pointer atomicity."""

from __future__ import annotations

import itertools
import json
import shutil
import threading
from datetime import datetime
from pathlib import Path

import pytest
from small_artifact import build_artifact

from detector.artifact import WEIGHTS, read_artifact, write_artifact
from detector.errors import ArtifactError, DetectorError, RegistryError
from detector.model import Detector
from detector.registry import LiveChangedError, ModelRegistry
from detector.registry.storage import LocalStorage, RegistryStorage


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    root = tmp_path_factory.mktemp("artifacts")
    meta = {"training": {"epochs": 3, "loss": {"final": 0.25}, "classes": ["tcp", "udp"]}}
    meta["calibration"] = {"target_fpr": 0.05}
    return [build_artifact(root / f"model-{seed}", seed, meta) for seed in (1, 2, 3)]


@pytest.fixture
def registry(tmp_path: Path) -> ModelRegistry:
    return ModelRegistry(tmp_path / "registry")


def version_of(artifact: Path) -> str:
    return str(json.loads((artifact / "manifest.json").read_text())["model_version"])


def test_add_copies_a_verified_artifact_under_its_version(registry: ModelRegistry, artifacts: list[Path]) -> None:
    version = registry.add(artifacts[0])
    assert version == version_of(artifacts[0])
    stored = registry.version_path(version)
    assert stored == registry.storage.local_path(f"versions/{version}")
    assert Detector.load(stored).version == version
    assert sorted(p.name for p in stored.parent.iterdir()) == [version]  # no staging leftovers


def test_versions_and_show_report_manifest_summary(registry: ModelRegistry, artifacts: list[Path]) -> None:
    added = [registry.add(a) for a in artifacts[:2]]
    infos = registry.versions()
    assert sorted(i.version for i in infos) == sorted(added)
    assert [i.created_at or "" for i in infos] == sorted(i.created_at or "" for i in infos)  # oldest first
    info = registry.show(added[1])
    assert info.version == added[1]
    assert not info.is_live
    assert info.error is None
    assert info.created_at == json.loads((artifacts[1] / "manifest.json").read_text())["created_at"]
    assert info.threshold == pytest.approx(Detector.load(artifacts[1]).threshold)
    assert info.metrics == {"training.epochs": 3, "training.loss.final": 0.25, "calibration.target_fpr": 0.05}
    as_dict = info.as_dict()
    assert as_dict["path"] == str(info.path)
    assert "manifest" not in as_dict
    assert info.as_dict(with_manifest=True)["manifest"]["model_version"] == added[1]


def test_add_is_idempotent_but_refuses_different_content_under_the_same_version(
    registry: ModelRegistry, artifacts: list[Path], tmp_path: Path
) -> None:
    version = registry.add(artifacts[0])
    assert registry.add(artifacts[0]) == version
    manifest, tensors = read_artifact(artifacts[0])
    body = {k: v for k, v in manifest.items() if k not in ("format_version", "files", "manifest_sha256")}
    clash = write_artifact(tmp_path / "clash", body | {"training": {"epochs": 99}}, tensors)
    assert Detector.load(clash).version == version
    with pytest.raises(RegistryError, match="already registered"):
        registry.add(clash)


def test_add_refuses_a_corrupted_artifact_and_leaves_nothing(
    registry: ModelRegistry, artifacts: list[Path], tmp_path: Path
) -> None:
    broken = tmp_path / "broken"
    write_artifact(broken, *read_artifact(artifacts[0]))
    weights = bytearray((broken / WEIGHTS).read_bytes())
    weights[-1] ^= 0xFF
    (broken / WEIGHTS).write_bytes(bytes(weights))
    with pytest.raises(ArtifactError, match="sha256 mismatch"):
        registry.add(broken)
    assert registry.versions() == []
    versions_dir = registry.storage.local_path("versions")
    assert not versions_dir.exists() or list(versions_dir.iterdir()) == []


def test_promote_moves_the_pointer_and_records_history(registry: ModelRegistry, artifacts: list[Path]) -> None:
    a, b = (registry.add(x) for x in artifacts[:2])
    assert registry.live_version() is None
    assert registry.live_path() is None
    first = registry.promote(a, "initial model", actor="alice")
    second = registry.promote(b, "retrain passed the gate", actor="cron")
    assert registry.live_version() == b
    assert registry.live_path() == registry.version_path(b)
    assert registry.storage.read_bytes("LIVE") == f"{b}\n".encode()
    assert [i.version for i in registry.versions() if i.is_live] == [b]
    assert registry.history() == [first, second]
    lines = [json.loads(line) for line in registry.storage.local_path("history.jsonl").read_text().splitlines()]
    assert [(r["version"], r["previous"], r["reason"], r["actor"], r["action"]) for r in lines] == [
        (a, None, "initial model", "alice", "promote"),
        (b, a, "retrain passed the gate", "cron", "promote"),
    ]
    assert datetime.fromisoformat(lines[0]["at"]).tzinfo is not None


def test_promote_defaults_the_actor(registry: ModelRegistry, artifacts: list[Path]) -> None:
    record = registry.promote(registry.add(artifacts[0]), "initial")
    assert record.actor


def test_promote_unknown_version_or_without_reason_fails_cleanly(
    registry: ModelRegistry, artifacts: list[Path]
) -> None:
    a = registry.add(artifacts[0])
    registry.promote(a, "initial")
    with pytest.raises(RegistryError, match="unknown model version 'no-such-version'"):
        registry.promote("no-such-version", "typo")
    with pytest.raises(RegistryError, match="invalid version"):
        registry.promote("../escape", "path traversal")
    with pytest.raises(RegistryError, match="reason is required"):
        registry.promote(a, "  ")
    assert registry.live_version() == a
    assert len(registry.history()) == 1


def test_promote_refuses_a_stored_artifact_that_no_longer_verifies(
    registry: ModelRegistry, artifacts: list[Path]
) -> None:
    a, b = (registry.add(x) for x in artifacts[:2])
    registry.promote(a, "initial")
    (registry.version_path(b) / WEIGHTS).write_bytes(b"truncated")
    with pytest.raises(ArtifactError):
        registry.promote(b, "should not go live")
    assert registry.live_version() == a


def test_rollback_walks_back_through_promotions(registry: ModelRegistry, artifacts: list[Path]) -> None:
    a, b, c = (registry.add(x) for x in artifacts)
    with pytest.raises(RegistryError, match="nothing to roll back"):
        registry.rollback("nothing live yet")
    for version in (a, b, c):
        registry.promote(version, f"promote {version}")
    back = registry.rollback("c misbehaves", actor="oncall")
    assert (back.version, back.previous, back.action, back.actor) == (b, c, "rollback", "oncall")
    assert registry.live_version() == b
    assert registry.rollback("b misbehaves too").version == a
    with pytest.raises(RegistryError, match="nothing to roll back"):
        registry.rollback("no earlier version")
    assert registry.live_version() == a
    assert [r.action for r in registry.history()] == ["promote"] * 3 + ["rollback"] * 2


def test_rollback_trusts_the_pointer_when_history_lags(registry: ModelRegistry, artifacts: list[Path]) -> None:
    a, b = (registry.add(x) for x in artifacts[:2])
    registry.promote(a, "initial")
    registry.storage.replace_atomic("LIVE", f"{b}\n".encode())  # as if we crashed before the history line
    assert registry.rollback("undo").version == a


def test_pointer_to_a_missing_version_or_garbage_raises(registry: ModelRegistry, artifacts: list[Path]) -> None:
    registry.storage.replace_atomic("LIVE", b"20990101T000000Z-deadbeef\n")
    assert registry.read_pointer() == "20990101T000000Z-deadbeef"
    with pytest.raises(RegistryError, match="not in versions/"):
        registry.live_path()
    registry.storage.replace_atomic("LIVE", b"../../etc\n")
    with pytest.raises(RegistryError, match="no valid version name"):
        registry.read_pointer()
    a = registry.add(artifacts[0])
    registry.promote(a, "repair the pointer")
    assert registry.live_version() == a


def test_a_torn_history_line_is_skipped_and_isolated(registry: ModelRegistry, artifacts: list[Path]) -> None:
    a, b = (registry.add(x) for x in artifacts[:2])
    registry.promote(a, "initial")
    registry.storage.append_bytes("history.jsonl", b'{"at": "2024-01-01T00:00')
    registry.promote(b, "next")
    assert [(r.version, r.previous) for r in registry.history()] == [(a, None), (b, a)]


def test_concurrent_promotions_serialise_into_a_consistent_history(
    registry: ModelRegistry, artifacts: list[Path]
) -> None:
    versions = [registry.add(x) for x in artifacts]

    def promote_many(offset: int) -> None:
        for i in range(10):
            registry.promote(versions[(offset + i) % 3], f"thread {offset}", verify=False)

    threads = [threading.Thread(target=promote_many, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    history = registry.history()
    assert len(history) == 40
    assert all(earlier.version == later.previous for earlier, later in itertools.pairwise(history))
    assert registry.live_version() == history[-1].version


def test_compare_and_swap_promotes_only_if_live_is_unchanged(registry: ModelRegistry, artifacts: list[Path]) -> None:
    a, b, c = (registry.add(x) for x in artifacts)
    registry.promote(a, "first", expected_live=None)  # None: nothing live yet
    with pytest.raises(LiveChangedError, match=f"LIVE names {a}"):
        registry.promote(b, "stale", expected_live=None)
    registry.promote(b, "operator", actor="alice")  # an operator's promotion while a job compared against a
    with pytest.raises(LiveChangedError, match=f"compared against {a}"):
        registry.promote(c, "retrain", expected_live=a)
    assert registry.live_version() == b
    assert [(r.version, r.previous) for r in registry.history()] == [(a, None), (b, a)]
    registry.promote(c, "retrain", expected_live=b)
    assert registry.live_version() == c


def test_concurrent_compare_and_swap_promotions_let_exactly_one_win(
    registry: ModelRegistry, artifacts: list[Path]
) -> None:
    a, b, c = (registry.add(x) for x in artifacts)
    registry.promote(a, "initial")
    start = threading.Barrier(2)
    outcomes: dict[str, str] = {}

    def promote(version: str) -> None:
        start.wait()
        try:
            registry.promote(version, "job", verify=False, expected_live=a)
            outcomes[version] = "promoted"
        except LiveChangedError:
            outcomes[version] = "refused"

    threads = [threading.Thread(target=promote, args=(v,)) for v in (b, c)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(outcomes.values()) == ["promoted", "refused"]
    winner = next(v for v, outcome in outcomes.items() if outcome == "promoted")
    assert registry.live_version() == winner
    assert [(r.version, r.previous) for r in registry.history()] == [(a, None), (winner, a)]


def test_live_pointer_is_atomic_for_a_polling_reader(
    registry: ModelRegistry, artifacts: list[Path], tmp_path: Path
) -> None:
    a, b = (registry.add(x) for x in artifacts[:2])
    registry.promote(a, "initial")
    reader = ModelRegistry(tmp_path / "registry")  # a second handle, as the worker would have
    loads: dict[str, int] = {a: 0, b: 0}
    errors: list[BaseException] = []
    progress = threading.Condition()
    stop = threading.Event()

    def poll() -> None:
        while not stop.is_set():
            try:
                path = reader.live_path()
                assert path is not None
                detector = Detector.load(path)
                assert detector.version == path.name
            except BaseException as exc:  # collect anything, including assertion failures
                errors.append(exc)
                return
            with progress:
                loads[detector.version] += 1
                progress.notify_all()

    def wait_for_reader(total: int) -> None:
        with progress:
            assert progress.wait_for(lambda: sum(loads.values()) >= total or bool(errors), timeout=30)

    thread = threading.Thread(target=poll)
    thread.start()
    try:
        for i in range(300):
            registry.promote(b if i % 2 == 0 else a, f"flip {i}", verify=False)
            if i % 30 == 29:
                wait_for_reader(sum(loads.values()) + 1)  # make sure reads interleave with promotions
    finally:
        stop.set()
        thread.join(timeout=30)
    assert errors == []
    assert loads[a] > 0
    assert loads[b] > 0


def test_reports_are_stored_under_reports(registry: ModelRegistry) -> None:
    path = registry.write_report("retrain-20240101", "decision.json", {"decision": "kept", "fpr": 0.011})
    registry.write_report("retrain-20240101", "evaluation.html", "<html></html>")
    registry.write_report("retrain-20240101", "raw.bin", b"\x00\x01")
    assert path == registry.storage.local_path("reports/retrain-20240101/decision.json")
    assert json.loads(path.read_text()) == {"decision": "kept", "fpr": 0.011}
    assert registry.read_report("retrain-20240101", "evaluation.html") == b"<html></html>"
    assert registry.reports("retrain-20240101") == ["decision.json", "evaluation.html", "raw.bin"]
    with pytest.raises(RegistryError, match="no report"):
        registry.read_report("retrain-20240101", "missing.json")
    with pytest.raises(RegistryError, match="invalid report name"):
        registry.write_report("retrain-20240101", "../../LIVE", "x")


def test_local_storage_keys_listing_and_atomic_replace(tmp_path: Path) -> None:
    storage = LocalStorage(tmp_path / "store")
    assert isinstance(storage, RegistryStorage)
    assert storage.read_bytes("missing") is None
    storage.replace_atomic("LIVE", b"one\n")
    storage.replace_atomic("LIVE", b"two\n")
    storage.write_bytes("reports/x/a.json", b"{}")
    storage.append_bytes("log", b"1\n")
    storage.append_bytes("log", b"2\n")
    assert storage.read_bytes("LIVE") == b"two\n"
    assert storage.read_bytes("log") == b"1\n2\n"
    assert storage.list_keys("") == ["LIVE", "log", "reports"]  # no temp files, no .lock
    with storage.lock():
        pass
    assert storage.list_keys("") == ["LIVE", "log", "reports"]
    assert storage.list_keys("reports/x") == ["a.json"]
    assert storage.list_keys("nowhere") == []
    for bad in ("../outside", "/abs", "a/../b", ""):
        with pytest.raises(RegistryError, match="invalid storage key"):
            storage.read_bytes(bad)


def test_local_storage_copy_in_is_all_or_nothing(tmp_path: Path) -> None:
    storage = LocalStorage(tmp_path / "store")
    source = tmp_path / "src"
    (source / "sub").mkdir(parents=True)
    (source / "sub" / "f.txt").write_text("hello")

    def refuse(staged: Path) -> None:
        assert (staged / "sub" / "f.txt").read_text() == "hello"
        raise DetectorError("verification failed")

    with pytest.raises(DetectorError, match="verification failed"):
        storage.copy_dir_in(source, "versions/v1", verify=refuse)
    assert not storage.exists("versions/v1")
    assert list(storage.local_path("versions").iterdir()) == []
    storage.copy_dir_in(source, "versions/v1")
    assert storage.read_bytes("versions/v1/sub/f.txt") == b"hello"
    with pytest.raises(FileExistsError):
        storage.copy_dir_in(source, "versions/v1")


def test_an_unreadable_manifest_is_listed_with_its_problem(registry: ModelRegistry, artifacts: list[Path]) -> None:
    version = registry.add(artifacts[0])
    (registry.version_path(version) / "manifest.json").write_text("{not json")
    [info] = registry.versions()
    assert info.version == version
    assert info.created_at is None
    assert info.error is not None
    assert info.error.startswith("unreadable manifest")
    with pytest.raises(ArtifactError, match="not valid JSON"):
        registry.load_version(version)


def test_registered_artifacts_are_readable_by_another_uid(
    registry: ModelRegistry, artifacts: list[Path], tmp_path: Path
) -> None:
    private = tmp_path / "private-model"
    shutil.copytree(artifacts[0], private)
    private.chmod(0o700)
    for path in private.iterdir():
        path.chmod(0o600)
    stored = registry.version_path(registry.add(private))
    assert stored.stat().st_mode & 0o777 == 0o755
    assert {p.stat().st_mode & 0o777 for p in stored.iterdir()} == {0o644}


def test_reading_a_missing_registry_creates_nothing(tmp_path: Path) -> None:
    missing = ModelRegistry(tmp_path / "no" / "such")
    assert missing.versions() == [] and missing.read_pointer() is None and missing.history() == []
    assert not (tmp_path / "no").exists()
