"""CPU throughput of vidrec's video models against torchvision's, and streaming cost per frame.

Measures, in one run, with ``torch.set_num_threads(threads)`` and models timed round-robin (so machine load hits
all of them alike), on ``16 x 112 x 112`` clips and the same input tensor for every model:

* forward clips/s (eval, no grad) at batch 1 and ``--batch``;
* training-step clips/s at ``--train-batch`` (train mode: forward, cross-entropy, backward, SGD momentum step),
  printed as its own table with the ratio to torchvision's ``r2plus1d_18``;

for our ``r2plus1d_18`` (SAME, loaded with torchvision's weights, and VALID), ``p3d63`` (VALID), torchvision's
``r2plus1d_18`` and ``r3d_18``, plus (forward only) our SAME model with BatchNorm folded into its convolutions as
deployed inference runs it (``vidrec.streaming.fold_batchnorm``); the max abs difference between our SAME models and
torchvision's; and, for the VALID
models, the time of one streaming step of one frame against recomputing a 16-frame window at batch 1.
All figures are medians over ``--repeats`` rounds (training: ``--train-repeats``) after one warm-up call each.

Usage: ``python tools/bench_video_models.py [--threads 2] [--repeats 5] [--batch 2] [--train-batch 2]
[--train-repeats 3] [--skip-train]``
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch
import torchvision
from torch import nn

from vidrec.layers.conv2plus1d import TemporalPadding
from vidrec.models._base import StreamableClassifier
from vidrec.models.p3d import p3d63
from vidrec.models.r2plus1d import load_torchvision_r2plus1d, r2plus1d_18
from vidrec.streaming.optimize import fold_batchnorm

FRAMES, SIZE = 16, 112


def _forward(model: nn.Module, x: torch.Tensor) -> Callable[[], None]:
    def run() -> None:
        with torch.no_grad():
            model(x)

    return run


def _train_step(model: nn.Module, x: torch.Tensor) -> Callable[[], None]:
    opt = torch.optim.SGD(model.parameters(), lr=1e-4, momentum=0.9)
    target = torch.zeros(x.shape[0], dtype=torch.long)

    def run() -> None:
        opt.zero_grad(set_to_none=True)
        nn.functional.cross_entropy(model(x), target).backward()
        opt.step()

    return run


def _round_robin(jobs: dict[str, Callable[[], None]], repeats: int) -> dict[str, float]:
    """Median seconds per call of each job; one warm-up call each, then ``repeats`` interleaved rounds."""
    for job in jobs.values():
        job()
    times: dict[str, list[float]] = {k: [] for k in jobs}
    for _ in range(repeats):
        for name, job in jobs.items():
            t0 = time.perf_counter()
            job()
            times[name].append(time.perf_counter() - t0)
    return {k: statistics.median(v) for k, v in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--batch", type=int, default=2, help="forward: the small batch besides batch 1")
    parser.add_argument("--train-batch", type=int, default=2, help="training step: clips per step (>= 2 for BN)")
    parser.add_argument("--train-repeats", type=int, default=3, help="training step: timed rounds (median)")
    parser.add_argument("--skip-train", action="store_true", help="skip the (slow) training-step measurement")
    args = parser.parse_args()
    if min(args.batch, args.train_batch, args.repeats, args.train_repeats) < 1:
        raise ValueError("--batch, --train-batch, --repeats and --train-repeats must be >= 1")
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    tv_r2p = torchvision.models.video.r2plus1d_18()
    ours_same = load_torchvision_r2plus1d(r2plus1d_18(temporal_padding=TemporalPadding.SAME), tv_r2p.state_dict())
    models: dict[str, nn.Module] = {
        "ours r2plus1d_18 SAME": ours_same,
        "ours r2plus1d_18 VALID": r2plus1d_18(),
        "ours p3d63 VALID": p3d63(),
        "torchvision r2plus1d_18": tv_r2p,
        "torchvision r3d_18": torchvision.models.video.r3d_18(),
    }
    x1 = torch.randn(1, 3, FRAMES, SIZE, SIZE)
    for m in models.values():
        m.eval()
    # inference only: BatchNorm folded into the convolutions (vidrec.streaming.fold_batchnorm), equal to rounding
    folded_name = "ours SAME, BN folded"
    inference = {**models, folded_name: fold_batchnorm(ours_same)}
    with torch.no_grad():
        diff = (ours_same(x1) - tv_r2p(x1)).abs().max().item()
        diff_folded = (inference[folded_name](x1) - tv_r2p(x1)).abs().max().item()
    print(f"threads={args.threads} repeats={args.repeats} input 3x{FRAMES}x{SIZE}x{SIZE}; medians, round-robin")
    print(f"max |ours r2plus1d_18 SAME - torchvision r2plus1d_18| (eval, same weights): {diff:.2e}")
    print(f"max |{folded_name} - torchvision r2plus1d_18|: {diff_folded:.2e}")

    forward: dict[tuple[str, int], float] = {}  # (model, batch) -> clips/s
    fwd_batches = sorted({1, args.batch})
    for batch in fwd_batches:
        x = torch.randn(batch, 3, FRAMES, SIZE, SIZE)  # (B, C, T, H, W), the same tensor for every model
        for k, s in _round_robin({k: _forward(m, x) for k, m in inference.items()}, args.repeats).items():
            forward[(k, batch)] = batch / s
    print("\nforward, eval, no grad (clips/s)")
    print(f"{'model':26s}" + "".join(f"{f'batch {b}':>11s}" for b in fwd_batches))
    for k in inference:
        print(f"{k:26s}" + "".join(f"{forward[(k, b)]:11.2f}" for b in fwd_batches))
    base = forward[("torchvision r2plus1d_18", 1)]
    for k in ("ours r2plus1d_18 SAME", folded_name, "ours r2plus1d_18 VALID"):
        print(f"forward speed-up at batch 1, {k} vs torchvision r2plus1d_18: {forward[(k, 1)] / base:.2f}x")

    if not args.skip_train:
        batch = args.train_batch
        x = torch.randn(batch, 3, FRAMES, SIZE, SIZE)  # (B, C, T, H, W), the same tensor for every model
        for m in models.values():
            m.train()
        steps = _round_robin({k: _train_step(m, x) for k, m in models.items()}, args.train_repeats)
        for m in models.values():
            m.eval()
        base_s = steps["torchvision r2plus1d_18"]
        print(f"\ntraining step at batch {batch}: forward + cross-entropy + backward + SGD step, train mode")
        print(f"{'model':26s}{'clips/s':>11s}{'s/step':>11s}{'vs tv r2p':>11s}")
        for k, s in steps.items():
            print(f"{k:26s}{batch / s:11.2f}{s:11.3f}{base_s / s:10.2f}x")

    print("\nstreaming one frame vs recomputing a 16-frame window (batch 1, eval)")
    for name in ("ours r2plus1d_18 VALID", "ours p3d63 VALID"):
        model = models[name]
        if not isinstance(model, StreamableClassifier):
            raise TypeError(f"{name} is a {type(model).__name__}, expected a vidrec StreamableClassifier")
        features = model.features
        model.pool.positions = features.output_length(FRAMES)
        frame = torch.randn(1, 3, 1, SIZE, SIZE)
        with torch.no_grad():
            state = features.stream_state(frame)
            pool_state = model.pool.stream_state(features.stream_step(frame, state)[0])
        holder = {"state": state, "pool": pool_state}

        def step(model: StreamableClassifier = model, frame: torch.Tensor = frame, holder: dict = holder) -> None:
            with torch.no_grad():
                y, holder["state"] = model.features.stream_step(frame, holder["state"])
                pooled, holder["pool"] = model.pool.stream_step(y, holder["pool"])
                model.classifier(pooled)

        t = _round_robin({"stream": step, "window": _forward(model, x1)}, args.repeats * 3)
        print(
            f"{name:26s} stream step {t['stream'] * 1e3:7.1f} ms/frame, 16-frame window {t['window'] * 1e3:7.1f} ms: "
            f"streaming {t['window'] / t['stream']:.1f}x cheaper per new frame"
        )


if __name__ == "__main__":
    main()
