"""What ``fit --out``, ``fit --report`` and ``score --out`` may overwrite: never a foreign directory, a
file or the input; bad values are refused before any data is read; a failed score keeps the old file."""

from __future__ import annotations

import csv
import os
import stat
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from detector.artifact import MANIFEST, WEIGHTS
from training.cli.main import main
from training.fit import FitResult, fit_detector

FIT_OPTIONS = ["--epochs", "1", "--min-steps", "0", "--threads", "1", "--quiet", "--seed", "0"]
N_ROWS = 200


def write_data(path: Path, n_rows: int = N_ROWS, bad_row: int | None = None) -> Path:
    """Two numeric columns and a categorical one; ``bad_row`` (1-based) gets a word for a number."""
    rng = np.random.default_rng(0)
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["a", "b", "c"])
        for i in range(1, n_rows + 1):
            a = "oops" if i == bad_row else f"{rng.normal():.4f}"
            writer.writerow([a, f"{rng.normal(10, 2):.4f}", "xy"[i % 2]])
    return path


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("cli-outputs")


@pytest.fixture(scope="module")
def data(workdir: Path) -> Path:
    return write_data(workdir / "data.csv")


@pytest.fixture(scope="module")
def model(workdir: Path, data: Path) -> Path:
    assert main(["fit", str(data), "--out", str(workdir / "model"), *FIT_OPTIONS]) == 0
    return workdir / "model"


def expect_error(capsys: pytest.CaptureFixture[str], argv: list[str], *needles: str, code: int = 1) -> str:
    """Run the CLI, expect exit ``code`` and one ``error: ...`` line containing every needle."""
    capsys.readouterr()
    exit_code = main(argv)
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert exit_code == code, err
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


def tree(root: Path) -> dict[str, bytes | None]:
    """Every path under ``root`` (hidden ones too) with its bytes (None for a directory)."""
    return {str(p.relative_to(root)): None if p.is_dir() else p.read_bytes() for p in sorted(root.rglob("*"))}


# fit --out, --report: refused before the data is read (DATA does not even exist here)


