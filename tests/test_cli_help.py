"""Help that helps: every option and positional of every command has help, defaults are shown."""

from __future__ import annotations

import argparse
from collections.abc import Iterator

import pytest

from deploy.demo.run import parse_args as demo_parse_args
from training.cli.main import build_parser as training_parser
from worker.__main__ import parse_overrides
from worker.replay import build_parser as replay_parser
from worker.tail import build_parser as tail_parser

CHECKED_TRAINING = {"fit", "score", "evaluate", "retrain", "registry", "feedback"}


def parsers(parser: argparse.ArgumentParser, name: str) -> Iterator[tuple[str, argparse.ArgumentParser]]:
    yield name, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub_name, sub in action.choices.items():
                if name != "training" or sub_name in CHECKED_TRAINING:
                    yield from parsers(sub, f"{name} {sub_name}")


def all_parsers() -> Iterator[tuple[str, argparse.ArgumentParser]]:
    yield from parsers(training_parser(), "training")
    yield from parsers(replay_parser(), "replay")
    yield from parsers(tail_parser(), "tail")


def test_every_option_and_positional_has_help() -> None:
    missing = [
        f"{name}: {action.option_strings or action.dest}"
        for name, parser in all_parsers()
        for action in parser._actions
        if not isinstance(action, argparse._HelpAction | argparse._SubParsersAction) and not (action.help or "").strip()
    ]
    assert missing == []


def help_of(parser: argparse.ArgumentParser) -> str:
    return " ".join(parser.format_help().split())  # unwrapped


def test_training_help_shows_defaults() -> None:
    subs = dict(all_parsers())
    fit = help_of(subs["training fit"])
    for text in ("--target-fpr TARGET_FPR false-positive rate to calibrate for (default: 0.01)",
                 "(default: 10, more for small data)", "--seed SEED random seed (default: 0)",
                 "--loss {contrastive,triplet} metric loss (default: contrastive)"):  # fmt: skip
        assert text in fit
    assert "--threads" in fit and "Exit codes" in help_of(subs["training"])
    assert "(default: None)" not in fit and "(default: False)" not in fit
    retrain = help_of(subs["training retrain"])
    assert "(default: $WORKER_KAFKA__BOOTSTRAP_SERVERS, else localhost:9092)" in retrain
    assert "(default: $WORKER_KAFKA__INPUT_TOPIC, else events)" in retrain


def test_replay_tail_and_worker_help_show_defaults(capsys: pytest.CaptureFixture[str]) -> None:
    replay = help_of(replay_parser())
    assert "(default: 0.0)" in replay and "else localhost:9092)" in replay and "Exit codes" in replay
    assert "(default: anomalies)" in help_of(tail_parser())
    with pytest.raises(SystemExit):
        parse_overrides(["--help"])
    worker = " ".join(capsys.readouterr().out.split())
    assert "overrides WORKER_BATCH_SIZE (default: 500)" in worker and "(default: unset)" in worker


def test_demo_help_shows_defaults(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        demo_parse_args(["--help"])
    demo = " ".join(capsys.readouterr().out.split())
    assert "--rate RATE events per second (0 = as fast as possible) (default: 2000.0)" in demo
    assert "--target-fpr TARGET_FPR false-positive rate to calibrate for (default: 0.05)" in demo
