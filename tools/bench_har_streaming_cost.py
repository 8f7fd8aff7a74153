"""Streaming cost of HAR models side by side: one runtime (``vidrec.streaming``), same hops and stream counts.

For each model (default: ``resnet1d_har`` on 128-sample windows, ``minirocket_har`` on 128 + 120 samples of context
``minirocket_har_pd``, per-dilation pooling on 128 samples, and its variants with level features and the
first-difference branch), prints the median step time of the default backend
(the compiled step where the model lowers; MiniRocket's convolutions and thresholds run through their own
``stream_step``) for ``--batches`` concurrent streams at each hop, the samples per second and the number of 50 Hz
streams one process serves, measured in one run so the ratio between models holds on a loaded machine. MiniRocket's
thresholds are left unfitted (zeros): the cost does not depend on them.

Usage: ``python tools/bench_har_streaming_cost.py [--threads 1] [--hops 1 16] [--batches 1 256]``
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from vidrec.models import build_model  # noqa: E402
from vidrec.streaming.runtime import StepBackend, StreamingClassifier  # noqa: E402

RATE = 50.0  # Hz of one stream
# name -> (registered model, its arguments, input samples = window + context)
MODELS: dict[str, tuple[str, dict[str, object], int]] = {
    "resnet1d_har": ("resnet1d_har", {}, 128),
    "minirocket_har": ("minirocket_har", {}, 248),
    "minirocket_har_pd": ("minirocket_har", {"pooling": "per_dilation"}, 128),
    # + 84 x 12 level features (configs/har/hapt_minirocket_lvl.yaml) and the first-difference branch
    "minirocket_har_pd_lvl": (
        "minirocket_har",
        {"pooling": "per_dilation", "level_combinations": 84, "level_thresholds": 12},
        128,
    ),
    "minirocket_har_pd_lvl_diff": (
        "minirocket_har",
        {"pooling": "per_dilation", "level_combinations": 84, "level_thresholds": 12, "difference": True},
        128,
    ),
}


def step_seconds(name: str, window: int, hop: int, batch: int, repeats: int) -> tuple[float, bool]:
    """Median seconds of one streaming step of ``batch`` streams; whether the compiled step is used."""
    registered, kwargs, _ = MODELS[name]
    model = build_model(registered, **kwargs).eval()
    rt = StreamingClassifier(model, window, hop, capacity=batch, backend=StepBackend.TORCH)
    chunk = torch.randn(batch, 6, hop)
    for _ in range(3):
        rt.step(chunk)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        rt.step(chunk)
        times.append(time.perf_counter() - start)
    return statistics.median(times), rt.compiled


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    parser.add_argument("--hops", type=int, nargs="+", default=[1, 16])
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 256])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=30)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"threads={torch.get_num_threads()}  (streams = samples/s / {RATE:.0f} Hz, one process)")
    head = f"{'model':<27} {'input':>6} {'hop':>4} {'batch':>6} {'step ms':>9} {'samples/s':>11} {'streams':>8}"
    print(head + "  compiled")
    for hop in args.hops:
        for batch in args.batches:
            for name in args.models:
                seconds, compiled = step_seconds(name, MODELS[name][2], hop, batch, args.repeats)
                samples = batch * hop / seconds
                print(
                    f"{name:<27} {MODELS[name][2]:>6} {hop:>4} {batch:>6} {seconds * 1e3:>9.3f} {samples:>11.0f}"
                    f" {samples / RATE:>8.0f}  {compiled}",
                    flush=True,
                )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
