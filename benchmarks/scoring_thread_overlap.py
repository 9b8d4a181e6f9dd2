"""Can a second thread hide the forward pass and distances behind decoding? (prints figures; docs/benchmarks.md)

Run: ``.venv/bin/python benchmarks/scoring_thread_overlap.py [--model DIR] [--batches 400]``

The forward pass and the distance products release the GIL inside torch and BLAS, so a worker
could score batch N on a second thread while its loop thread decodes batch N+1 (and does its Kafka
bookkeeping). This measures that design on the throughput benchmark's model and events (batch 500,
one torch and one BLAS thread, as the worker runs), in milliseconds per batch:

1. ``sequential``: decode + featurize a batch, then ``Detector.score_features`` on it;
2. ``pipelined, eager``: ``score_features`` of batch N on a second thread while the main thread
   decodes and featurizes batch N+1;
3. ``pipelined, traced encoder``: the same with the encoder traced by ``torch.jit.trace`` (one
   native call that holds no GIL while it runs; distances in numpy as today).

Each op of an eager forward pass and each numpy call takes the GIL back when it ends; while the
other thread runs Python, every such hand-back waits for the interpreter's switch interval.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
from threadpoolctl import threadpool_limits

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "benchmarks")]

from worker_throughput import make_events, train_model  # noqa: E402

from detector.model import Detector  # noqa: E402
from worker.typed_decode import TypedDecoder  # noqa: E402


def measure(model_dir: Path, n_batches: int, batch: int = 500) -> dict[str, float]:
    torch.set_num_threads(1)
    threadpool_limits(limits=1, user_api="blas")
    detector = Detector.load(model_dir)
    decoder = TypedDecoder(detector.spec)
    values = make_events(20 * batch)
    batches = [values[i : i + batch] for i in range(0, len(values), batch)]

    def prepare(i: int) -> np.ndarray:
        typed = decoder.decode_batch(batches[i % len(batches)])
        return detector.featurizer.transform_columns(typed.numeric, typed.categorical)

    encoder = detector.encoder.eval()
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # torch.jit is deprecated in torch 2.x: measured, not adopted
        traced = torch.jit.trace(encoder, torch.from_numpy(prepare(0)))

    def score_traced(features: np.ndarray) -> object:
        with torch.inference_mode():
            z = traced(torch.from_numpy(features)).numpy()
        return detector.scorer.score(z, features)

    def sequential(score: Callable[[np.ndarray], object]) -> float:
        start = time.perf_counter()
        for i in range(n_batches):
            score(prepare(i))
        return (time.perf_counter() - start) / n_batches * 1e3

    def pipelined(score: Callable[[np.ndarray], object]) -> float:
        with ThreadPoolExecutor(1) as pool:
            start = time.perf_counter()
            pending = pool.submit(score, prepare(0))
            for i in range(1, n_batches):
                features = prepare(i)  # overlaps the scoring of batch i - 1
                pending.result()
                pending = pool.submit(score, features)
            pending.result()
            return (time.perf_counter() - start) / n_batches * 1e3

    out: dict[str, list[float]] = {k: [] for k in ("sequential", "pipelined, eager", "pipelined, traced encoder")}
    out |= {"decode + featurize alone": [], "score_features alone": [], "traced score alone": []}
    for _ in range(3):  # alternated, so that a busy minute of the machine hits each alike
        out["decode + featurize alone"].append(sequential(lambda f: None))
        out["score_features alone"].append(sequential(detector.score_features) - out["decode + featurize alone"][-1])
        out["traced score alone"].append(sequential(score_traced) - out["decode + featurize alone"][-1])
        out["sequential"].append(sequential(detector.score_features))
        out["pipelined, eager"].append(pipelined(detector.score_features))
        out["pipelined, traced encoder"].append(pipelined(score_traced))
    return {k: float(np.median(v)) for k, v in out.items()}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", type=Path, default=None, help="model to measure (default: train one, ~15 s)")
    parser.add_argument("--batches", type=int, default=400)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        figures = measure(args.model or train_model(Path(tmp) / "model"), args.batches)
    base = figures["sequential"]
    print(f"batch 500, median of 3 alternated passes of {args.batches} batches, ms per batch:")
    for name, ms in figures.items():
        ratio = f"  ({base / ms:.2f}x the sequential rate)" if name.startswith(("sequential", "pipelined")) else ""
        print(f"  {name:28s} {ms:6.2f}{ratio}")


if __name__ == "__main__":
    main()
