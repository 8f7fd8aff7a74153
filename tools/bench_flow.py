"""Optical-flow speed and accuracy at 320x240: frames/s per core and endpoint error of each extractor setting.

Pairs with known motion: a random texture (a sum of plane waves, evaluated exactly, no resampling) under a known
similarity motion (rotation, scale and translation: 2.5 to ~10 pixels a frame over the frame), so the true flow of
every pixel is known. Endpoint error (EPE) = mean |estimate - truth| in pixels, 16 pixels from the borders; beside
it, the EPE against full TV-L1 (OpenCV's default parameters, the papers' extractor) on the same pairs: the accuracy
cost of each faster setting relative to the reference.

Then whole videos, one core: vidrec's extraction (``extract_video_flow``: decode with vidrec's reader, grayscale,
flow, quantise, HDF5) against mmaction2's ``tools/misc/flow_extraction.py`` loop (``cv2.VideoCapture``, the same
OpenCV call, ``cv2.imwrite`` of one JPEG per component and frame), same estimator, same video::

    OMP_NUM_THREADS=1 nice -n 10 python tools/bench_flow.py [--pairs 3] [--video-frames 40] [--repeats 3]

``--raft`` times torchvision's RAFT instead (``raft_small``, ``--raft-large`` too; 12 and 6 updates) on one CPU thread
and, where a GPU is present, on it; without ``--raft-weights`` the networks are randomly initialised (same cost)::

    OMP_NUM_THREADS=1 nice -n 10 python tools/bench_flow.py --raft --pairs 3 [--raft-large]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from functools import partial
from pathlib import Path

import numpy as np

from datamodules.flow.extraction import extract_video_flow
from datamodules.flow.methods import DISPreset, FlowMethod, FlowSettings, TVL1Params, build_estimator
from datamodules.flow.synthetic_motion import WaveTexture
from datamodules.video.synthetic import write_video

H, W = 240, 320


def known_motion_pair(seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Two uint8 frames (H, W) and the true flow (H, W, 2) from the first to the second."""
    rng = np.random.default_rng(seed)
    texture = WaveTexture(rng, waves=64, wavelengths=(6.0, 40.0))
    angle, scale = np.deg2rad(rng.uniform(-2, 2)), rng.uniform(0.98, 1.02)
    t = rng.uniform(-3, 3, size=2)
    a = scale * np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    c = np.array([W / 2, H / 2])
    yy, xx = np.mgrid[0:H, 0:W].astype(np.float64)
    p = np.stack([xx, yy], axis=-1) - c  # (H, W, 2) relative to the centre
    truth = p @ a.T + t - p  # p -> A p + t
    back = (p - t) @ np.linalg.inv(a).T + c  # where each pixel of frame 2 came from
    first = np.clip(texture(xx, yy), 0, 255).astype(np.uint8)
    second = np.clip(texture(back[..., 0], back[..., 1]), 0, 255).astype(np.uint8)
    return first, second, truth.astype(np.float32)


SETTINGS: dict[str, FlowSettings] = {
    "tvl1 opencv default": FlowSettings(method=FlowMethod.TVL1, tvl1=TVL1Params()),
    "tvl1 tuned (vidrec fast)": FlowSettings(method=FlowMethod.TVL1, tvl1=TVL1Params.fast()),
    "tvl1 tuned, computed at 1/2": FlowSettings(method=FlowMethod.TVL1, tvl1=TVL1Params.fast(), compute_scale=0.5),
    "tvl1 3 scales, 2 warps, 1x10 it": FlowSettings(
        method=FlowMethod.TVL1,
        tvl1=TVL1Params(scales=3, scale_step=0.5, warps=2, inner_iterations=10, outer_iterations=1, epsilon=0.05),
    ),
    "tvl1 3 scales, 1 warp, 1x5 it": FlowSettings(
        method=FlowMethod.TVL1,
        tvl1=TVL1Params(scales=3, scale_step=0.5, warps=1, inner_iterations=5, outer_iterations=1, epsilon=0.1),
    ),
    "dis ultrafast": FlowSettings(method=FlowMethod.DIS, dis_preset=DISPreset.ULTRAFAST),
    "dis fast": FlowSettings(method=FlowMethod.DIS, dis_preset=DISPreset.FAST),
    "dis medium (vidrec default)": FlowSettings(method=FlowMethod.DIS, dis_preset=DISPreset.MEDIUM),
    "farneback": FlowSettings(method=FlowMethod.FARNEBACK),
}