def test_fit_refuses_a_directory_that_is_not_a_model(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    work = tmp_path / "work"
    (work / "other_model").mkdir(parents=True)
    (work / "notes.txt").write_text("keep me", encoding="utf-8")
    before = tree(tmp_path)
    argv = ["fit", str(tmp_path / "absent.csv"), "--out", str(work), *FIT_OPTIONS]
    expect_error(capsys, argv, f"--out {work} holds other files and is not a model directory", "notes.txt")
    assert tree(tmp_path) == before


def test_fit_refuses_a_file(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    target = tmp_path / "model"
    target.write_text("not a model", encoding="utf-8")
    argv = ["fit", str(tmp_path / "absent.csv"), "--out", str(target), *FIT_OPTIONS]
    expect_error(capsys, argv, f"--out {target} is a file")
    assert [p.name for p in tmp_path.iterdir()] == ["model"]
    assert target.read_text(encoding="utf-8") == "not a model"


def test_fit_refuses_a_path_under_a_file(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    (tmp_path / "notes").write_text("x", encoding="utf-8")
    argv = ["fit", str(tmp_path / "absent.csv"), "--out", str(tmp_path / "notes" / "model"), *FIT_OPTIONS]
    expect_error(capsys, argv, "--out ", "notes is a file, not a directory")


def test_fit_refuses_an_unwritable_place(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_access = os.access  # tests may run as root, for whom everything is writable
    monkeypatch.setattr(os, "access", lambda p, mode: Path(p) != tmp_path.resolve() and real_access(p, mode))
    argv = ["fit", str(tmp_path / "absent.csv"), "--out", str(tmp_path / "model"), *FIT_OPTIONS]
    expect_error(capsys, argv, "--out ", "no write permission")


def test_fit_report_without_truth_column_is_a_usage_error_before_reading(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    argv = ["fit", str(tmp_path / "absent.csv"), "--out", str(tmp_path / "m"), "--report", str(tmp_path / "r")]
    expect_error(capsys, argv, "--report needs --truth-column and --normal-value", code=2)
    assert list(tmp_path.iterdir()) == []


def test_fit_checks_out_again_after_training(
    capsys: pytest.CaptureFixture[str], data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A file that appears in the empty --out directory during training is not removed."""
    target = tmp_path / "model"
    target.mkdir()

    def fit_then_someone_writes(*args: Any) -> FitResult:
        result = fit_detector(*args)
        (target / "notes.txt").write_text("arrived while training", encoding="utf-8")
        return result

    monkeypatch.setattr("training.cli.commands.fit_detector", fit_then_someone_writes)
    expect_error(capsys, ["fit", str(data), "--out", str(target), *FIT_OPTIONS], "holds other files")
    assert tree(target) == {"notes.txt": b"arrived while training"}


def test_fit_out_dot_writes_the_working_directory(data: Path, inside: Path) -> None:
    assert main(["fit", str(data), "--out", ".", *FIT_OPTIONS]) == 0
    assert sorted(p.name for p in inside.iterdir()) == [MANIFEST, WEIGHTS]


def test_fit_replaces_an_earlier_model(data: Path, model: Path, tmp_path: Path) -> None:
    target = tmp_path / "model"
    assert main(["fit", str(data), "--out", str(target), *FIT_OPTIONS]) == 0
    first = (target / MANIFEST).read_bytes()
    assert main(["fit", str(data), "--out", str(target), *FIT_OPTIONS, "--seed", "1"]) == 0
    assert (target / MANIFEST).read_bytes() != first
    assert [p.name for p in tmp_path.iterdir()] == ["model"]


# score --out


def test_score_refuses_to_overwrite_its_input(
    capsys: pytest.CaptureFixture[str], model: Path, data: Path, tmp_path: Path
) -> None:
    copy = tmp_path / "data.csv"
    copy.write_bytes(data.read_bytes())
    (tmp_path / "link.csv").hardlink_to(copy)
    for out in (copy, tmp_path / "link.csv", tmp_path / "." / "data.csv"):
        expect_error(
            capsys, ["score", str(model), str(copy), "--out", str(out)], f"--out {out} is the data file", code=2
        )
    assert copy.read_bytes() == data.read_bytes()


def test_a_failed_score_keeps_the_previous_output_and_leaves_no_temporary_file(
    capsys: pytest.CaptureFixture[str], model: Path, data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "scores.csv"
    assert main(["score", str(model), str(data), "--out", str(out)]) == 0
    good = out.read_bytes()
    monkeypatch.setattr("training.cli.commands.SCORE_CHUNK", 4)  # rows 1-8 are written before row 10 fails
    bad = write_data(tmp_path / "bad.csv", n_rows=12, bad_row=10)
    expect_error(capsys, ["score", str(model), str(bad), "--out", str(out)], f"{bad}: row 10")
    empty = tmp_path / "empty.csv"
    empty.write_text("a,b,c\n", encoding="utf-8")
    expect_error(capsys, ["score", str(model), str(empty), "--out", str(out)], "no records")
    assert out.read_bytes() == good
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.csv", "empty.csv", "scores.csv"]


def test_score_writes_a_readable_file(model: Path, data: Path, tmp_path: Path) -> None:
    out = tmp_path / "new" / "scores.csv"
    assert main(["score", str(model), str(data), "--out", str(out)]) == 0
    assert stat.S_IMODE(out.stat().st_mode) == 0o644
    with out.open(newline="", encoding="utf-8") as fh:
        assert len(list(csv.DictReader(fh))) == N_ROWS


def test_score_refuses_a_directory_or_a_path_under_a_file(
    capsys: pytest.CaptureFixture[str], model: Path, data: Path, tmp_path: Path
) -> None:
    expect_error(capsys, ["score", str(model), str(data), "--out", str(tmp_path)], "is a directory")
    (tmp_path / "notes").write_text("x", encoding="utf-8")
    expect_error(capsys, ["score", str(model), str(data), "--out", str(tmp_path / "notes" / "s.csv")], "--out ")
    assert (tmp_path / "notes").read_text(encoding="utf-8") == "x"
