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