def pairs_table(pairs: int) -> None:
    """Per setting: time per pair, and EPE against the true flow and against full TV-L1 (OpenCV's defaults)."""
    import cv2

    cv2.setNumThreads(1)
    data = [known_motion_pair(seed) for seed in range(pairs)]
    reference_estimator = build_estimator(SETTINGS["tvl1 opencv default"])
    reference = [reference_estimator(first, second) for first, second, _ in data]  # full TV-L1, every pair

    def epe(a: np.ndarray, b: np.ndarray) -> float:
        return float(np.linalg.norm(a - b, axis=-1)[16:-16, 16:-16].mean())

    print(f"{'setting':34s} {'ms/pair':>9s} {'frames/s/core':>14s} {'EPE px':>8s} {'vs full TV-L1 px':>17s}")
    for name, settings in SETTINGS.items():
        estimator = build_estimator(settings)
        estimator(data[0][0][:64, :64], data[0][1][:64, :64])  # warm up
        times, errors, to_full = [], [], []
        for k, (first, second, truth) in enumerate(data[: 1 if name == "tvl1 opencv default" else pairs]):
            start = time.perf_counter()
            flow = estimator(first, second)
            times.append(time.perf_counter() - start)
            errors.append(epe(flow, truth))
            to_full.append(epe(flow, reference[k]))
        ms = 1000 * float(np.median(times))
        print(f"{name:34s} {ms:9.1f} {1000 / ms:14.1f} {np.mean(errors):8.3f} {np.mean(to_full):17.3f}")


def raft_table(pairs: int, large: bool, weights: Path | None) -> None:
    """RAFT's time per 320x240 pair on one CPU thread (and on the GPU where one is present).

    Without ``weights`` the networks are randomly initialised: the time is that of the trained network (same
    layers, same number of updates), the field is not, so no endpoint error is printed.
    """
    import torch

    torch.set_num_threads(1)
    data = [known_motion_pair(seed) for seed in range(pairs)]
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    with tempfile.TemporaryDirectory() as tmp:
        for small in [True] + ([False] if large else []):
            name = "raft_small" if small else "raft_large"
            file = weights
            if file is None:
                from torchvision.models.optical_flow import raft_large, raft_small

                torch.manual_seed(0)
                file = Path(tmp) / f"{name}.pth"
                torch.save((raft_small if small else raft_large)(weights=None).state_dict(), file)
            for device in devices:
                for updates in (12, 6):
                    settings = FlowSettings(
                        method=FlowMethod.RAFT, raft_weights=str(file), raft_small=small, raft_updates=updates,
                        device=device,
                    )  # fmt: skip
                    estimator = build_estimator(settings)
                    estimator(data[0][0], data[0][1])  # warm up (allocator, cuDNN)
                    times = []
                    for first, second, _ in data:
                        if device == "cuda":
                            torch.cuda.synchronize()
                        start = time.perf_counter()
                        estimator(first, second)  # returns a NumPy field: the GPU work is done
                        times.append(time.perf_counter() - start)
                    ms = 1000 * float(np.median(times))
                    where = "1 CPU thread" if device == "cpu" else "GPU"
                    print(f"{name}, {updates:2d} updates, {where:12s} {ms:9.1f} ms/pair {1000 / ms:8.2f} frames/s")


