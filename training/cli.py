"""``python -m training``: fit, score, evaluate, retrain and registry commands.

Every expected failure (bad file, missing column, bad value, bad model) prints one line
``error: ...`` on stderr and exits with status 2; nothing prints a traceback.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from detector.errors import DetectorError
from training.cli_commands import run_evaluate, run_fit, run_score
from training.registry_cli import add_registry_commands
from training.retrain_cli import add_retrain_command

EXIT_USAGE = 2


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m training", description=__doc__.splitlines()[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_fit(sub)
    _add_score(sub)
    _add_evaluate(sub)
    add_registry_commands(sub)
    add_retrain_command(sub)
    return parser


def add_data_options(parser: argparse.ArgumentParser) -> None:
    """Options that say how to read a data file (shared by fit and retrain)."""
    parser.add_argument("--label-column", metavar="COL", help="normal-class label column (kinds of normal)")
    parser.add_argument("--truth-column", metavar="COL", help="column telling normal from anomalous rows")
    parser.add_argument("--normal-value", metavar="V", help="value of --truth-column that marks a normal row")
    parser.add_argument("--id-column", metavar="COL", help="event id column (not a feature)")
    parser.add_argument("--timestamp-column", metavar="COL", help="event time column (not a feature)")
    parser.add_argument("--drop-columns", metavar="A,B", default="", help="columns that are not features")
    parser.add_argument("--spec", type=Path, metavar="SPEC.json", help="feature spec file (else inferred)")


def add_training_options(parser: argparse.ArgumentParser) -> None:
    """Options that shape training (shared by fit and retrain)."""
    parser.add_argument("--loss", choices=["contrastive", "triplet"], default=None, help="metric loss")
    parser.add_argument("--mining", choices=["batch_hard", "semi_hard"], default=None, help="triplet mining")
    parser.add_argument("--margin", type=float, default=None, help="loss margin")
    parser.add_argument("--target-fpr", type=float, default=None, help="false-positive rate to calibrate for")
    parser.add_argument("--epochs", type=int, default=None, help="maximum epochs")
    parser.add_argument("--min-steps", type=int, default=None, help="at least about this many optimiser steps")
    parser.add_argument("--embedding-dim", type=int, default=None, help="embedding size")
    parser.add_argument(
        "--unlabelled-objective",
        choices=["auto", "clusters", "one_class", "views", "views_one_class"],
        default=None,
        help="positives when the normal data has no class labels (see the README)",
    )
    parser.add_argument(
        "--projection",
        choices=["auto", "sphere", "stereographic"],
        default=None,
        help="how the encoder's output is put on the unit sphere (see the README)",
    )
    parser.add_argument("--seed", type=int, default=None, help="random seed")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def _add_fit(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    fit = sub.add_parser("fit", help="train a detector on normal data")
    fit.add_argument("data", type=Path, metavar="DATA", help="CSV (with header) or JSONL, gzip or not")
    fit.add_argument("--out", type=Path, required=True, metavar="MODEL_DIR", help="artifact directory to write")
    add_data_options(fit)
    add_training_options(fit)
    fit.add_argument("--calibration-fraction", type=float, default=None, help="normals held out to calibrate")
    fit.add_argument("--report", type=Path, metavar="DIR", help="also evaluate on DATA (needs --truth-column)")
    fit.set_defaults(run_command=run_fit)


def _add_score(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    score = sub.add_parser("score", help="score every row of a file")
    score.add_argument("model", type=Path, metavar="MODEL_DIR")
    score.add_argument("data", type=Path, metavar="DATA")
    score.add_argument("--out", type=Path, required=True, metavar="SCORES.csv")
    score.set_defaults(run_command=run_score)


def _add_evaluate(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    evaluate = sub.add_parser("evaluate", help="metrics of a model on labelled data (JSON on stdout)")
    evaluate.add_argument("model", type=Path, metavar="MODEL_DIR")
    evaluate.add_argument("data", type=Path, metavar="DATA")
    evaluate.add_argument("--truth-column", required=True, metavar="COL")
    evaluate.add_argument("--normal-value", required=True, metavar="V")
    evaluate.add_argument("--drop-columns", metavar="A,B", default="", help="columns to ignore")
    evaluate.add_argument("--report", type=Path, metavar="DIR", help="write the HTML report here")
    evaluate.set_defaults(run_command=run_evaluate)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s"
    )
    try:
        code: int = args.run_command(args)
    except (DetectorError, OSError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
    return code
