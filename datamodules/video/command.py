"""``vidrec data`` subcommands for video: ``synthetic-actions`` (generate the synthetic set) and ``check-videos``
(decode every listed video once and write the quarantine list before a long run)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

__all__ = ["add_parser"]


def add_parser(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Register the video data subcommands on an argparse subparsers object (``vidrec data ...``)."""
    synthetic = subparsers.add_parser(
        "synthetic-actions",
        help="write a synthetic action video set (moving/growing/rotating shapes) in the UCF101 layout",
        description="Write a synthetic action video set in the UCF101 layout (split 1), deterministic from --seed.",
    )
    synthetic.add_argument("--out", type=Path, required=True, help="output folder")
    synthetic.add_argument("--classes", type=int, default=8, help="number of classes (1-8)")
    synthetic.add_argument(
        "--videos-per-class",
        type=int,
        default=100,
        help="videos per class, every fourth is test (100: the set the config is tuned on)",
    )
    synthetic.add_argument("--frames", type=int, default=32, help="frames per video")
    synthetic.add_argument("--size", type=int, default=64, help="frame height and width (even)")
    synthetic.add_argument("--fps", type=int, default=25, help="frame rate")
    synthetic.add_argument("--noise", type=float, default=12.0, help="pixel noise standard deviation (0-255)")
    synthetic.add_argument("--seed", type=int, default=0, help="generation seed")
    synthetic.add_argument("--workers", type=int, default=1, help="parallel writer processes")
    synthetic.set_defaults(func=_synthetic_actions)

    check = subparsers.add_parser(
        "check-videos",
        help="decode one clip of every video of a UCF101/HMDB51/Kinetics/class-folder tree; write the quarantine list",
    )
    check.add_argument("layout", choices=["ucf101", "hmdb51", "kinetics", "class-folders"])
    check.add_argument("--root", type=Path, required=True, help="data root")
    check.add_argument("--annotation-dir", type=Path, default=None, help="annotation folder (layout default)")
    check.add_argument("--fold", type=int, default=1, help="official split (UCF101, HMDB51)")
    check.add_argument("--split", choices=["train", "val", "test"], default="train")
    check.add_argument("--quarantine", type=Path, required=True, help="TSV receiving unreadable files")
    check.add_argument("--backend", choices=["decord", "pyav", "torchcodec"], default="pyav")
    check.add_argument("--timeout", type=float, default=20.0, help="seconds allowed per read")
    check.set_defaults(func=_check_videos)


def _synthetic_actions(args: argparse.Namespace) -> int:
    from datamodules.video.synthetic import SyntheticSettings, generate_synthetic_actions

    settings = SyntheticSettings(
        num_classes=args.classes,
        videos_per_class=args.videos_per_class,
        frames=args.frames,
        size=args.size,
        fps=args.fps,
        noise=args.noise,
        seed=args.seed,
        workers=args.workers,
    )
    summary = generate_synthetic_actions(args.out, settings)
    print(
        f"wrote {summary.train_videos} train + {summary.test_videos} test videos to {summary.root} "
        f"(split lists in {summary.annotation_dir}) in {summary.seconds:.1f} s"
    )
    return 0


def _check_videos(args: argparse.Namespace) -> int:
    from datamodules.video.dataset import ClipTiming, clip_frame_indices
    from datamodules.video.decoding import DecoderBackend, DecodeSettings, RobustVideoReader
    from datamodules.video.layouts import Split, parse_class_folders, parse_hmdb51, parse_kinetics, parse_ucf101

    split = Split(args.split)
    if args.layout == "ucf101":
        index = parse_ucf101(args.root, args.annotation_dir or args.root / "ucfTrainTestlist", split, args.fold)
    elif args.layout == "hmdb51":
        annotations = args.annotation_dir or args.root / "testTrainMulti_7030_splits"
        index = parse_hmdb51(args.root, annotations, split, args.fold)
    elif args.layout == "kinetics":
        index = parse_kinetics(args.root, args.annotation_dir or args.root / "annotations", split)
    else:
        index = parse_class_folders(args.root, split)
    reader = RobustVideoReader(DecodeSettings(DecoderBackend(args.backend), timeout_s=args.timeout), args.quarantine)
    timing = ClipTiming(frames_per_clip=2)

    def last_two(num_frames: int, fps: float) -> list[int]:  # the end of the video: where lying headers fail
        return clip_frame_indices(max(num_frames - 2, 0), timing, num_frames, fps)

    for path, _ in index.items:
        reader.read(path, last_two)
    bad = len(reader.quarantine.entries)
    print(
        f"{len(index.items) - bad}/{len(index.items)} readable, {index.missing} listed but absent; "
        f"{bad} quarantined in {args.quarantine}",
        file=sys.stdout,
    )
    return 0 if bad == 0 else 1
