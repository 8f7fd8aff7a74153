"""``vidrec extract-features`` and the feature-file ``vidrec data`` subcommands (``ordered-events``, ``join-features``).

::

    vidrec extract-features ucf101 --root data/UCF-101 --out feats/rgb.h5 --checkpoint runs/.../last.ckpt
    vidrec extract-features ucf101 --root data/UCF-101 --out feats/rgb.h5 --backbone resnet101 --weights r101.pth
    vidrec data join-features feats/rgb.h5 feats/flow.h5 --out feats/two_stream.h5
    vidrec data ordered-events --out data/ordered_events.h5 --events 3
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

__all__ = ["add_parser", "add_extract_parser", "add_data_parsers"]

_LAYOUTS = ["ucf101", "hmdb51", "kinetics", "class-folders"]


def add_parser(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Register ``vidrec extract-features`` on the ``vidrec`` subparsers."""
    help_text = "per-frame features of every video of a data set"
    add_extract_parser(subparsers.add_parser("extract-features", help=help_text))


def add_extract_parser(parser: argparse.ArgumentParser) -> None:
    """Fill the ``vidrec extract-features`` parser."""
    parser.add_argument("layout", choices=_LAYOUTS, help="annotation layout of the data set")
    parser.add_argument("--root", type=Path, required=True, help="data root")
    parser.add_argument("--annotation-dir", type=Path, default=None, help="annotation folder (layout default)")
    parser.add_argument("--fold", type=int, default=1, help="official split (UCF101, HMDB51)")
    parser.add_argument("--out", type=Path, required=True, help="feature file (HDF5) to write or resume")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--checkpoint", type=Path, help="a vidrec video checkpoint (vidrec fit)")
    source.add_argument("--backbone", help="a torchvision model name (resnet101, r2plus1d_18, ...)")
    parser.add_argument("--weights", type=Path, default=None, help="local state_dict of --backbone (never downloaded)")
    parser.add_argument(
        "--flow-root",
        type=Path,
        default=None,
        help="with --checkpoint of a temporal (flow) stream: the vidrec.flow/1 files of `vidrec data flow`; the "
        "stream reads the stack of fields centred on each sampled frame (join with the RGB file: join-features)",
    )
    parser.add_argument(
        "--random-init", action="store_true", help="allow --backbone without --weights (timing and tests only)"
    )
    sampling = parser.add_mutually_exclusive_group()
    sampling.add_argument("--frames", type=int, default=25, help="evenly spaced frames per video (default 25)")
    sampling.add_argument("--every-frame", action="store_true", help="a feature for every frame")
    parser.add_argument(
        "--frame-step",
        type=int,
        default=1,
        help="with --every-frame: a feature for every N-th frame (0, N, 2N, ...: what a live stream reproduces)",
    )
    parser.add_argument("--batch-size", type=int, default=32, help="clips per forward pass")
    parser.add_argument("--short-side", type=int, default=128, help="resize frames to this short side")
    parser.add_argument("--crop-size", type=int, default=112, help="centre crop")
    parser.add_argument("--mean", type=float, nargs=3, default=None, help="RGB mean in [0, 1] (default Kinetics)")
    parser.add_argument("--std", type=float, nargs=3, default=None, help="RGB std in [0, 1] (default Kinetics)")
    parser.add_argument("--frame-stride", type=int, default=1, help="native frames between the frames of a clip")
    parser.add_argument("--context-frames", type=int, default=None, help="frames per clip (default: receptive field)")
    parser.add_argument("--dtype", choices=["float16", "float32"], default="float16")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.set_defaults(func=_extract)


def _index(args: argparse.Namespace) -> tuple[list[object], list[str]]:
    from datamodules.features.extract import LabelledVideo
    from datamodules.video.layouts import Split, parse_class_folders, parse_hmdb51, parse_kinetics, parse_ucf101

    def one(split: Split) -> object:
        if args.layout == "ucf101":
            return parse_ucf101(args.root, args.annotation_dir or args.root / "ucfTrainTestlist", split, args.fold)
        if args.layout == "hmdb51":
            annotations = args.annotation_dir or args.root / "testTrainMulti_7030_splits"
            return parse_hmdb51(args.root, annotations, split, args.fold)
        if args.layout == "kinetics":
            return parse_kinetics(args.root, args.annotation_dir or args.root / "annotations", split)
        return parse_class_folders(args.root, split)

    # UCF101 and HMDB51 have no validation split: their parsers return the test list for VAL, so it is skipped
    splits = [Split.TRAIN, Split.TEST] if args.layout in ("ucf101", "hmdb51") else [Split.TRAIN, Split.VAL, Split.TEST]
    videos: list[object] = []
    names: list[str] = []
    seen: set[str] = set()
    for split in splits:
        try:
            index = one(split)
        except (FileNotFoundError, ValueError) as error:
            if split is Split.VAL:  # optional in class folders and Kinetics
                print(f"no {split.value} split: {error}", file=sys.stderr)
                continue
            raise
        names = names or list(index.class_names)  # type: ignore[attr-defined]
        for path, label in index.items:  # type: ignore[attr-defined]
            relative = str(Path(path).resolve().relative_to(Path(args.root).resolve()))
            if relative not in seen:
                seen.add(relative)
                videos.append(LabelledVideo(Path(path), relative, int(label), split.value))
    return videos, names


