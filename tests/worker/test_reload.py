"""RegistryWatcher (hot reload) with a fake clock and a recording swap hook; drift gauges across a swap."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from prometheus_client import CollectorRegistry
from tiny_model import TinyModel, build_tiny_model

from detector.errors import ArtifactError, DetectorError
from detector.model import Detector
from detector.registry import ModelRegistry
from worker.metrics import QUANTILES, WorkerMetrics
from worker.model_loading import LoadedModel, load_live_model, load_model
from worker.reload import RegistryWatcher


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture(scope="module")
def second_model(tmp_path_factory: pytest.TempPathFactory) -> TinyModel:
    return build_tiny_model(tmp_path_factory.mktemp("tiny-b") / "model", n_rows=3000)


@pytest.fixture
def registry(tmp_path: Path, tiny_model: TinyModel, second_model: TinyModel) -> ModelRegistry:
    reg = ModelRegistry(tmp_path / "registry")
    reg.add(tiny_model.path)
    reg.add(second_model.path)
    reg.promote(tiny_model.version, "first")
    return reg


def _broken(reg: ModelRegistry, source: Path, name: str) -> str:
    """Register a version directory by hand whose weights no longer match the manifest."""
    target = reg.storage.local_path(f"versions/{name}")
    shutil.copytree(source, target)
    data = bytearray((target / "weights.safetensors").read_bytes())
    data[-1] ^= 0xFF
    (target / "weights.safetensors").write_bytes(bytes(data))
    return name


def _value(metrics: WorkerMetrics, name: str, labels: dict[str, str] | None = None) -> float:
    value = metrics.registry.get_sample_value(name, labels or {})
    return 0.0 if value is None else value


def _watcher(
    reg: ModelRegistry, serving: str, clock: FakeClock
) -> tuple[RegistryWatcher, list[LoadedModel], WorkerMetrics]:
    swapped: list[LoadedModel] = []
    metrics = WorkerMetrics(CollectorRegistry())
    watcher = RegistryWatcher(
        reg.storage.local_path("LIVE").parent,
        serving,
        swapped.append,
        metrics,
        interval_s=0.05,
        retry_backoff_s=30,
        clock=clock,
    )
    return watcher, swapped, metrics


def test_pointer_change_loads_and_hands_over_the_new_version(
    registry: ModelRegistry, tiny_model: TinyModel, second_model: TinyModel
) -> None:
    watcher, swapped, metrics = _watcher(registry, tiny_model.version, FakeClock())
    assert watcher.check_once() is None and swapped == []  # unchanged pointer: nothing loaded
    registry.promote(second_model.version, "newer")
    model = watcher.check_once()
    assert model is not None and [m.detector.version for m in swapped] == [second_model.version]
    assert model.load_seconds > 0 and model.target_fpr == 0.05
    assert watcher.serving_version == second_model.version
    assert watcher.check_once() is None and len(swapped) == 1  # handed over once
    registry.rollback("back")
    assert watcher.check_once() is not None and swapped[-1].detector.version == tiny_model.version
    assert _value(metrics, "kestrel_model_reload_failures_total") == 0


def test_broken_version_is_refused_counted_and_not_retried_in_a_tight_loop(
    registry: ModelRegistry, tiny_model: TinyModel, second_model: TinyModel, caplog: pytest.LogCaptureFixture
) -> None:
    clock = FakeClock()
    watcher, swapped, metrics = _watcher(registry, tiny_model.version, clock)
    broken = _broken(registry, second_model.path, "20990101T000000Z-broken01")
    registry.promote(broken, "bad by hand", verify=False)
    assert watcher.check_once() is None
    assert swapped == [] and watcher.serving_version == tiny_model.version
    assert _value(metrics, "kestrel_model_reload_failures_total") == 1
    assert any(r.message == "model_reload_failed" for r in caplog.records)
    for _ in range(20):  # many intervals within the backoff: no retry, no new count
        clock.now += 1
        assert watcher.check_once() is None
    assert _value(metrics, "kestrel_model_reload_failures_total") == 1
    # ... but the failure stands between the retries (found in review: with the retries backed off
    # to 15 minutes, the counter alone let the alert resolve while the version stayed LIVE)
    assert _value(metrics, "kestrel_model_reload_failing") == 1
    clock.now += 30  # backoff over: one retry, one more failure, then a doubled backoff
    watcher.check_once()
    assert _value(metrics, "kestrel_model_reload_failures_total") == 2
    clock.now += 45
    watcher.check_once()
    assert _value(metrics, "kestrel_model_reload_failures_total") == 2
    registry.promote(second_model.version, "a good one")  # pointer moves on: tried at once
    assert watcher.check_once() is not None and swapped[-1].detector.version == second_model.version
    assert _value(metrics, "kestrel_model_reload_failures_total") == 2
    assert _value(metrics, "kestrel_model_reload_failing") == 0


def test_an_unexpected_load_error_backs_off_from_that_version_like_a_refused_one(
    registry: ModelRegistry,
    tiny_model: TinyModel,
    second_model: TinyModel,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A bug meeting one version (not a typed refusal) is still that version's failure: counted,
    logged with the version, and not retried every interval (found in review: it was retried on
    every poll, logged once with no version)."""
    clock = FakeClock()
    watcher, swapped, metrics = _watcher(registry, tiny_model.version, clock)
    calls: list[str] = []

    def failing(reg: ModelRegistry, version: str) -> LoadedModel:
        calls.append(version)
        raise IndexError("tuple index out of range")

    monkeypatch.setattr("worker.reload.load_registry_version", failing)
    registry.promote(second_model.version, "newer")
    for _ in range(20):
        clock.now += 1
        assert watcher.check_once() is None
    assert calls == [second_model.version] and swapped == []
    assert _value(metrics, "kestrel_model_reload_failures_total") == 1
    logged = [r for r in caplog.records if r.message == "model_reload_failed"]
    assert [getattr(r, "version", None) for r in logged] == [second_model.version]
    clock.now += 30
    watcher.check_once()
    assert len(calls) == 2 and _value(metrics, "kestrel_model_reload_failures_total") == 2


