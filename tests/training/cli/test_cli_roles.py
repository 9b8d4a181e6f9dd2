"""``python -m training``: options that name columns, and labels and truth values that do not fit
the data, are one-line errors before any training (found in review: a pydantic dump, an error with
no file or row, and an evaluate that did not list the truth values seen)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from test_cli import FIT_OPTIONS, LABELS, expect_error, write_sample

from training.cli.main import main


@pytest.fixture(scope="module")
def sample(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_sample(tmp_path_factory.mktemp("roles") / "sample.csv", n_rows=200)


def test_two_options_naming_one_column_are_a_usage_error(
    capsys: pytest.CaptureFixture[str], sample: Path, tmp_path: Path
) -> None:
    argv = ["fit", str(sample), "--out", str(tmp_path / "m"), *LABELS, "--label-column", "label", *FIT_OPTIONS]
    expect_error(capsys, argv, "--label-column and --truth-column both name column 'label'", code=2)
    argv = ["fit", str(sample), "--out", str(tmp_path / "m"), "--id-column", "id", "--timestamp-column", "id"]
    expect_error(capsys, argv, "--id-column and --timestamp-column both name column 'id'", code=2)
    assert not (tmp_path / "m").exists()


def test_a_spec_that_disagrees_with_a_column_option_is_one_usage_line(
    capsys: pytest.CaptureFixture[str], sample: Path, tmp_path: Path
) -> None:
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps({"numeric": ["duration", "src_bytes"], "categorical": ["protocol_type"]}))
    argv = ["fit", str(sample), "--out", str(tmp_path / "m"), *LABELS, "--spec", str(spec), "--id-column", "duration"]
    line = expect_error(capsys, argv, f"--spec {spec}", "id_field 'duration' cannot also be a feature", code=2)
    assert "pydantic" not in line and "validation error" not in line


@pytest.mark.parametrize(
    ("spec_roles", "options", "message"),
    [
        (
            {"id_field": "dst_host_count", "timestamp_field": "dst_host_count"},
            [],
            "id_field and timestamp_field both name",
        ),
        ({"timestamp_field": "dst_host_count"}, ["--id-column", "dst_host_count"], "id_field and timestamp_field both"),
        ({"id_field": "label"}, [], "id_field names the truth column 'label'"),
    ],
)
def test_a_spec_giving_one_column_two_roles_is_a_usage_error(
    capsys: pytest.CaptureFixture[str],
    sample: Path,
    tmp_path: Path,
    spec_roles: dict[str, str],
    options: list[str],
    message: str,
) -> None:
    """Found in review: a spec (or a spec and an option) naming one column as both id and
    timestamp trained with exit 0, though a column plays one role."""
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps({"numeric": ["duration", "src_bytes"], "categorical": ["protocol_type"]} | spec_roles))
    argv = ["fit", str(sample), "--out", str(tmp_path / "m"), *LABELS, "--spec", str(spec), *options, *FIT_OPTIONS]
    expect_error(capsys, argv, f"--spec {spec}", message, "a column plays one role", code=2)
    assert not (tmp_path / "m").exists()


def test_an_empty_class_label_names_the_file_row_and_column(
    capsys: pytest.CaptureFixture[str], sample: Path, tmp_path: Path
) -> None:
    with sample.open(newline="") as f:
        rows = list(csv.reader(f))
    kind = len(rows[0])
    rows[0].append("kind")
    for i, row in enumerate(rows[1:], start=1):
        row.append("" if i == 7 else ("web" if i % 2 else "mail"))
    data = tmp_path / "labelled.csv"
    with data.open("w", newline="") as f:
        csv.writer(f).writerows(rows)
    assert rows[7][kind] == ""
    argv = [
        "fit",
        str(data),
        "--out",
        str(tmp_path / "m"),
        "--label-column",
        "kind",
        "--drop-columns",
        "label,difficulty",
    ]
    expect_error(capsys, [*argv, *FIT_OPTIONS], f"{data}: row 7:", "empty normal-class label in 'kind'")


def test_evaluate_with_a_truth_value_no_row_has_lists_the_values_seen(
    capsys: pytest.CaptureFixture[str], sample: Path, tmp_path: Path
) -> None:
    model = tmp_path / "m"
    assert main(["fit", str(sample), "--out", str(model), *LABELS, "--id-column", "id", *FIT_OPTIONS]) == 0
    argv = ["evaluate", str(model), str(sample), "--truth-column", "label", "--normal-value", "Normal"]
    line = expect_error(capsys, argv, f"{sample}: no row has label='Normal'", "values seen: 'normal' (")
    assert "'neptune' (" in line


def test_a_categorical_column_with_more_values_than_are_kept_is_warned_about(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """Found in review: 5,000 values, 256 kept: rows with a kept value scored as anomalies, silently."""
    data = tmp_path / "wide_category.csv"
    with data.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["x", "h"])
        writer.writerows([[i % 17, f"v{i % 400}"] for i in range(800)])
    capsys.readouterr()
    assert main(["fit", str(data), "--out", str(tmp_path / "m"), *FIT_OPTIONS]) == 0
    warned = [line for line in capsys.readouterr().err.splitlines() if "categorical column 'h'" in line]
    assert len(warned) == 1 and "400 distinct values; the 256 most frequent are kept" in warned[0]