def _extract(args: argparse.Namespace) -> int:
    import torch

    from datamodules.features.extract import (
        ExtractionSettings,
        checkpoint_encoder,
        extract_features,
        torchvision_encoder,
    )
    from datamodules.video.transforms import KINETICS_MEAN, KINETICS_STD

    if args.threads:
        torch.set_num_threads(args.threads)
    if args.flow_root is not None:
        return _extract_flow(args)
    if args.backbone and args.weights is None and not args.random_init:
        raise SystemExit("--backbone needs --weights (a local state_dict); --random-init for timing and tests only")
    settings = ExtractionSettings(
        frames=None if args.every_frame else args.frames,
        frame_step=args.frame_step,
        batch_size=args.batch_size,
        short_side=args.short_side,
        crop_size=args.crop_size,
        mean=tuple(args.mean) if args.mean else KINETICS_MEAN,
        std=tuple(args.std) if args.std else KINETICS_STD,
        frame_stride=args.frame_stride,
        context_frames=args.context_frames,
        dtype=args.dtype,
    )
    encoder = (
        checkpoint_encoder(args.checkpoint, args.context_frames)
        if args.checkpoint
        else torchvision_encoder(args.backbone, args.weights)
    )
    videos, names = _index(args)
    summary = extract_features(
        videos,  # type: ignore[arg-type]
        encoder,
        args.out,
        settings,
        class_names=names,
        source=str(args.root),
        progress=not args.no_progress,
    )
    print(
        f"{args.out}: wrote {summary.written} videos, skipped {summary.skipped} already complete, quarantined "
        f"{len(summary.quarantined)}; {summary.clips} clips of {encoder.context_frames} frames "
        f"(D={encoder.feature_dim}) "
        f"in {summary.seconds:.1f} s: {summary.clips_per_second:.1f} clips/s, "
        f"{summary.frames_per_second:.1f} decoded frames/s (backbone {summary.encode_seconds:.1f} s)"
    )
    return 0


def _extract_flow(args: argparse.Namespace) -> int:
    from datamodules.features.flow_features import FlowFeatureSettings, extract_flow_features, flow_stream_encoder

    if args.checkpoint is None:
        raise ValueError("--flow-root needs --checkpoint of a temporal stream (temporal_stream_resnet*)")
    settings = FlowFeatureSettings(
        frames=None if args.every_frame else args.frames,
        frame_step=args.frame_step,
        crop_size=args.crop_size,
        batch_size=args.batch_size,
        dtype=args.dtype,
    )
    encoder = flow_stream_encoder(args.checkpoint)
    videos, names = _index(args)
    summary = extract_flow_features(
        videos,  # type: ignore[arg-type]
        encoder,
        args.flow_root,
        args.out,
        settings,
        class_names=names,
        source=str(args.root),
        progress=not args.no_progress,
    )
    print(
        f"{args.out}: wrote {summary.written} videos, skipped {summary.skipped} already complete, quarantined "
        f"{len(summary.quarantined)}; {summary.clips} stacks of {encoder.context_frames} flow fields "
        f"(D={encoder.feature_dim}) in {summary.seconds:.1f} s ({summary.clips_per_second:.1f} stacks/s)"
    )
    return 0


def add_data_parsers(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Register ``ordered-events`` and ``join-features`` under ``vidrec data``."""
    ordered = subparsers.add_parser(
        "ordered-events", help="write the ordered-events feature set (class = order of events; mean pool at chance)"
    )
    ordered.add_argument("--out", type=Path, required=True, help="feature file to write")
    ordered.add_argument("--events", type=int, default=3, help="events per sequence; classes are their orders")
    ordered.add_argument("--feature-dim", type=int, default=64)
    ordered.add_argument("--frames", type=int, default=25)
    ordered.add_argument("--train-per-class", type=int, default=100)
    ordered.add_argument("--test-per-class", type=int, default=50)
    ordered.add_argument("--noise", type=float, default=0.5)
    ordered.add_argument("--seed", type=int, default=0)
    ordered.set_defaults(func=_ordered_events)

    join = subparsers.add_parser("join-features", help="concatenate two feature files (RGB, flow) per video")
    join.add_argument("first", type=Path)
    join.add_argument("second", type=Path)
    join.add_argument("--out", type=Path, required=True)
    join.add_argument("--strict", action="store_true", help="fail on videos missing from one file")
    join.set_defaults(func=_join)


def _ordered_events(args: argparse.Namespace) -> int:
    from datamodules.features.ordered_events import OrderedEventsSettings, generate_ordered_events

    settings = OrderedEventsSettings(
        events=args.events,
        feature_dim=args.feature_dim,
        frames=args.frames,
        train_per_class=args.train_per_class,
        test_per_class=args.test_per_class,
        noise=args.noise,
        seed=args.seed,
    )
    print(f"wrote {generate_ordered_events(args.out, settings)}")
    return 0


def _join(args: argparse.Namespace) -> int:
    from datamodules.features.schema import join_feature_files

    report = join_feature_files(args.first, args.second, args.out, strict=args.strict)
    print(
        f"{args.out}: joined {report.joined} videos; {len(report.only_in_first)} only in {args.first}, "
        f"{len(report.only_in_second)} only in {args.second} (skipped)"
    )
    return 0
