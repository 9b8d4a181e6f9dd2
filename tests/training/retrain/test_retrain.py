"""``python -m training retrain`` end to end on NSL-KDD rows: promote, keep, dry run, failures."""

from __future__ import annotations

import csv
import gzip
import json
import shutil
from pathlib import Path
from typing import Any

import pytest
from small_artifact import build_artifact

import training.retrain.job
from detector.artifact import read_artifact, write_artifact
from detector.registry import ModelRegistry
from detector.signing import generate_keys
from detector.table_reader import load_records
from training.cli.main import main
from training.cli.retrain import EXIT_FAILED, EXIT_KEPT, EXIT_PROMOTED, EXIT_USAGE
from training.retrain.gate import GateDecision

NSL_KDD = Path(__file__).resolve().parents[3] / "data" / "nsl-kdd" / "KDDTrain+_20Percent.csv.gz"
COMMON = ["--truth-column", "label", "--normal-value", "normal", "--drop-columns", "difficulty", "--quiet"]
FAST = ["--epochs", "1", "--min-steps", "100", "--threads", "1", "--target-fpr", "0.05"]


def _write(path: Path, header: list[str], rows: list[list[str]]) -> Path:
    with path.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(header)
        writer.writerows(rows)
    return path


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """NSL-KDD slices: first/second normals (+ a few attacks), anomalies, and a poisoned file."""
    with gzip.open(NSL_KDD, "rt", newline="") as fh:
        header, *rows = list(csv.reader(fh))
    label = header.index("label")
    normal = [r for r in rows if r[label] == "normal"]
    attack = [r for r in rows if r[label] != "normal"]
    neptune = [r for r in attack if r[label] == "neptune"]
    # Bad training data: 1,500 neptune (SYN flood) rows mislabelled normal among real normals.
    mislabelled = [[*r[:label], "normal", *r[label + 1 :]] for r in neptune[:1500]]
    poisoned = [x for pair in zip(normal[5000:6500], mislabelled, strict=True) for x in pair] + normal[6500:7000]
    out = tmp_path_factory.mktemp("retrain-data")
    return {
        "first": _write(out / "first.csv", header, normal[:2500]),
        "second": _write(out / "second.csv", header, normal[2500:5000] + attack[:100]),
        "anomalies": _write(out / "anomalies.csv", header, neptune[1500:2000] + attack[-500:]),
        "poisoned": _write(out / "poisoned.csv", header, poisoned),
    }


