"""``python -m training``: fit, score, evaluate, retrain and registry commands.

Exit codes, the same for every subcommand (fit, score, evaluate, retrain, registry, feedback):

* 0: done (retrain: the candidate was promoted);
* 1: the command failed: a bad or missing data file, a bad value (the message names the file,
  row and field), a bad model, a registry or Kafka problem, a training failure;
* 2: a bad command line: argparse's own errors, options that go together, an out-of-range value;
* 3: retrain only: the gate kept the live model.

Errors of the project's own types (:class:`detector.errors.DetectorError`) and OS errors print
one line ``error: ...`` on stderr; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from detector.cli_help import show_defaults
from detector.errors import DetectorError, UsageError
from training.cli.commands import run_evaluate, run_fit, run_score
from training.cli.feedback import add_feedback_command
from training.cli.registry import add_registry_commands
from training.cli.retrain import add_retrain_command
from training.config import TrainConfig
from training.fit import FitConfig

EXIT_FAILED = 1
EXIT_USAGE = 2


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m training",
        description=__doc__.splitlines()[0],
        epilog="Exit codes: 0 done, 1 failed (bad data file, value, model, registry, Kafka), 2 bad command line, "
        "3 retrain kept the live model.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_fit(sub)
    _add_score(sub)
    _add_evaluate(sub)
    add_registry_commands(sub)
    add_retrain_command(sub)
    add_feedback_command(sub)
    return show_defaults(parser)


def add_data_options(parser: argparse.ArgumentParser) -> None:
    """Options that say how to read a data file (shared by fit and retrain)."""
    parser.add_argument("--label-column", metavar="COL", help="normal-class label column (kinds of normal)")
    parser.add_argument("--truth-column", metavar="COL", help="column telling normal from anomalous rows")
    parser.add_argument("--normal-value", metavar="V", help="value of --truth-column that marks a normal row")
    parser.add_argument("--id-column", metavar="COL", help="event id column (not a feature)")
    parser.add_argument("--timestamp-column", metavar="COL", help="event time column (not a feature)")
    parser.add_argument(
        "--drop-columns", metavar="A,B", default="", help="columns that are not features (default: none)"
    )
    parser.add_argument("--spec", type=Path, metavar="SPEC.json", help="feature spec file (else inferred)")


def add_training_options(parser: argparse.ArgumentParser) -> None:
    """Options that shape training (shared by fit and retrain)."""
    fit, train = FitConfig(), TrainConfig()  # the defaults shown in the help
    parser.add_argument(
        "--loss", choices=["contrastive", "triplet"], default=None, help=f"metric loss (default: {train.loss})"
    )
    parser.add_argument(
        "--mining", choices=["batch_hard", "semi_hard"], default=None, help=f"triplet mining (default: {train.mining})"
    )
    parser.add_argument("--margin", type=float, default=None, help="loss margin (default: the loss's own)")
    parser.add_argument(
        "--target-fpr",
        type=float,
        default=None,
        help=f"false-positive rate to calibrate for (default: {fit.target_fpr})",
    )
    parser.add_argument(
        "--epochs",
        type=int,
        default=None,
        help="epochs to run at most, exactly as given (default: 10, more for small data); a cross-fitted "
        "fit's final model runs the optimiser steps its fold models kept",
    )
    parser.add_argument(
        "--min-steps",
        type=int,
        default=None,
        help=f"optimiser steps the default epoch budget aims for, ignored with --epochs (default: {train.min_steps})",
    )
    parser.add_argument(
        "--embedding-dim", type=int, default=None, help=f"embedding size (default: {train.embedding_dim})"
    )
    parser.add_argument(
        "--score-terms",
        choices=["auto", "both", "input"],
        default=None,
        help=(
            "terms of the score: embedding + input distance, the input distance alone, or auto "
            f"(chosen from held-out normals, docs/quality.md) (default: {fit.score_terms})"
        ),
    )
    parser.add_argument(
        "--gauss-term",
        choices=["auto", "on", "off"],
        default=None,
        help=(
            "the score's third term, the input distance after each numeric column's rank-Gauss map: "
            f"auto (kept when held-out normals prefer it, docs/quality.md), on, off (default: {fit.gauss_term})"
        ),
    )
    parser.add_argument(
        "--unlabelled-objective",
        choices=["auto", "clusters", "one_class", "views", "views_one_class"],
        default=None,
        help=(
            "positives for normal data without class labels, see docs/training.md "
            f"(default: {train.unlabelled_positives})"
        ),
    )
    parser.add_argument(
        "--projection",
        choices=["auto", "sphere", "stereographic"],
        default=None,
        help=f"how the encoder's output is put on the unit sphere, see docs/training.md (default: {train.projection})",
    )
    parser.add_argument("--seed", type=int, default=None, help=f"random seed (default: {train.seed})")
    parser.add_argument(
        "--threads", type=int, default=None, help="torch CPU threads (default: 1 unless a training step is large)"
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bar (or progress lines when not a terminal)")


def _add_fit(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    fit = sub.add_parser("fit", help="train a detector on normal data")
    fit.add_argument("data", type=Path, metavar="DATA", help="CSV (with header) or JSONL, gzip or not")
    fit.add_argument("--out", type=Path, required=True, metavar="MODEL_DIR", help="artifact directory to write")
    add_data_options(fit)
    add_training_options(fit)
    fit.add_argument(
        "--calibration-fraction",
        type=float,
        default=None,
        help=f"normals held out to calibrate (default: {FitConfig().calibration_fraction}); a holdout under"
        f" {FitConfig().cross_fit_below:,} normals is not used: every normal is calibrated on by cross-fitting",
    )
    fit.add_argument(
        "--report",
        type=Path,
        metavar="DIR",
        help=(
            "also evaluate: the normals calibrated on, scored by models that did not train on them, "
            "and DATA's anomalous rows (needs --truth-column)"
        ),
    )
    fit.set_defaults(run_command=run_fit)


def _add_score(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    score = sub.add_parser("score", help="score every row of a file")
    score.add_argument("model", type=Path, metavar="MODEL_DIR", help="model directory written by fit")
    score.add_argument("data", type=Path, metavar="DATA", help="CSV (with header) or JSONL, gzip or not")
    score.add_argument("--out", type=Path, required=True, metavar="SCORES.csv", help="CSV of scores to write")
    score.set_defaults(run_command=run_score)


def _add_evaluate(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    evaluate = sub.add_parser("evaluate", help="metrics of a model on labelled data (JSON on stdout)")
    evaluate.add_argument("model", type=Path, metavar="MODEL_DIR", help="model directory written by fit")
    evaluate.add_argument("data", type=Path, metavar="DATA", help="labelled CSV (with header) or JSONL, gzip or not")
    evaluate.add_argument("--truth-column", required=True, metavar="COL", help="column telling normal from anomalous")
    evaluate.add_argument(
        "--normal-value", required=True, metavar="V", help="value of --truth-column marking a normal row"
    )
    evaluate.add_argument("--drop-columns", metavar="A,B", default="", help="columns to ignore (default: none)")
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
    except UsageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except (DetectorError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
    return code
