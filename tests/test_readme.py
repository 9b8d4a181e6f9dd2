"""The README cannot rot: every command it shows parses with the real parsers, every setting and
metric it lists exists, and the Python API it shows is the real one."""

from __future__ import annotations

import argparse
import re
import shlex
from collections.abc import Callable
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from deploy.demo.run import parse_args as demo_parse_args
from detector.model import ScoredBatch
from training.cli import build_parser as training_parser
from worker.__main__ import parse_overrides
from worker.embedded_broker import build_parser as broker_parser
from worker.metrics import WorkerMetrics
from worker.replay import build_parser as replay_parser
from worker.settings import WorkerSettings

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")


def _code_blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", README, flags=re.S)


def _commands() -> list[list[str]]:
    """Every shell command of the README's sh/bash blocks, continuation lines joined, comments cut."""
    commands = []
    for block in _code_blocks("sh") + _code_blocks("bash"):
        for raw in block.replace("\\\n", " ").splitlines():
            line = raw.split(" #")[0].strip()
            if line and not line.startswith("#"):
                # "[--flag VALUE]" marks an option: check it as if it were given.
                commands.append([token.strip("[]") for token in shlex.split(line) if token.strip("[]")])
    return commands


def _parse(parser: argparse.ArgumentParser, argv: list[str]) -> None:
    try:
        parser.parse_args(argv)
    except SystemExit as exc:  # argparse exits on an unknown flag or a missing argument
        raise AssertionError(f"README command does not parse: {shlex.join(argv)}") from exc


def _check_worker(argv: list[str]) -> None:
    assert isinstance(parse_overrides(argv), dict)


def _check_demo(argv: list[str]) -> None:
    assert isinstance(demo_parse_args(argv), argparse.Namespace)


PARSERS: dict[str, Callable[[list[str]], None]] = {
    "training": lambda argv: _parse(training_parser(), argv),
    "worker": _check_worker,
    "worker.replay": lambda argv: _parse(replay_parser(), argv),
    "worker.embedded_broker": lambda argv: _parse(broker_parser(), argv),
    "deploy.demo": _check_demo,
}


def test_readme_shows_the_two_quick_start_commands_and_make_has_them() -> None:
    assert ["make", "demo"] in _commands() and ["make", "test"] in _commands()
    makefile = (ROOT / "Makefile").read_text()
    assert re.search(r"^demo:", makefile, re.M) and re.search(r"^test:", makefile, re.M)
    assert "make test" in (ROOT / ".ci" / "run").read_text()


def test_every_python_module_command_parses() -> None:
    checked = 0
    for argv in _commands():
        if "-m" not in argv:
            continue
        module = argv[argv.index("-m") + 1]
        rest = argv[argv.index("-m") + 2 :]
        if module == "pytest":
            continue
        assert module in PARSERS, f"README runs an unknown module: {module}"
        PARSERS[module](rest)
        checked += 1
    assert checked >= 15


def test_settings_table_lists_exactly_the_real_settings() -> None:
    documented = set(re.findall(r"^\| `(WORKER_[A-Z_]+)`", README, flags=re.M))
    real = set()
    for name, field in WorkerSettings.model_fields.items():
        sub = field.annotation
        if isinstance(sub, type) and hasattr(sub, "model_fields"):
            real |= {f"WORKER_{name.upper()}__{inner.upper()}" for inner in sub.model_fields}
        else:
            real.add(f"WORKER_{name.upper()}")
    assert documented == real


def test_metrics_table_lists_exactly_the_exported_metrics() -> None:
    registry = CollectorRegistry()
    WorkerMetrics(registry)
    exported = {m.name for m in registry.collect()}
    documented = {re.sub(r"_total$", "", n) for n in re.findall(r"`(kestrel_[a-z_]+)", README)}
    assert exported <= documented, f"undocumented metrics: {sorted(exported - documented)}"
    assert documented <= exported, f"documented but not exported: {sorted(documented - exported)}"


@pytest.mark.parametrize("attribute", ["scores", "flagged", "nearest_class", "p_values", "explanations"])
def test_python_api_snippet_uses_real_attributes(attribute: str) -> None:
    assert f"result.{attribute}" in README
    assert attribute in ScoredBatch.__dataclass_fields__