@pytest.fixture(scope="module")
def first_registry(files: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A registry whose live model came from a first retrain run (no live model before)."""
    registry = tmp_path_factory.mktemp("registry-first") / "registry"
    assert main(["retrain", str(files["first"]), "--registry", str(registry), *COMMON, *FAST]) == EXIT_PROMOTED
    return registry


@pytest.fixture
def registry(first_registry: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "registry"
    shutil.copytree(first_registry, copy)
    return copy


def _decision(registry: Path, version: str) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(ModelRegistry(registry).read_report(version, "decision.json"))
    return loaded


def test_first_run_promotes_and_writes_the_decision(first_registry: Path) -> None:
    reg = ModelRegistry(first_registry)
    live = reg.live_version()
    assert live is not None
    report = _decision(first_registry, live)
    assert report["decision"] == "promote" and report["promoted"] is True and report["live"] is None
    assert [c["name"] for c in report["checks"]] == ["candidate_fpr_within_tolerance"]
    data = report["data"]
    assert isinstance(data, dict) and data["n_holdout"] == 500 and data["n_train"] == 2000
    assert reg.history()[-1].actor == "retrain" and reg.history()[-1].version == live


def test_second_run_with_anomalies_promotes_against_the_live_model(
    registry: Path, files: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    before = ModelRegistry(registry).live_version()
    argv = ["retrain", str(files["second"]), "--registry", str(registry), "--anomalies", str(files["anomalies"])]
    # Wide tolerances: this test is about the promote path; two models trained on 2,000 rows differ
    # by a few points of FPR and recall from run to run (the keep path has its own test).
    tolerances = ["--fpr-tolerance", "0.04", "--recall-tolerance", "0.05"]
    code = main([*argv, *COMMON, *tolerances, "--threads", "1"])
    summary = json.loads(capsys.readouterr().out)
    assert code == EXIT_PROMOTED, summary
    reg = ModelRegistry(registry)
    assert reg.live_version() == summary["candidate_version"] != before
    assert summary["live_version"] == before
    report = _decision(registry, summary["candidate_version"])
    candidate, live = report["candidate"], report["live"]
    assert isinstance(candidate, dict) and isinstance(live, dict)
    assert live["version"] == before and candidate["target_fpr"] == 0.05  # settings inherited from the live model
    assert candidate["n_holdout"] == live["n_holdout"] == 500  # the same held-out rows for both
    assert candidate["n_anomalies"] == 1100  # --anomalies file + the labelled attacks of DATA
    assert candidate["recall"] >= live["recall"] - 0.05  # the --recall-tolerance given above
    assert sorted(reg.reports(summary["candidate_version"])) == ["decision.json", "evaluation.html"]
    assert b"<html" in reg.read_report(summary["candidate_version"], "evaluation.html")


def test_bad_training_data_is_kept_out_by_the_recall_check(
    registry: Path, files: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    before = ModelRegistry(registry).live_version()
    argv = ["retrain", str(files["poisoned"]), "--registry", str(registry), "--anomalies", str(files["anomalies"])]
    code = main([*argv, *COMMON, "--threads", "1"])
    summary = json.loads(capsys.readouterr().out)
    assert code == EXIT_KEPT, summary
    reg = ModelRegistry(registry)
    assert reg.live_version() == before  # the live model stays
    assert summary["candidate_version"] in {v.version for v in reg.versions()}  # kept, but registered for review
    report = _decision(registry, summary["candidate_version"])
    checks = {c["name"]: c["passed"] for c in report["checks"]}
    assert checks["candidate_recall_not_lower"] is False
    assert report["decision"] == "keep" and report["promoted"] is False
    assert str(report["reason"]).startswith("kept the live model")


def test_a_promotion_made_while_the_job_runs_is_not_overwritten(
    registry: Path,
    files: dict[str, Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    reg = ModelRegistry(registry)
    before = reg.live_version()
    operator_version = reg.add(build_artifact(tmp_path / "operator", seed=7))
    real_decide = training.retrain.job.decide

    def decide_while_an_operator_promotes(*args: Any, **kwargs: Any) -> GateDecision:
        decided = real_decide(*args, **kwargs)
        reg.promote(operator_version, "hand-picked by an operator", actor="alice")
        return GateDecision(True, "promoted (forced by the test)", decided.checks)

    monkeypatch.setattr(training.retrain.job, "decide", decide_while_an_operator_promotes)
    code = main(["retrain", str(files["second"]), "--registry", str(registry), *COMMON, "--threads", "1"])
    summary = json.loads(capsys.readouterr().out)
    assert code == EXIT_KEPT, summary
    assert reg.live_version() == operator_version  # the operator's choice stands
    assert summary["candidate_version"] in {v.version for v in reg.versions()}  # kept for review
    assert "live model changed" in summary["reason"] and before in summary["reason"]
    assert [(r.version, r.previous, r.actor) for r in reg.history()][-1] == (operator_version, before, "alice")
    report = _decision(registry, summary["candidate_version"])
    assert report["decision"] == "keep" and report["promoted"] is False and report["live_changed"] is True


def test_a_run_whose_version_another_run_registered_first_is_kept_not_failed(
    registry: Path,
    files: dict[str, Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Two runs on the same data and seed that finish in the same second build the same version
    name (training second + weights hash) with another ``created_at``: the later one lost a race."""
    reg = ModelRegistry(registry)
    before = reg.live_version()
    real_add = ModelRegistry.add
    twins: list[str] = []

    def another_run_adds_first(self: ModelRegistry, artifact_dir: Path | str, signing_key: Any = None) -> str:
        if not twins:
            manifest, tensors = read_artifact(Path(artifact_dir))
            body = {k: v for k, v in manifest.items() if k not in ("format_version", "files", "manifest_sha256")}
            body["created_at"] = str(body["created_at"])[:19] + ".999999+00:00"  # the same second
            twin = write_artifact(tmp_path / "twin", body, tensors, format_version=manifest["format_version"])
            twins.append(real_add(self, twin))
        return real_add(self, artifact_dir, signing_key)

    monkeypatch.setattr(ModelRegistry, "add", another_run_adds_first)
    code = main(["retrain", str(files["second"]), "--registry", str(registry), *COMMON, "--threads", "1"])
    out = capsys.readouterr()
    assert code == EXIT_KEPT, out.err
    summary = json.loads(out.out)
    assert summary["decision"] == "keep" and summary["promoted"] is False
    assert summary["candidate_version"] == twins[0]
    assert "already registered with different content by another run" in summary["reason"]
    assert summary["reports"] == [] and reg.reports(twins[0]) == []  # the other run's folder is left alone
    assert reg.live_version() == before


def test_dry_run_writes_nothing(registry: Path, files: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    reg = ModelRegistry(registry)
    versions, live = [v.version for v in reg.versions()], reg.live_version()
    code = main(["retrain", str(files["second"]), "--registry", str(registry), "--dry-run", *COMMON])
    summary = json.loads(capsys.readouterr().out)
    assert code in (EXIT_PROMOTED, EXIT_KEPT) and summary["dry_run"] is True and summary["reports"] == []
    assert [v.version for v in reg.versions()] == versions and reg.live_version() == live


def test_a_new_spec_without_a_field_the_live_model_requires_is_judged_without_the_live_model(
    registry: Path, tmp_path: Path, files: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    """The runbook's "retrain with the new feature spec" when the producers dropped a field: the
    live model cannot read the new events, so it is neither used to filter them nor compared."""
    reg = ModelRegistry(registry)
    before = reg.live_version()
    assert before is not None
    spec = reg.load_version(before).spec.model_dump(mode="json")
    for role in ("numeric", "log_scale", "optional"):
        spec[role] = [f for f in spec.get(role) or [] if f != "duration"]
    spec_file = tmp_path / "spec.json"
    spec_file.write_text(json.dumps(spec))
    with files["second"].open(newline="") as fh:
        header, *rows = list(csv.reader(fh))
    gone, label = header.index("duration"), header.index("label")
    normal = [r[:gone] + r[gone + 1 :] for r in rows if r[label] == "normal"]  # unlabelled: read as normal
    data = _write(tmp_path / "no-duration.csv", header[:gone] + header[gone + 1 :], normal)
    unlabelled = ["--drop-columns", "difficulty,label", "--quiet"]
    argv = ["retrain", str(data), "--registry", str(registry), "--spec", str(spec_file), *unlabelled, *FAST]
    code = main(argv)
    out, err = capsys.readouterr()
    assert code == EXIT_PROMOTED, out + err
    summary = json.loads(out)
    report = _decision(registry, summary["candidate_version"])
    assert report["live"] is None and "it requires duration" in report["live_not_compared"]
    assert "it requires duration" in summary["reason"]
    assert summary["live_version"] == before  # live, only not compared
    assert "unlabelled_rows_scored_by_live" not in report["data"]  # not filtered by a model that cannot read them
    assert "duration" not in ModelRegistry(registry).load_version(summary["candidate_version"]).spec.features


def test_too_few_rows_for_the_holdout_fail_with_exit_1(
    registry: Path, tmp_path: Path, files: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    lines = files["first"].read_text().splitlines()
    small = tmp_path / "small.csv"
    small.write_text("\n".join(lines[:300]) + "\n")
    argv = ["retrain", str(small), "--registry", str(registry), *COMMON]
    assert main([*argv, "--holdout-fraction", "0.2"]) == EXIT_FAILED
    assert "need at least 100" in capsys.readouterr().err


def test_a_holdout_too_small_for_the_target_fpr_is_inconclusive_and_keeps(
    registry: Path, tmp_path: Path, files: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    lines = files["first"].read_text().splitlines()
    small = tmp_path / "small.csv"
    small.write_text("\n".join(lines[:300]) + "\n")
    code = main(["retrain", str(small), "--registry", str(registry), *COMMON, "--threads", "1"])
    summary = json.loads(capsys.readouterr().out)
    assert code == EXIT_KEPT, summary
    # The default holdout is sized from the target (20 / 0.05 = 400 rows), capped at half the normals.
    assert "not enough held-out normals to judge FPR at this target" in summary["reason"]
    assert "/149 held-out" in summary["reason"] and "need at least 200" in summary["reason"]


def test_missing_file_and_broken_live_model_fail_with_exit_1(
    registry: Path, files: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["retrain", "/nonexistent.csv", "--registry", str(registry), *COMMON]) == EXIT_FAILED
    assert "data file not found" in capsys.readouterr().err
    live = ModelRegistry(registry).live_path()
    assert live is not None
    (live / "weights.safetensors").write_bytes(b"broken")
    assert main(["retrain", str(files["second"]), "--registry", str(registry), *COMMON]) == EXIT_FAILED
    assert "sha256 mismatch" in capsys.readouterr().err


@pytest.mark.parametrize(
    "extra",
    [
        [],
        ["--from-kafka"],
        ["DATA", "--last", "10"],
        ["DATA", "--holdout-fraction", "1.5"],
        ["DATA", "--truth-column", "label"],
        ["DATA", "--fpr-tolerance", "nan"],  # found in review: passed every candidate
        ["DATA", "--fpr-tolerance", "inf"],
        ["DATA", "--recall-tolerance", "nan"],
        ["DATA", "--from-kafka", "--last", "10", "--kafka-timeout-s", "nan"],
        ["DATA", "--from-kafka", "--last", "10", "--kafka-timeout-s", "0"],
        ["DATA", "--from-kafka", "--since-minutes", "inf"],
    ],
)
def test_usage_errors_exit_2(tmp_path: Path, files: dict[str, Path], extra: list[str]) -> None:
    argv = ["retrain", "--registry", str(tmp_path / "reg"), *[str(files["first"]) if a == "DATA" else a for a in extra]]
    assert main(argv) == EXIT_USAGE


def test_from_kafka_window_options_are_exclusive(tmp_path: Path) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["retrain", "--registry", str(tmp_path), "--from-kafka", "--last", "5", "--since-minutes", "5"])
    assert exc.value.code == EXIT_USAGE


def test_a_model_saved_before_projections_existed_is_retrained_on_the_plain_sphere() -> None:
    from types import SimpleNamespace  # noqa: PLC0415

    from training.retrain.job import _base_config  # noqa: PLC0415

    old = {"train": {"unlabelled_positives": "one_class", "outlier_noise": 5.0, "seed": 3}}
    live = SimpleNamespace(manifest={"training": {"config": old}})
    config = _base_config(live)  # type: ignore[arg-type]
    assert config.train.projection == "sphere"
    assert (config.train.unlabelled_positives, config.train.outlier_noise, config.train.seed) == ("one_class", 5.0, 3)
    new = {"train": {"projection": "auto"}}
    assert _base_config(SimpleNamespace(manifest={"training": {"config": new}})).train.projection == "auto"  # type: ignore[arg-type]


def test_a_public_key_without_the_matching_signing_key_is_refused_before_training(
    registry: Path, files: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Else the candidate would be registered unsigned and fail at promotion (exit 1, no decision)."""
    (tmp_path / "a.pem").write_bytes(generate_keys()[0])
    _private_b, public_b = generate_keys()
    public = tmp_path / "b.pub.pem"
    public.write_bytes(public_b)
    trained: list[object] = []
    monkeypatch.setattr(training.retrain.job, "fit_detector", lambda *a, **k: trained.append(a))
    before = ModelRegistry(registry).versions()
    base = ["retrain", str(files["second"]), "--registry", str(registry), "--public-key", str(public)]
    assert main(base) == EXIT_USAGE  # no signing key
    assert main([*base, "--signing-key", str(tmp_path / "a.pem")]) == EXIT_USAGE  # not the matching one
    assert trained == [] and ModelRegistry(registry).versions() == before


def test_a_report_that_cannot_be_written_fails_the_job_before_anything_is_promoted(
    files: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Found in review: the job promoted, then failed writing decision.json (exit 1 with LIVE moved)."""

    def disk_full(*args: Any, **kwargs: Any) -> Path:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(ModelRegistry, "write_report", disk_full)
    registry = tmp_path / "registry"
    assert main(["retrain", str(files["first"]), "--registry", str(registry), *COMMON, *FAST]) == EXIT_FAILED
    assert "No space left on device" in capsys.readouterr().err
    assert ModelRegistry(registry).live_version() is None


def test_a_report_failing_after_the_promotion_keeps_the_promotion_and_the_first_decision(
    files: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    written: list[str] = []
    real = ModelRegistry.write_report

    def second_write_fails(self: ModelRegistry, version: str, name: str, data: Any) -> Path:
        if written:
            raise OSError(28, "No space left on device")
        written.append(name)
        return real(self, version, name, data)

    monkeypatch.setattr(ModelRegistry, "write_report", second_write_fails)
    registry = tmp_path / "registry"
    assert main(["retrain", str(files["first"]), "--registry", str(registry), *COMMON, *FAST]) == EXIT_PROMOTED
    [line] = capsys.readouterr().out.strip().splitlines()  # the summary is one line of JSON
    summary = json.loads(line)
    assert summary["report_error"] == "OSError: [Errno 28] No space left on device"
    assert summary["promoted"] is True and summary["reports"] == [
        str(registry / "reports" / summary["candidate_version"] / "decision.json")
    ]
    live = ModelRegistry(registry).live_version()
    assert live == summary["candidate_version"]
    assert _decision(registry, live)["decision"] == "promote"


def test_a_candidate_retrained_on_unlabelled_rows_holds_its_target_on_the_traffic(tmp_path: Path) -> None:
    """Found in review: the rows the live model flagged were cut from the calibration normals and
    from the holdout, so the candidate flagged 8% of new normals at a 5% target while the gate
    measured 5.5% on the filtered holdout (and each cycle would cut more)."""
    with gzip.open(NSL_KDD, "rt", newline="") as fh:
        header, *rows = list(csv.reader(fh))
    label = header.index("label")
    normal = [r for r in rows if r[label] == "normal"]
    first = _write(tmp_path / "first.csv", header, normal[:4000])
    second = _write(tmp_path / "second.csv", header, normal[4000:10000])  # read unlabelled below
    fresh = load_records(_write(tmp_path / "fresh.csv", header, normal[10000:]))
    for row in fresh:
        del row["label"], row["difficulty"]
    registry = tmp_path / "registry"
    fast = ["--epochs", "1", "--min-steps", "100", "--threads", "1", "--seed", "11", "--quiet"]
    assert main(["retrain", str(first), "--registry", str(registry), *COMMON, *fast, "--target-fpr", "0.05"]) == 0
    unlabelled = ["--drop-columns", "difficulty,label", *fast]
    assert main(["retrain", str(second), "--registry", str(registry), *unlabelled]) == EXIT_PROMOTED
    reg = ModelRegistry(registry)
    live = reg.live_version()
    assert live is not None
    candidate = reg.load_version(live)
    report = _decision(registry, live)
    assert report["data"]["unlabelled_rows_flagged_by_live_not_trained"] > 0
    realised = float(candidate.score_records(fresh).flagged.mean())
    assert 0.025 <= realised <= 0.075, realised  # the target 5% within ±50% on new normals
    assert abs(report["candidate"]["fpr"] - realised) < 0.02  # and the gate saw what the traffic sees
