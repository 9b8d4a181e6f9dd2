"""The README and the docs cannot rot: every command they show parses with the real parsers, every
setting and metric the reference lists exists, the Python API they show is the real one, and every
relative link resolves."""

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
from training.cli.main import build_parser as training_parser
from worker.__main__ import parse_overrides
from worker.embedded_broker import build_parser as broker_parser
from worker.metrics import WorkerMetrics
from worker.replay import build_parser as replay_parser
from worker.settings import WorkerSettings
from worker.tail import build_parser as tail_parser

ROOT = Path(__file__).resolve().parents[1]
README_PATH = ROOT / "README.md"
DOCS_DIR = ROOT / "docs"
#: README first, then every page under docs/ (a new page is checked without being listed here).
PAGES = [README_PATH, *sorted(DOCS_DIR.glob("*.md"))]
TEXT = {page: page.read_text(encoding="utf-8") for page in PAGES}
README = TEXT[README_PATH]
WORKER_DOC = TEXT[DOCS_DIR / "worker.md"]  # the settings and metrics reference
TRAINING_DOC = TEXT[DOCS_DIR / "training.md"]  # the Python API
README_MAX_LINES = 250


def _code_blocks(language: str, text: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", text, flags=re.S)


def _commands(text: str) -> list[list[str]]:
    """Every shell command of the sh/bash blocks of ``text``, continuation lines joined, comments cut."""
    commands = []
    for block in _code_blocks("sh", text) + _code_blocks("bash", text):
        for raw in block.replace("\\\n", " ").splitlines():
            line = raw.split(" #")[0].strip()
            if line and not line.startswith("#"):
                # "[--flag VALUE]" marks an option: check it as if it were given.
                commands.append([token.strip("[]") for token in shlex.split(line) if token.strip("[]")])
    return commands


def _all_commands() -> list[list[str]]:
    return [argv for page in PAGES for argv in _commands(TEXT[page])]


def _parse(parser: argparse.ArgumentParser, argv: list[str]) -> None:
    try:
        parser.parse_args(argv)
    except SystemExit as exc:  # argparse exits on an unknown flag or a missing argument
        raise AssertionError(f"documented command does not parse: {shlex.join(argv)}") from exc


def _check_worker(argv: list[str]) -> None:
    assert isinstance(parse_overrides(argv), dict)


def _check_demo(argv: list[str]) -> None:
    assert isinstance(demo_parse_args(argv), argparse.Namespace)


PARSERS: dict[str, Callable[[list[str]], None]] = {
    "training": lambda argv: _parse(training_parser(), argv),
    "worker": _check_worker,
    "worker.replay": lambda argv: _parse(replay_parser(), argv),
    "worker.tail": lambda argv: _parse(tail_parser(), argv),
    "worker.embedded_broker": lambda argv: _parse(broker_parser(), argv),
    "deploy.demo": _check_demo,
}


def _module_commands(text: str) -> list[tuple[str, list[str]]]:
    """(module, arguments) of every ``python -m MODULE ...`` command of ``text``, pytest excluded."""
    found = []
    for argv in _commands(text):
        if "-m" not in argv:
            continue
        module = argv[argv.index("-m") + 1]
        if module != "pytest":
            found.append((module, argv[argv.index("-m") + 2 :]))
    return found


def test_readme_shows_the_two_quick_start_commands_and_make_has_them() -> None:
    assert ["make", "demo"] in _commands(README) and ["make", "test"] in _commands(README)
    makefile = (ROOT / "Makefile").read_text()
    assert re.search(r"^demo:", makefile, re.M) and re.search(r"^test:", makefile, re.M)
    assert "make test" in (ROOT / ".ci" / "run").read_text()


def test_readme_keeps_the_test_command_block() -> None:
    commands = _commands(README)
    assert ["make", "test"] in commands
    assert [".venv/bin/python", "-m", "pytest", "-m", "not kafka"] in commands
    assert [".venv/bin/python", "-m", "pytest", "-m", "kafka"] in commands


def test_readme_stays_short_and_maps_every_doc() -> None:
    assert len(README.splitlines()) <= README_MAX_LINES, "move detail into docs/, keep the README a guide"
    for page in PAGES[1:]:
        assert f"](docs/{page.name})" in README, f"README does not link {page.name}"


def test_readme_walks_from_training_to_a_flagged_anomaly() -> None:
    modules = {module for module, _ in _module_commands(README)}
    assert {"training", "worker", "worker.embedded_broker", "worker.replay", "worker.tail"} <= modules


@pytest.mark.parametrize("page", PAGES, ids=lambda page: page.relative_to(ROOT).as_posix())
def test_every_python_module_command_parses(page: Path) -> None:
    for module, rest in _module_commands(TEXT[page]):
        assert module in PARSERS, f"{page.name} runs an unknown module: {module}"
        PARSERS[module](rest)


def test_enough_commands_are_checked() -> None:
    """A floor, so that a change of the block syntax cannot silently check nothing."""
    assert len(_module_commands(README)) >= 8
    assert sum(len(_module_commands(TEXT[page])) for page in PAGES) >= 35


def _real_settings() -> set[str]:
    real = set()
    for name, field in WorkerSettings.model_fields.items():
        sub = field.annotation
        if isinstance(sub, type) and hasattr(sub, "model_fields"):
            real |= {f"WORKER_{name.upper()}__{inner.upper()}" for inner in sub.model_fields}
        else:
            real.add(f"WORKER_{name.upper()}")
    return real


def _table_settings(text: str) -> set[str]:
    return set(re.findall(r"^\| `(WORKER_[A-Z_]+)`", text, flags=re.M))


def test_settings_table_lists_exactly_the_real_settings() -> None:
    assert _table_settings(WORKER_DOC) == _real_settings()


def test_no_page_tabulates_a_setting_that_does_not_exist() -> None:
    for page in PAGES:
        assert _table_settings(TEXT[page]) <= _real_settings(), f"{page.name} lists an unknown setting"


def test_no_page_mentions_a_setting_that_does_not_exist() -> None:
    real = _real_settings()
    for page in PAGES:
        mentioned = set(re.findall(r"`(WORKER_[A-Z_]+)(?:=[^`]*)?`", TEXT[page]))
        assert mentioned <= real, f"{page.name} mentions unknown settings: {sorted(mentioned - real)}"


def _exported_metrics() -> set[str]:
    registry = CollectorRegistry()
    WorkerMetrics(registry)
    return {m.name for m in registry.collect()}


def _mentioned_metrics(text: str) -> set[str]:
    return {re.sub(r"_total$", "", n) for n in re.findall(r"`(kestrel_[a-z_]+)", text)}


def test_metrics_table_lists_exactly_the_exported_metrics() -> None:
    exported = _exported_metrics()
    tabulated = {
        re.sub(r"_total$", "", name)
        for row in re.findall(r"^\| (`kestrel_[^|]*)\|", WORKER_DOC, flags=re.M)
        for name in re.findall(r"`(kestrel_[a-z_]+)", row)
    }
    assert exported <= tabulated, f"undocumented metrics: {sorted(exported - tabulated)}"
    assert tabulated <= exported, f"documented but not exported: {sorted(tabulated - exported)}"


@pytest.mark.parametrize("page", PAGES, ids=lambda page: page.relative_to(ROOT).as_posix())
def test_no_page_mentions_a_metric_that_is_not_exported(page: Path) -> None:
    documented = _mentioned_metrics(TEXT[page])
    exported = _exported_metrics()
    assert documented <= exported, f"documented but not exported: {sorted(documented - exported)}"


@pytest.mark.parametrize("attribute", ["scores", "flagged", "nearest_class", "p_values", "explanations"])
def test_python_api_snippet_uses_real_attributes(attribute: str) -> None:
    snippet = "\n".join(_code_blocks("python", TRAINING_DOC))
    assert f"result.{attribute}" in snippet
    assert attribute in ScoredBatch.__dataclass_fields__


def _anchor(heading: str) -> str:
    """GitHub's anchor of a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[`*]|\[([^]]*)\]\([^)]*\)", lambda m: m.group(1) or "", heading.strip().lower())
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def _anchors(text: str) -> set[str]:
    prose = re.sub(r"```.*?```", "", text, flags=re.S)
    return {_anchor(h) for h in re.findall(r"^#{1,6} (.+)$", prose, flags=re.M)}


@pytest.mark.parametrize("page", PAGES, ids=lambda page: page.relative_to(ROOT).as_posix())
def test_relative_links_resolve(page: Path) -> None:
    prose = re.sub(r"```.*?```", "", TEXT[page], flags=re.S)
    for target in re.findall(r"\]\(([^)\s]+)\)", prose):
        if re.match(r"[a-z]+:", target):
            continue  # an external address
        path, _, anchor = target.partition("#")
        linked = (page.parent / path).resolve() if path else page
        assert linked.exists(), f"{page.name} links a missing file: {target}"
        if anchor and linked.suffix == ".md":
            assert anchor in _anchors(linked.read_text(encoding="utf-8")), f"{page.name}: no heading for {target}"


@pytest.mark.parametrize("page", PAGES, ids=lambda page: page.relative_to(ROOT).as_posix())
def test_repository_paths_named_exist(page: Path) -> None:
    """A file of the repository named in backticks (``training/retrain/gate.py``) is still there."""
    top = "benchmarks|data|deploy|detector|docs|tests|training|worker"
    for path in re.findall(rf"`((?:{top})/[\w./+-]+\.(?:py|ya?ml|json|txt|md))`", TEXT[page]):
        assert (ROOT / path).exists(), f"{page.name} names a missing file: {path}"