def mmaction2_loop(video: Path, out: Path, settings: FlowSettings, bound: float = 20.0) -> int:
    """mmaction2's tools/misc/flow_extraction.py: read every frame, one OpenCV call per pair, two JPEGs per field."""
    import cv2

    capture = cv2.VideoCapture(str(video))
    frames = []
    ok, frame = capture.read()
    while ok:
        frames.append(frame)
        ok, frame = capture.read()
    gray = [cv2.cvtColor(f, cv2.COLOR_BGR2GRAY) for f in frames]
    estimator = build_estimator(settings)  # the same OpenCV object and call as vidrec's
    out.mkdir(parents=True, exist_ok=True)
    for i in range(len(gray) - 1):
        flow = estimator(gray[i], gray[i + 1])
        for c, axis in enumerate("xy"):
            img = np.clip(np.round((flow[..., c] + bound) * (255.0 / (2 * bound))), 0, 255).astype(np.uint8)
            cv2.imwrite(str(out / f"{axis}_{i + 1:05d}.jpg"), img)
    return len(gray) - 1


def video_table(frames: int, repeats: int = 3) -> None:
    import cv2

    cv2.setNumThreads(1)
    with tempfile.TemporaryDirectory() as tmp:
        rng = np.random.default_rng(0)
        texture = WaveTexture(rng, waves=64, wavelengths=(6.0, 40.0))
        yy, xx = np.mgrid[0:H, 0:W].astype(np.float64)
        grey = np.stack([np.clip(texture(xx - 2.0 * t, yy + 1.0 * t), 0, 255) for t in range(frames)])
        video = write_video(Path(tmp) / "v.mp4", np.repeat(grey.astype(np.uint8)[..., None], 3, axis=-1))
        print(
            f"\nwhole video, {frames} frames 320x240 h264, one core: fields per wall second and per CPU second "
            "(process time, every thread: what a core of a busy machine pays), ratio vidrec / mmaction2 loop"
        )
        for name in ("dis medium (vidrec default)", "tvl1 tuned (vidrec fast)", "farneback"):
            settings = SETTINGS[name]
            ours = FlowSettings(**{**settings.__dict__, "short_side": None})  # native 320x240, as the loop
            rates = {"vidrec": [0.0, 0.0], "loop": [0.0, 0.0]}  # best (wall, cpu) fields/s
            for repeat in range(repeats):  # interleaved, best of `repeats`: the machine's load varies by the second
                runs = {
                    "vidrec": partial(extract_video_flow, video, Path(tmp) / f"{name}{repeat}.h5", ours),
                    "loop": partial(mmaction2_loop, video, Path(tmp) / f"{name}{repeat}", settings),
                }
                for side, run in runs.items():
                    wall, cpu = time.perf_counter(), time.process_time()
                    fields = run()
                    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
                    best = rates[side]
                    best[0], best[1] = max(best[0], fields / wall), max(best[1], fields / max(cpu, 1e-9))
            (vw, vc), (lw, lc) = rates["vidrec"], rates["loop"]
            print(
                f"{name:30s} wall: vidrec {vw:6.1f} loop {lw:6.1f} ({vw / lw:.2f}x)   "
                f"cpu: vidrec {vc:6.1f} loop {lc:6.1f} ({vc / lc:.2f}x)"
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pairs", type=int, default=3, help="known-motion pairs per setting")
    parser.add_argument("--video-frames", type=int, default=40, help="frames of the whole-video comparison")
    parser.add_argument("--repeats", type=int, default=3, help="whole-video runs per side (best counts)")
    parser.add_argument("--skip-pairs", action="store_true", help="only the whole-video comparison")
    parser.add_argument("--raft", action="store_true", help="only RAFT's time per pair (torchvision)")
    parser.add_argument("--raft-large", action="store_true", help="--raft: raft_large too")
    parser.add_argument("--raft-weights", type=Path, default=None, help="--raft: a local state_dict (else random)")
    args = parser.parse_args()
    if args.raft:
        raft_table(args.pairs, args.raft_large, args.raft_weights)
        return
    if not args.skip_pairs:
        pairs_table(args.pairs)
    video_table(args.video_frames, args.repeats)


if __name__ == "__main__":
    main()