def test_version_dir_with_another_model_inside_is_refused(registry: ModelRegistry, tiny_model: TinyModel) -> None:
    watcher, swapped, metrics = _watcher(registry, tiny_model.version, FakeClock())
    target = registry.storage.local_path("versions/20990101T000000Z-renamed1")
    shutil.copytree(tiny_model.path, target)  # verifies, but is another version than its name says
    with pytest.raises(ArtifactError, match="has model_version"):  # promote checks what workers check
        registry.promote("20990101T000000Z-renamed1", "renamed by hand")
    registry.promote("20990101T000000Z-renamed1", "renamed by hand", verify=False)  # forced past the check
    assert watcher.check_once() is None and swapped == []
    assert _value(metrics, "kestrel_model_reload_failures_total") == 1


def test_unreadable_or_missing_pointer_keeps_serving(registry: ModelRegistry, tiny_model: TinyModel) -> None:
    watcher, swapped, metrics = _watcher(registry, tiny_model.version, FakeClock())
    live = registry.storage.local_path("LIVE")
    live.write_text("../../etc/passwd\n")
    assert watcher.check_once() is None and watcher.check_once() is None
    assert _value(metrics, "kestrel_model_reload_failures_total") == 1  # counted once, not per poll
    live.unlink()
    assert watcher.check_once() is None and swapped == []


def test_watcher_thread_swaps_into_the_hook(
    registry: ModelRegistry, tiny_model: TinyModel, second_model: TinyModel
) -> None:
    watcher, swapped, _ = _watcher(registry, tiny_model.version, FakeClock())
    watcher.start()
    try:
        registry.promote(second_model.version, "threaded")
        deadline = 200
        while not swapped and deadline:
            watcher._stop.wait(0.05)
            deadline -= 1
        assert [m.detector.version for m in swapped] == [second_model.version]
    finally:
        watcher.stop()
    assert not watcher._thread.is_alive()


def test_drift_window_restarts_with_a_new_model_and_calibration_matches_the_manifest(
    tiny_model: TinyModel, second_model: TinyModel
) -> None:
    metrics = WorkerMetrics(CollectorRegistry())
    a, b = load_model(tiny_model.path), load_model(second_model.path)
    for model in (a, b):
        det = model.detector
        metrics.set_model(det.version, 0.1, None, det.threshold, model.target_fpr, det.scorer.calibration_scores)
        if det is a.detector:
            metrics.observe_scores(np.full(100, det.threshold + 1.0), det.threshold)  # all flagged
            assert _value(metrics, "kestrel_flag_rate") == 1.0
    metrics.observe_scores(np.full(10, b.detector.threshold - 0.1), b.detector.threshold)
    assert _value(metrics, "kestrel_flag_rate") == 0.0  # only the new model's events count
    assert _value(metrics, "kestrel_score_quantile", {"quantile": "0.5"}) == pytest.approx(b.detector.threshold - 0.1)
    cal = np.quantile(b.detector.scorer.calibration_scores, QUANTILES)
    for q, expected in zip(QUANTILES, cal, strict=True):
        assert _value(metrics, "kestrel_calibration_score_quantile", {"quantile": str(q)}) == pytest.approx(expected)


