"""``registry`` subcommands against a damaged registry, and ``--json`` on every subcommand."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest
from small_artifact import build_artifact

from detector.artifact import WEIGHTS
from detector.registry import ModelRegistry
from detector.signing import load_private_key, load_public_key
from training.cli.registry import EXIT_ERROR, EXIT_OK, add_registry_commands


def run(*argv: str) -> int:
    parser = argparse.ArgumentParser(prog="python -m training")
    add_registry_commands(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    code: int = args.run_command(args)
    return code


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    root = tmp_path_factory.mktemp("models")
    return [build_artifact(root / f"m{seed}", seed, {"training": {"epochs": 2}}) for seed in (21, 22)]


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
    real_read_bytes = Path.read_bytes

    def read_bytes(path: Path) -> bytes:
        if path.is_relative_to(locked):  # a directory of another uid with mode 0700
            raise PermissionError(13, "Permission denied", str(path))
        return real_read_bytes(path)

    monkeypatch.setattr(Path, "read_bytes", read_bytes)
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
