"""Import rules that import-linter's layer contracts do not cover (see ARCHITECTURE.md)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("detector", "training", "worker")

#: Third-party modules confined to a few files.
CONFINED = {
    "kafka": {
        "worker/kafka_config.py",
        "worker/kafka_io.py",
        "worker/kafka_publisher.py",
        "worker/kafka_sink.py",
        "worker/topic_tools.py",
        "training/retrain/kafka_source.py",
    },
    "prometheus_client": {"worker/metrics.py", "worker/batch_histogram.py"},
    "confluent_kafka": {
        "worker/confluent_io.py",
        "worker/confluent_sink.py",
        "worker/confluent_records.py",
        "worker/confluent_unreadable.py",
    },
    "cryptography": {"detector/signing.py"},
}
FORBIDDEN = {"pickle", "dill", "joblib", "cloudpickle"}


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


SOURCES = sorted(p for package in PACKAGES for p in (ROOT / package).rglob("*.py"))


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(ROOT)))
def test_confined_and_forbidden_imports(path: Path) -> None:
    relative = str(path.relative_to(ROOT))
    imported = _imports(path)
    for module, allowed in CONFINED.items():
        assert module not in imported or relative in allowed, f"{relative} imports {module}"
    assert not imported & FORBIDDEN, f"{relative} imports {imported & FORBIDDEN}"
    assert "torch.load(" not in path.read_text(encoding="utf-8"), f"{relative} calls torch.load"


def test_the_rules_see_real_files() -> None:
    assert len(SOURCES) > 40
    assert "kafka" in _imports(ROOT / "worker" / "kafka_io.py")