def test_calibration_quantiles_equal_the_manifest_figures_of_a_trained_model(
    tmp_path: Path, tiny_model: TinyModel
) -> None:
    from training.config import TrainConfig  # noqa: PLC0415 - test-only use of the trainer
    from training.fit import FitConfig, fit_detector  # noqa: PLC0415

    config = FitConfig(target_fpr=0.05, train=TrainConfig(epochs=1, min_steps=0, threads=1, progress=False))
    fit = fit_detector(tiny_model.normal_events, None, config)
    fit.detector.save(tmp_path / "m", fit.metadata)
    det = Detector.load(tmp_path / "m")
    metrics = WorkerMetrics(CollectorRegistry())
    metrics.set_model(det.version, 0.1, None, det.threshold, 0.05, det.scorer.calibration_scores)
    manifest_quantiles = det.manifest["calibration"]["score_quantiles"]
    for q in QUANTILES:
        exported = _value(metrics, "kestrel_calibration_score_quantile", {"quantile": str(q)})
        assert exported == pytest.approx(manifest_quantiles[str(q)], rel=1e-6)


@pytest.mark.parametrize("pointer", ["..", "/etc", "../outside", "versions/x", ""])
def test_start_up_refuses_a_pointer_the_registry_would_refuse(registry: ModelRegistry, pointer: str) -> None:
    root = registry.storage.local_path("LIVE").parent
    (root / "LIVE").write_text(pointer)
    with pytest.raises(DetectorError):
        load_live_model(root)


def test_start_up_refuses_a_version_directory_outside_the_registry_or_naming_another_version(
    registry: ModelRegistry, tiny_model: TinyModel, tmp_path: Path
) -> None:
    root = registry.storage.local_path("LIVE").parent
    assert load_live_model(root).detector.version == tiny_model.version  # the same reader as the watcher
    outside = tmp_path / "elsewhere"
    shutil.copytree(tiny_model.path, outside)
    (root / "versions" / "20990101T000000Z-linked01").symlink_to(outside, target_is_directory=True)
    (root / "LIVE").write_text("20990101T000000Z-linked01")
    with pytest.raises(DetectorError, match="outside the registry"):
        load_live_model(root)
    shutil.copytree(tiny_model.path, root / "versions" / "20990101T000000Z-renamed2")
    (root / "LIVE").write_text("20990101T000000Z-renamed2")
    with pytest.raises(DetectorError, match="has model_version"):
        load_live_model(root)


def test_a_fixed_version_promoted_again_is_loaded_at_once(
    registry: ModelRegistry, tiny_model: TinyModel, second_model: TinyModel
) -> None:
    """Found in review: the runbook says "fix and re-promote the version", but the watcher compared
    only the version's name and waited out its backoff (up to 15 minutes) before trying again."""
    clock = FakeClock()
    watcher, swapped, metrics = _watcher(registry, tiny_model.version, clock)
    weights = registry.storage.local_path(f"versions/{second_model.version}") / "weights.safetensors"
    good = weights.read_bytes()
    weights.chmod(0o644)
    weights.write_bytes(good[:-1] + bytes([good[-1] ^ 0xFF]))  # damaged after registration
    registry.promote(second_model.version, "new", verify=False)
    for _ in range(4):  # failed retries: the backoff grows to 240 s
        watcher.check_once()
        clock.now += 1000
    watcher.check_once()
    assert swapped == [] and _value(metrics, "kestrel_model_reload_failing") == 1
    failures = _value(metrics, "kestrel_model_reload_failures_total")
    clock.now += 10
    assert watcher.check_once() is None and _value(metrics, "kestrel_model_reload_failures_total") == failures
    weights.write_bytes(good)  # the operator restores the files ...
    registry.promote(second_model.version, "fixed, promoted again")  # ... and promotes the same version
    clock.now += 10  # one interval later, well inside the backoff
    assert watcher.check_once() is not None and [m.detector.version for m in swapped] == [second_model.version]
    assert _value(metrics, "kestrel_model_reload_failing") == 0


