"""The retrain command the compose service and the CronJob run is one the trainer's CLI accepts."""

from __future__ import annotations

import argparse
from typing import Any

import pytest
import yaml
from deploy_paths import COMPOSE, KUBE_BASE

from training.cli.main import build_parser


def _retrain_commands() -> dict[str, list[str]]:
    compose: dict[str, Any] = yaml.safe_load(COMPOSE.read_text(encoding="utf-8"))
    cronjob: dict[str, Any] = yaml.safe_load((KUBE_BASE / "cronjob-retrain.yaml").read_text(encoding="utf-8"))
    (container,) = cronjob["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"]
    return {"compose": compose["services"]["retrain"]["command"], "cronjob": container["args"]}


@pytest.mark.parametrize("where", ["compose", "cronjob"])
def test_retrain_arguments_parse(where: str) -> None:
    command = _retrain_commands()[where]
    assert command[:2] == ["training", "retrain"]
    parser = build_parser()
    subcommands = {
        name for action in parser._actions if isinstance(action, argparse._SubParsersAction) for name in action.choices
    }
    if "retrain" not in subcommands:
        pytest.skip("python -m training has no retrain command yet (retrain issue)")
    parser.parse_args(command[1:])  # exits (SystemExit) on arguments the trainer does not accept


def test_the_cronjob_retries_a_failure_only_not_a_decision() -> None:
    """Found in review: with ``backoffLimit: 1`` a kept candidate (exit 3) or a usage error (2)
    ran a second pod, which retrained for up to 4 hours and registered a second candidate."""
    from training.cli import retrain  # noqa: PLC0415

    cronjob: dict[str, Any] = yaml.safe_load((KUBE_BASE / "cronjob-retrain.yaml").read_text(encoding="utf-8"))
    job = cronjob["spec"]["jobTemplate"]["spec"]
    assert job["backoffLimit"] >= 1 and job["template"]["spec"]["restartPolicy"] == "Never"
    (rule,) = job["podFailurePolicy"]["rules"]
    assert rule["action"] == "FailJob" and rule["onExitCodes"]["operator"] == "In"
    assert rule["onExitCodes"]["containerName"] == "retrain"
    assert sorted(rule["onExitCodes"]["values"]) == sorted([retrain.EXIT_USAGE, retrain.EXIT_KEPT])
    assert retrain.EXIT_FAILED not in rule["onExitCodes"]["values"]
