"""``vidrec data`` subcommands for video: ``synthetic-actions`` (generate the synthetic set) and ``check-videos``
(a verdict per listed video, quick or from a full decode, a summary table, a TSV report and the quarantine list)."""

from __future__ import annotations

import argparse
import functools
import time
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from datamodules.video.decoding.check import VideoCheck

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
        help="check every video of a UCF101/HMDB51/Kinetics/class-folder tree or a folder: a verdict per file",
        description=(
            "Verdict per file: ok, repaired_index (all frames decode; timestamps or frame count wrong, the frame "
            "index addresses them), damaged_readable (share of bad frames), unreadable. Quick mode reads the "
            "header and the first and last frames; --full decodes every frame. Exit status 1 when any file is "
            "unreadable, else 0."
        ),
    )
    check.add_argument("layout", choices=["ucf101", "hmdb51", "kinetics", "class-folders", "folder"])
    check.add_argument("--root", type=Path, required=True, help="data root")
    check.add_argument("--annotation-dir", type=Path, default=None, help="annotation folder (layout default)")
    check.add_argument("--fold", type=int, default=1, help="official split (UCF101, HMDB51)")
    check.add_argument("--split", choices=["train", "val", "test"], default="train")
    check.add_argument("--quarantine", type=Path, default=None, help="TSV receiving unreadable files (path, reason)")
    check.add_argument(
        "--quarantine-damaged",
        action="store_true",
        help="also list damaged_readable files in the quarantine TSV (training then skips them)",
    )
    check.add_argument("--report", type=Path, default=None, help="TSV with a row per file (verdict, bad share, ...)")
    check.add_argument("--full", action="store_true", help="decode every frame (finds damage in the middle)")
    check.add_argument("--backend", choices=["decord", "pyav", "torchcodec"], default="pyav")
    check.add_argument("--timeout", type=float, default=20.0, help="seconds allowed per file")
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


_VIDEO_SUFFIXES = (".avi", ".mp4", ".m4v", ".mov", ".mkv", ".webm", ".mpg", ".mpeg", ".wmv", ".flv", ".3gp")


def _listed_videos(args: argparse.Namespace) -> tuple[list[Path], int]:
    """The files the layout lists under ``args.root`` and how many it lists that are absent."""
    from datamodules.video.layouts import Split, parse_class_folders, parse_hmdb51, parse_kinetics, parse_ucf101

    if args.layout == "folder":
        files = sorted(p for p in args.root.rglob("*") if p.is_file() and p.suffix.lower() in _VIDEO_SUFFIXES)
        return files, 0
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
    return [Path(p) for p, _ in index.items], index.missing


def _check_videos(args: argparse.Namespace) -> int:
    from datamodules.video.decoding import DecoderBackend, DecodeSettings, RobustVideoReader
    from datamodules.video.decoding.check import Verdict, check_video, write_report
    from datamodules.video.decoding.timeouts import DecodeThread

    files, missing = _listed_videos(args)
    reader = RobustVideoReader(DecodeSettings(DecoderBackend(args.backend), timeout_s=args.timeout), args.quarantine)
    start = time.perf_counter()
    checks = []
    thread = DecodeThread()

    def check_one(path: Path) -> VideoCheck:
        return check_video(path, reader, full=args.full)

    for path in files:
        try:
            check = thread.run(functools.partial(check_one, path), args.timeout)
        except TimeoutError as error:
            thread = DecodeThread()  # the stuck one is abandoned
            reader._give_up(str(path), f"timeout: {error}")
            check = _timed_out(path, str(error))
        if args.quarantine_damaged and check.verdict is Verdict.DAMAGED_READABLE:
            reader.quarantine.add(path, f"damaged: {check.bad_share:.1%} of frames bad ({check.detail})")
        checks.append(check)
    seconds = time.perf_counter() - start
    print(f"{'verdict':<18}{'files':>7}  bad frames (mean share)")
    for verdict in Verdict:
        chosen = [c for c in checks if c.verdict is verdict]
        share = sum(c.bad_share for c in chosen) / len(chosen) if chosen else 0.0
        print(f"{verdict.value:<18}{len(chosen):>7}  {share:.1%}" if chosen else f"{verdict.value:<18}{0:>7}")
    mode = "full decode" if args.full else "quick"
    print(
        f"{len(files)} files ({missing} listed but absent) checked in {seconds:.2f} s "
        f"({len(files) / max(seconds, 1e-9):.1f} files/s, {mode})"
    )
    if args.report is not None:
        print(f"report: {write_report(args.report, checks)}")
    if args.quarantine is not None:
        print(f"quarantine: {args.quarantine} ({len(reader.quarantine.entries)} files)")
    return 1 if any(c.verdict is Verdict.UNREADABLE for c in checks) else 0


def _timed_out(path: Path, reason: str) -> VideoCheck:
    """The verdict of a file whose check ran past the time bound."""
    from datamodules.video.decoding.check import Verdict, VideoCheck

    return VideoCheck(str(path), Verdict.UNREADABLE, 0, 0, 0, "", f"timeout: {reason}")
