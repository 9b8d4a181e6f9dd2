"""What the score's rank-Gauss third term costs the worker's pipeline (prints figures; docs/benchmarks.md).

Run: ``.venv/bin/python benchmarks/gauss_term_cost.py [--events 20000] [--rounds 3]``

Two models of the throughput benchmark (``benchmarks/worker_throughput.py``: the trainer's defaults
on NSL-KDD's normal rows, same seed, so the same encoder): one fitted with ``gauss_term="on"``, one
with ``"off"``. Their pure pipelines (decode, featurize, score, anomaly records; batch 500, one torch
and one BLAS thread, as the worker runs) are timed alternately, ``--rounds`` times three passes
each over the same events; prints each model's median events/s and the ratio.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "benchmarks"), str(ROOT / "tests"), str(ROOT / "tests" / "worker")]

from tiny_model import load_rows, to_event  # noqa: E402
from worker_throughput import make_events, pipeline_rates  # noqa: E402

from detector.model import Detector  # noqa: E402
from detector.spec_inference import infer_spec  # noqa: E402
from training.config import TrainConfig  # noqa: E402
from training.fit import FitConfig, fit_detector  # noqa: E402


def train(out_dir: Path, gauss_term: str) -> Path:
    rows = load_rows(30_000)
    normal = [to_event(r, i, 1_700_000_000.0 + i) for i, r in enumerate(rows) if r["label"] == "normal"]
    spec = infer_spec(normal, id_field="event_id", timestamp_field="ts")
    config = FitConfig(gauss_term=gauss_term, train=TrainConfig(threads=2, progress=False))  # type: ignore[arg-type]
    fit = fit_detector(normal, spec, config)
    return fit.detector.save(out_dir, fit.metadata)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        models = {term: train(Path(tmp) / term, term) for term in ("on", "off")}
        for term, path in models.items():
            view = Detector.load(path).scorer.input_neighbours
            assert view is not None and (view.gauss is not None) == (term == "on")
            extra = f", {len(view.gauss.points)} rank-Gauss points" if view.gauss is not None else ""
            print(f"gauss_term={term}: {len(view.points)} input points x {view.n_features} features{extra}")
        values = make_events(args.events)
        rates: dict[str, list[float]] = {"on": [], "off": []}
        for _ in range(args.rounds):
            for term in ("off", "on"):
                rates[term] += pipeline_rates(models[term], values, passes=3)
        on, off = (float(np.median(rates[t])) for t in ("on", "off"))
        print(f"pipeline without the term: median {off:,.0f} events/s; with it: {on:,.0f}; ratio {on / off:.2f}")


if __name__ == "__main__":
    main()
