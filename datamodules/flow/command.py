"""``vidrec data`` subcommands for two-stream data: ``flow`` (optical-flow extraction of a video tree into
``vidrec.flow/1`` files) and ``synthetic-motion`` (the motion-only synthetic set)."""

from __future__ import annotations

import argparse
from pathlib import Path

__all__ = ["add_parser"]


def add_parser(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Register the flow data subcommands on an argparse subparsers object (``vidrec data ...``)."""
    flow = subparsers.add_parser(
        "flow",
        help="extract optical flow of every video under a folder into vidrec.flow/1 HDF5 files (resumable)",
        description=(
            "Extract the optical flow of every video under --videos into <out>/<relative path>.h5 (schema "
            "vidrec.flow/1: uint8 x/y with a fixed bound, 128 = no motion). Finished videos are verified and "
            "skipped, half-written ones redone; unreadable videos go to <out>/quarantine.tsv and the run goes on."
        ),
    )
    flow.add_argument("--videos", type=Path, required=True, help="video root (any depth; ids are relative paths)")
    flow.add_argument("--out", type=Path, required=True, help="flow root")
    flow.add_argument("--method", choices=["dis", "tvl1", "farneback", "raft"], default="dis", help="estimator")
    flow.add_argument(
        "--tvl1-preset", choices=["default", "fast"], default="fast", help="TV-L1: OpenCV's defaults or the tuned set"
    )
    flow.add_argument("--dis-preset", choices=["ultrafast", "fast", "medium"], default="medium")
    flow.add_argument("--short-side", type=int, default=256, help="resize frames to this short side (0: native)")
    flow.add_argument("--compute-scale", type=float, default=1.0, help="compute at this fraction of the size")
    flow.add_argument("--bound", type=float, default=20.0, help="quantisation bound in pixels (128 = no motion)")
    flow.add_argument(
        "--raft-weights", type=str, default=None, help="RAFT: local torchvision state_dict file (never downloaded)"
    )
    flow.add_argument("--raft-large", action="store_true", help="RAFT: raft_large instead of raft_small")
    flow.add_argument("--raft-updates", type=int, default=12, help="RAFT: recurrent flow updates")
    flow.add_argument("--device", default=None, help="RAFT: torch device (default: cuda if available, else cpu)")
    flow.add_argument("--workers", type=int, default=1, help="worker processes (one video each at a time)")
    flow.add_argument("--timeout", type=float, default=120.0, help="seconds allowed per decode of a chunk")
    flow.add_argument("--no-progress", action="store_true", help="no progress bar")
    flow.set_defaults(func=_flow)

    motion = subparsers.add_parser(
        "synthetic-motion",
        help="write the motion-only synthetic set (a textured disc translating or rotating) in the UCF101 layout",
    )
    motion.add_argument("--out", type=Path, required=True, help="output folder")
    motion.add_argument("--classes", type=int, default=6, help="number of classes (2-6)")
    motion.add_argument("--videos-per-class", type=int, default=24, help="videos per class, every fourth is test")
    motion.add_argument("--frames", type=int, default=24, help="frames per video")
    motion.add_argument("--size", type=int, default=64, help="frame height and width (even)")
    motion.add_argument("--seed", type=int, default=0, help="generation seed")
    motion.add_argument("--workers", type=int, default=1, help="parallel writer processes")
    motion.set_defaults(func=_motion)


def _flow(args: argparse.Namespace) -> int:
    from datamodules.flow.extraction import extract_flow
    from datamodules.flow.methods import FlowSettings, TVL1Params
    from datamodules.video.decoding import DecodeSettings

    settings = FlowSettings(
        method=args.method,
        short_side=args.short_side or None,
        compute_scale=args.compute_scale,
        bound=args.bound,
        tvl1=TVL1Params.fast() if args.tvl1_preset == "fast" else TVL1Params(),
        dis_preset=args.dis_preset,
        raft_weights=args.raft_weights,
        raft_small=not args.raft_large,
        raft_updates=args.raft_updates,
        device=args.device,
    )
    summary = extract_flow(
        args.videos,
        args.out,
        settings,
        workers=args.workers,
        decode=DecodeSettings(timeout_s=args.timeout),
        progress=not args.no_progress,
    )
    rate = summary.fields / summary.seconds if summary.seconds else 0.0
    print(
        f"flow: {summary.done} extracted, {summary.skipped} already done, {summary.failed} quarantined "
        f"({summary.quarantine_path}); {summary.fields} fields in {summary.seconds:.1f} s ({rate:.1f} frames/s)"
    )
    return 0 if summary.failed == 0 else 1


def _motion(args: argparse.Namespace) -> int:
    from datamodules.flow.synthetic_motion import MotionSettings, generate_motion_set

    settings = MotionSettings(
        num_classes=args.classes,
        videos_per_class=args.videos_per_class,
        frames=args.frames,
        size=args.size,
        seed=args.seed,
        workers=args.workers,
    )
    summary = generate_motion_set(args.out, settings)
    counts = f"{summary.train_videos} train + {summary.test_videos} test videos"
    print(f"wrote {counts} to {summary.root} in {summary.seconds:.1f} s")
    return 0
