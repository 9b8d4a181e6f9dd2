"""``registry`` subcommands of the training CLI: text and JSON output, exit codes, one-line errors,
a damaged registry."""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Any

import pytest
from small_artifact import build_artifact

from detector.artifact import WEIGHTS
from detector.registry import ModelRegistry
from detector.registry import storage as storage_module
from detector.signing import load_private_key, load_public_key
from training.cli.registry import EXIT_ERROR, EXIT_OK, add_registry_commands, run_registry_command


def run(*argv: str) -> int:
    parser = argparse.ArgumentParser(prog="python -m training")
    add_registry_commands(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    assert args.command == "registry"
    assert args.run_command is run_registry_command
    code: int = args.run_command(args)
    return code


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    root = tmp_path_factory.mktemp("models")
    return [build_artifact(root / f"m{seed}", seed, {"training": {"epochs": 2}}) for seed in (11, 12)]


@pytest.fixture
def registry_dir(tmp_path: Path) -> Path:
    return tmp_path / "registry"


def json_out(capsys: pytest.CaptureFixture[str]) -> Any:
    return json.loads(capsys.readouterr().out)


def test_add_list_promote_show_rollback_history(
    registry_dir: Path, models: list[Path], capsys: pytest.CaptureFixture[str]
) -> None:
    reg = str(registry_dir)
    for command in (["list"], ["show", "live"], ["history"]):  # read-only: never create the registry
        assert run("registry", *command, "--registry", reg) == EXIT_ERROR
        assert "no registry at" in capsys.readouterr().err
    assert not registry_dir.exists()
    registry_dir.mkdir()
    assert run("registry", "list", "--registry", reg) == EXIT_OK
    assert capsys.readouterr().out.strip() == "no versions registered"

    assert run("registry", "add", str(models[0]), "--registry", reg, "--json") == EXIT_OK
    first = json_out(capsys)
    assert isinstance(first, dict)
    a = first["version"]
    assert first["promotion"] is None
    assert run("registry", "add", str(models[1]), "--registry", reg, "--promote", "--actor", "ci") == EXIT_OK
    b = capsys.readouterr().out.splitlines()[0].removeprefix("added ")
    assert ModelRegistry(registry_dir).live_version() == b

    assert run("registry", "list", "--registry", reg) == EXIT_OK
    table = capsys.readouterr().out.splitlines()
    assert table[0].split() == ["LIVE", "VERSION", "CREATED_AT", "THRESHOLD", "PROBLEM"]
    assert any(line.startswith("*") and b in line for line in table[1:])
    assert any(a in line and not line.startswith("*") for line in table[1:])

    assert run("registry", "promote", a, "--reason", "b regressed", "--registry", reg, "--json") == EXIT_OK
    record = json_out(capsys)
    assert record == {**record, "version": a, "previous": b, "reason": "b regressed", "action": "promote"}

    assert run("registry", "show", "live", "--registry", reg, "--verify") == EXIT_OK
    shown = capsys.readouterr().out
    assert f"version:    {a}" in shown
    assert "live:       yes" in shown
    assert "verified:   ok" in shown
    assert "training.epochs: 2" in shown

    assert run("registry", "rollback", "--reason", "undo", "--actor", "oncall", "--registry", reg) == EXIT_OK
    assert capsys.readouterr().out.strip() == f"rolled back to {b} (previous: {a})"

    assert run("registry", "history", "--registry", reg, "--json") == EXIT_OK
    history = json_out(capsys)
    assert isinstance(history, list)
    assert [(r["action"], r["version"], r["actor"]) for r in history] == [
        ("promote", b, "ci"),
        ("promote", a, history[1]["actor"]),
        ("rollback", b, "oncall"),
    ]
    assert run("registry", "history", "--registry", reg, "--limit", "1") == EXIT_OK
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["AT", "ACTION", "VERSION", "PREVIOUS", "ACTOR", "REASON"]
    assert len(lines) == 2
    assert "rollback" in lines[1]


def test_show_json_lists_metrics_and_optionally_the_manifest(
    registry_dir: Path, models: list[Path], capsys: pytest.CaptureFixture[str]
) -> None:
    version = ModelRegistry(registry_dir).add(models[0])
    assert run("registry", "show", version, "--registry", str(registry_dir), "--json", "--manifest") == EXIT_OK
    shown = json_out(capsys)
    assert isinstance(shown, dict)
    assert shown["version"] == version
    assert shown["is_live"] is False
    manifest = json.loads((models[0] / "manifest.json").read_text())
    assert shown["threshold"] == pytest.approx(manifest["scorer"]["threshold"])
    assert shown["metrics"] == {"training.epochs": 2}
    assert shown["manifest"]["model_version"] == version


@pytest.mark.parametrize(
    "argv",
    [
        ("registry", "promote", "no-such-version", "--reason", "typo"),
        ("registry", "show", "no-such-version"),
        ("registry", "show", "live"),
        ("registry", "rollback", "--reason", "nothing live"),
        ("registry", "add", "/nonexistent/model"),
    ],
)
def test_errors_print_one_line_and_exit_non_zero(
    registry_dir: Path, argv: tuple[str, ...], capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(*argv, "--registry", str(registry_dir)) == EXIT_ERROR
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.startswith("error: ")
    assert captured.err.count("\n") == 1


def test_add_refuses_a_corrupted_model(
    registry_dir: Path, models: list[Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    broken = build_artifact(tmp_path / "broken", 13, {"training": {"epochs": 2}})
    (broken / WEIGHTS).write_bytes((broken / WEIGHTS).read_bytes()[:-10])
    assert run("registry", "add", str(broken), "--registry", str(registry_dir)) == EXIT_ERROR
    assert "sha256 mismatch" in capsys.readouterr().err
    assert ModelRegistry(registry_dir).versions() == []


def test_usage_errors_exit_with_argparse_code(registry_dir: Path) -> None:
    with pytest.raises(SystemExit) as exc:
        run("registry", "promote", "v1", "--registry", str(registry_dir))  # no --reason
    assert exc.value.code == 2


def test_promoting_a_model_whose_events_need_more_warns_what_changed(
    tmp_path: Path, models: list[Path], capsys: pytest.CaptureFixture[str]
) -> None:
    """Found in review: a promotion that makes a field required was silent, and then every event
    without it went to the dead-letter topic."""
    reg = str(tmp_path / "registry")
    lenient = build_artifact(tmp_path / "lenient", 13, optional=["duration"])
    assert run("registry", "add", str(lenient), "--registry", reg, "--promote") == EXIT_OK
    assert "warning" not in capsys.readouterr().err  # nothing live before: nothing to compare
    assert run("registry", "add", str(models[0]), "--registry", reg, "--promote") == EXIT_OK
    added = capsys.readouterr()
    assert "event spec changed (newly required: duration)" in added.err
    strict = added.out.splitlines()[0].removeprefix("added ")
    assert run("registry", "rollback", "--registry", reg, "--reason", "x") == EXIT_OK
    assert "warning" not in capsys.readouterr().err  # back to the lenient one: nothing newly needed
    assert run("registry", "promote", strict, "--registry", reg, "--reason", "x") == EXIT_OK
    assert capsys.readouterr().err.count("newly required: duration") == 1


def test_add_promote_of_a_registered_version_whose_copy_is_corrupt_is_refused(
    tmp_path: Path, models: list[Path], capsys: pytest.CaptureFixture[str]
) -> None:
    reg = tmp_path / "registry"
    registry = ModelRegistry(reg)
    live = registry.add(models[0])
    registry.promote(live, "initial")
    version = registry.add(models[1])
    weights = registry.version_path(version) / WEIGHTS
    data = bytearray(weights.read_bytes())
    data[len(data) // 2] ^= 0xFF  # bit rot in the registered copy; the source directory is intact
    weights.write_bytes(bytes(data))
    capsys.readouterr()
    assert run("registry", "add", str(models[1]), "--registry", str(reg), "--promote", "--reason", "re-add") == 1
    err = capsys.readouterr().err
    assert err.startswith(f"error: version {version} is already registered, but its registered copy fails")
    assert "sha256 mismatch" in err
    assert registry.live_version() == live
    assert [r.version for r in registry.history()] == [live]


def test_list_shows_an_unreadable_version_under_problem(
    tmp_path: Path, models: list[Path], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    reg = tmp_path / "registry"
    registry = ModelRegistry(reg)
    readable, unreadable = (registry.add(m) for m in models)
    registry.promote(readable, "initial")
    locked = registry.storage.local_path(f"versions/{unreadable}")
    real_open = os.open

    def denying_open(path: str | os.PathLike[str], flags: int, *args: int) -> int:
        if Path(path).is_relative_to(locked):  # a directory of another uid with mode 0700
            raise PermissionError(13, "Permission denied", str(path))
        return real_open(path, flags, *args)

    monkeypatch.setattr(storage_module.os, "open", denying_open)
    assert run("registry", "list", "--registry", str(reg)) == EXIT_OK
    table = capsys.readouterr().out.splitlines()
    assert table[0].split() == ["LIVE", "VERSION", "CREATED_AT", "THRESHOLD", "PROBLEM"]
    [live_row] = [line for line in table if readable in line]
    [problem_row] = [line for line in table if unreadable in line]
    assert live_row.startswith("*")
    assert problem_row.endswith(f"cannot read versions/{unreadable}/manifest.json: Permission denied")
    assert run("registry", "list", "--registry", str(reg), "--json") == EXIT_OK
    listed = {item["version"]: item["error"] for item in json.loads(capsys.readouterr().out)}
    assert listed == {readable: None, unreadable: f"cannot read versions/{unreadable}/manifest.json: Permission denied"}


def test_keygen_accepts_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    private, public = tmp_path / "k", tmp_path / "k.pub"
    assert run("registry", "keygen", "--private-key", str(private), "--public-key", str(public), "--json") == EXIT_OK
    assert json.loads(capsys.readouterr().out) == {"private_key": str(private), "public_key": str(public)}
    load_private_key(private)
    load_public_key(str(public))
    assert run("registry", "keygen", "--private-key", str(private), "--public-key", str(public), "--json") == EXIT_ERROR


def test_every_subcommand_accepts_json() -> None:
    parser = argparse.ArgumentParser(prog="python -m training")
    registry = add_registry_commands(parser.add_subparsers(dest="command", required=True))
    [choices] = [a.choices for a in registry._actions if isinstance(a, argparse._SubParsersAction)]
    assert choices is not None
    for name, sub in choices.items():
        assert any("--json" in a.option_strings for a in sub._actions), name


@pytest.mark.parametrize("command", [("promote", "v1"), ("rollback",)])
def test_promote_and_rollback_never_create_a_mistyped_registry(
    tmp_path: Path, command: tuple[str, ...], capsys: pytest.CaptureFixture[str]
) -> None:
    """Found in review: they made the directory and its lock, after which `list` showed an empty registry."""
    mistyped = tmp_path / "regsitry"
    assert run("registry", *command, "--reason", "r", "--registry", str(mistyped)) == EXIT_ERROR
    assert f"no registry at {mistyped}" in capsys.readouterr().err
    assert not mistyped.exists()


@pytest.fixture
def keys(tmp_path: Path) -> dict[str, Path]:
    paths = {name: tmp_path / f"{name}.pem" for name in ("right", "right_pub", "wrong", "wrong_pub")}
    assert run("registry", "keygen", "--private-key", str(paths["right"]), "--public-key", str(paths["right_pub"])) == 0
    assert run("registry", "keygen", "--private-key", str(paths["wrong"]), "--public-key", str(paths["wrong_pub"])) == 0
    return paths


@pytest.mark.parametrize("signing", ["wrong", None])
def test_add_promote_registers_nothing_it_could_not_promote(
    registry_dir: Path,
    models: list[Path],
    keys: dict[str, Path],
    signing: str | None,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Found in review: the copy was registered (immutable) signed by the wrong key or unsigned, then
    refused by promote; retrying with the right key was refused as a conflicting copy."""
    common = ("--registry", str(registry_dir), "--public-key", str(keys["right_pub"]), "--promote", "--reason", "r")
    signed = ("--signing-key", str(keys[signing])) if signing else ()
    assert run("registry", "add", str(models[0]), *common, *signed) == EXIT_ERROR
    assert "nothing was registered" in capsys.readouterr().err
    assert not registry_dir.exists() or not ModelRegistry(registry_dir).versions()
    assert run("registry", "add", str(models[0]), *common, "--signing-key", str(keys["right"])) == EXIT_OK
    assert ModelRegistry(registry_dir).live_version() is not None


def test_add_promote_of_a_version_registered_signed_promotes_the_signed_copy(
    registry_dir: Path, models: list[Path], keys: dict[str, Path]
) -> None:
    """Found in review of the check above: CI registered the model signed, then an operator's
    `add --promote` from the same unsigned directory was refused, though the copy it promotes is signed."""
    assert (
        run("registry", "add", str(models[0]), "--registry", str(registry_dir), "--signing-key", str(keys["right"]))
        == 0
    )
    common = ("--registry", str(registry_dir), "--public-key", str(keys["right_pub"]), "--promote", "--reason", "go")
    assert run("registry", "add", str(models[0]), *common) == EXIT_OK
    assert ModelRegistry(registry_dir).live_version() is not None