def test_the_failing_gauge_holds_when_live_names_the_broken_version_again(
    registry: ModelRegistry, tiny_model: TinyModel, second_model: TinyModel
) -> None:
    """Found in review: a LIVE missing for a moment cleared the gauge, and it stayed 0 through the
    rest of the backoff while LIVE named the version that had failed."""
    clock = FakeClock()
    watcher, _, metrics = _watcher(registry, tiny_model.version, clock)
    broken = _broken(registry, second_model.path, "20990101T000000Z-broken01")
    registry.promote(broken, "bad by hand", verify=False)
    watcher.check_once()
    assert _value(metrics, "kestrel_model_reload_failing") == 1
    live = registry.storage.local_path("LIVE")
    moved = live.with_name("LIVE.away")
    live.rename(moved)  # missing for a moment (a restore, a hand edit) ...
    clock.now += 1
    watcher.check_once()
    assert _value(metrics, "kestrel_model_reload_failing") == 0
    moved.rename(live)  # ... then back, the same file, naming the same broken version
    clock.now += 1
    assert watcher.check_once() is None
    assert _value(metrics, "kestrel_model_reload_failing") == 1
    assert _value(metrics, "kestrel_model_reload_failures_total") == 1  # within its backoff: not tried again


def test_a_pointer_copied_or_touched_without_a_promotion_keeps_the_backoff(
    registry: ModelRegistry, tiny_model: TinyModel, second_model: TinyModel
) -> None:
    """Found in review of the retry on a new promotion: keyed on the file's inode and time, a
    LIVE rewritten by a mirror job (or touched) had the broken version retried at every poll."""
    clock = FakeClock()
    watcher, _, metrics = _watcher(registry, tiny_model.version, clock)
    broken = _broken(registry, second_model.path, "20990101T000000Z-broken01")
    registry.promote(broken, "bad by hand", verify=False)
    watcher.check_once()
    live = registry.storage.local_path("LIVE")
    for _ in range(25):  # 25 s at a poll a second, within the first 30 s backoff
        copy = live.with_name("LIVE.copy")
        copy.write_bytes(live.read_bytes())
        copy.replace(live)  # the same pointer, a new file: what rsync does
        clock.now += 1
        watcher.check_once()
    assert _value(metrics, "kestrel_model_reload_failures_total") == 1
    assert _value(metrics, "kestrel_model_reload_failing") == 1


def test_a_promotion_between_the_watchers_two_reads_is_loaded_and_counted_once(
    registry: ModelRegistry, tiny_model: TinyModel, second_model: TinyModel
) -> None:
    """Found in review: the promotion landed after the watcher read the last move's record and
    before it read LIVE; the broken version was paired with the move before it, and the next poll
    (its own record now) loaded, counted and logged it again."""
    clock = FakeClock()
    watcher, _, metrics = _watcher(registry, tiny_model.version, clock)
    broken = _broken(registry, second_model.path, "20990101T000000Z-broken01")
    read_pointer = registry.read_pointer
    promoted: list[bool] = []

    def promotion_lands_first() -> str | None:
        if not promoted:
            registry.promote(broken, "bad by hand", verify=False)
            promoted.append(True)
        return read_pointer()

    watcher.registry.read_pointer = promotion_lands_first  # type: ignore[method-assign]
    for _ in range(4):
        watcher.check_once()
        clock.now += 1
    assert _value(metrics, "kestrel_model_reload_failures_total") == 1
    assert _value(metrics, "kestrel_model_reload_failing") == 1


def test_a_poll_between_a_moves_record_and_its_pointer_keeps_the_failed_versions_backoff(
    registry: ModelRegistry, tiny_model: TinyModel, second_model: TinyModel
) -> None:
    """Found in review: a poll after the next move's record was written but before LIVE was
    replaced paired the broken version LIVE still named with that record, and tried it again."""
    clock = FakeClock()
    watcher, swapped, metrics = _watcher(registry, tiny_model.version, clock)
    broken = _broken(registry, second_model.path, "20990101T000000Z-broken01")
    registry.promote(broken, "bad by hand", verify=False)
    watcher.check_once()
    assert _value(metrics, "kestrel_model_reload_failures_total") == 1
    pending = registry.storage.local_path("pending.json")
    before = pending.read_bytes()
    pending.write_bytes(before.replace(broken.encode(), second_model.version.encode()))  # the next move's record
    clock.now += 1
    watcher.check_once()  # LIVE still names the broken version
    assert _value(metrics, "kestrel_model_reload_failures_total") == 1 and swapped == []
    registry.promote(second_model.version, "the fix")  # the move completes
    clock.now += 1
    assert watcher.check_once() is not None and [m.detector.version for m in swapped] == [second_model.version]
