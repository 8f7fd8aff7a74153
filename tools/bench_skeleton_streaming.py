"""Streaming cost and exactness of the skeleton ensemble (Xu & Wang 2018) streamed as one fused model.

For the demo-size ensemble (``configs/skeleton/synthetic_ensemble.yaml``: width 32, kernel 3, 64-frame windows,
150 channels = 2 bodies x 25 joints x 3 coordinates) or the paper's (``--paper``: width 64, kernel 8, 300 frames),
with non-trivial BatchNorm statistics, prints in CPU milliseconds per frame (``time.process_time``, one stream):

* the fused ensemble on the compiled engine (each subnet on its own compiled step where it lowers, fused at every
  hop), and each subnet streamed alone;
* the offline alternative: the whole ensemble re-run on the window at every hop;
* the spatial stream of the two-stream subnet, which sees the whole window (frames as channels) and is recomputed at
  every hop: its cost per hop, and its share of the fused streaming cost;

and the largest ``|streamed - offline|`` of the fused logits over the windows of ``--frames`` random frames. The
modules the compiled engine runs eagerly are listed (``describe()``'s decisions).

Usage: ``OMP_NUM_THREADS=1 python tools/bench_skeleton_streaming.py [--hop 4] [--frames 512] [--paper]``
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from vidrec.models import build_model  # noqa: E402
from vidrec.streaming import to_streaming  # noqa: E402


def _cpu_ms(fn, repeats: int) -> float:  # type: ignore[no-untyped-def]
    fn()
    start = time.process_time()
    for _ in range(repeats):
        fn()
    return 1e3 * (time.process_time() - start) / repeats


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--hop", type=int, default=4)
    parser.add_argument("--frames", type=int, default=512)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--paper", action="store_true", help="the paper's network: width 64, kernel 8, 300 frames")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    width, kernel, window = (64, 8, 300) if args.paper else (32, 3, 64)
    model = build_model(
        "skeleton_ensemble", in_channels=150, num_classes=60, window=window, width=width, kernel_size=kernel
    ).eval()
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm1d):
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 1.5)
    frames = max(args.frames, window + 8 * args.hop)
    x = torch.randn(1, 150, frames)
    print(f"ensemble width {width}, kernel {kernel}, window {window}, hop {args.hop}, {frames} frames, one stream")

    rows: dict[str, float] = {}
    for name, net in {"ensemble (fused)": model, **dict(model.subnets)}.items():
        rt = to_streaming(net, window, args.hop, in_channels=150)
        start = time.process_time()
        logits, ready = rt.run(x)
        rows[name] = 1e3 * (time.process_time() - start) / frames
        ends = [(k + 1) * args.hop for k in range(frames // args.hop) if ready[0, k]]
        with torch.no_grad():
            ref = torch.stack([net(x[:, :, e - window : e])[0] for e in ends])
        diff = float((logits[0, ready[0]] - ref).abs().max())
        print(f"  {name:18s} streamed {rows[name]:.3f} ms/frame   max |streamed - offline| {diff:.2e}")
        if name == "ensemble (fused)":
            for d in rt.describe().decisions:
                print(f"      {d}")

    last = x[:, :, -window:]
    with torch.inference_mode():
        offline_hop = _cpu_ms(lambda: model(last), 10)
        spatial_hop = _cpu_ms(lambda: model.subnets["two_stream"].spatial(last), 10)
    fused = rows["ensemble (fused)"]
    print(f"  offline ensemble re-run per hop:  {offline_hop / args.hop:.3f} ms/frame ({offline_hop:.2f} ms a hop)")
    print(
        f"  spatial stream recomputed per hop (eager model, not BN-folded): {spatial_hop:.2f} ms a hop = "
        f"{spatial_hop / args.hop:.3f} ms/frame, {spatial_hop / args.hop / fused:.0%} of the fused streaming cost"
    )
    print(f"  fused streaming vs offline re-run: {offline_hop / args.hop / fused:.2f}x less CPU per frame")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
