"""``vidrec data`` subcommands for skeletons: ``ntu-skeleton``, ``synthetic-skeleton``, ``pose-pickle``,
``skeleton-folder``, ``video-to-skeleton`` (each writes a ``vidrec.skeleton/1`` HDF5 file and prints what it
skipped)."""

from __future__ import annotations

import argparse
from pathlib import Path

__all__ = ["add_parser"]


def add_parser(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Register the skeleton data subcommands on an argparse subparsers object (``vidrec data ...``)."""
    ntu = subparsers.add_parser(
        "ntu-skeleton",
        help="convert a folder of NTU RGB+D .skeleton files (pyskl's body selection and denoising)",
    )
    ntu.add_argument("root", type=Path, help="folder searched recursively for SsssCcccPpppRrrrAaaa.skeleton")
    ntu.add_argument("--out", type=Path, required=True, help="HDF5 file to write")
    ntu.add_argument("--num-classes", type=int, default=None, help="K (default: the largest action id found)")
    ntu.add_argument("--keep-missing", action="store_true", help="do not skip the official missing-skeleton list")
    ntu.add_argument("--max-bodies", type=int, default=2, help="actors kept per sample")
    ntu.set_defaults(func=_ntu)

    syn = subparsers.add_parser(
        "synthetic-skeleton", help="write synthetic skeleton actions as NTU .skeleton files (and convert them)"
    )
    syn.add_argument("--out", type=Path, required=True, help="folder receiving the .skeleton files")
    syn.add_argument("--h5", type=Path, default=None, help="also convert them into this HDF5 file")
    syn.add_argument("--classes", type=int, default=8, help="number of actions (1-8)")
    syn.add_argument("--performers", type=int, default=10, help="performers P001..")
    syn.add_argument("--replications", type=int, default=2, help="replications R001..")
    syn.add_argument("--seed", type=int, default=0, help="generation seed")
    syn.set_defaults(func=_synthetic)

    pkl = subparsers.add_parser(
        "pose-pickle", help="import a pyskl / mmaction2 skeleton pickle (restricted unpickling: plain types, arrays)"
    )
    pkl.add_argument("pickle", type=Path, help="the .pkl file")
    pkl.add_argument("--out", type=Path, required=True, help="HDF5 file to write")
    pkl.add_argument("--train-split", default=None, help="split key marking training samples, e.g. xsub_train")
    pkl.add_argument("--test-split", default=None, help="split key marking test samples, e.g. xsub_val")
    pkl.set_defaults(func=_pickle)

    folder = subparsers.add_parser(
        "skeleton-folder", help="import a generic folder: index.csv + <name>.npz (joints) or <name>.csv per sample"
    )
    folder.add_argument("root", type=Path, help="folder with index.csv (name,label,performer[,camera,...,split])")
    folder.add_argument("--out", type=Path, required=True, help="HDF5 file to write")
    folder.set_defaults(func=_folder)

    video = subparsers.add_parser(
        "video-to-skeleton",
        help="extract NTU-layout skeletons from videos with MediaPipe Pose (the [pose] extra)",
        description="Run MediaPipe Pose on every frame of each video and map its 33 landmarks onto NTU's 25 joints "
        "(see datamodules/skeleton/pose_extract.py for the mapping and the synthesised joints). Labels: the class "
        "subfolder of each video (root/<class>/<video>), else one class 'unlabelled'. Videos that cannot be decoded "
        "or show no person are skipped and listed.",
    )
    video.add_argument("inputs", type=Path, nargs="+", help="video files or folders (searched recursively)")
    video.add_argument("--out", type=Path, required=True, help="HDF5 file to write")
    video.add_argument("--max-frames", type=int, default=None, help="read at most this many frames per video")
    video.set_defaults(func=_video)


def _print_skipped(skipped: list[tuple[str, str]]) -> None:
    if skipped:
        print(f"skipped {len(skipped)}:")
        for name, reason in skipped:
            print(f"  {name}: {reason}")


def _ntu(args: argparse.Namespace) -> int:
    from datamodules.skeleton.ntu_convert import BodySelection, convert_ntu_folder

    report = convert_ntu_folder(
        args.root,
        args.out,
        selection=BodySelection(max_bodies=args.max_bodies),
        num_classes=args.num_classes,
        skip_official_missing=not args.keep_missing,
    )
    print(f"wrote {report.written} samples to {report.out} ({report.files_per_second:.0f} files/s)")
    _print_skipped(report.skipped)
    return 0


def _synthetic(args: argparse.Namespace) -> int:
    from datamodules.skeleton.synthetic import SyntheticSkeletonSettings, generate_synthetic_skeletons

    settings = SyntheticSkeletonSettings(
        num_classes=args.classes, performers=args.performers, replications=args.replications, seed=args.seed
    )
    paths = generate_synthetic_skeletons(args.out, settings)
    print(f"wrote {len(paths)} .skeleton files to {args.out}")
    if args.h5 is not None:
        from datamodules.skeleton.ntu_convert import convert_ntu_folder
        from datamodules.skeleton.synthetic import SYNTHETIC_CLASSES

        names = list(SYNTHETIC_CLASSES[: args.classes])
        # synthetic names are not NTU's samples: the official missing-skeleton list does not apply to them
        report = convert_ntu_folder(
            args.out, args.h5, num_classes=args.classes, class_names=names, skip_official_missing=False
        )
        print(f"wrote {report.written} samples to {report.out} ({report.files_per_second:.0f} files/s)")
        _print_skipped(report.skipped)
    return 0


def _pickle(args: argparse.Namespace) -> int:
    from datamodules.skeleton.importers import import_pose_pickle

    n, skipped = import_pose_pickle(args.pickle, args.out, train_split=args.train_split, test_split=args.test_split)
    print(f"wrote {n} samples to {args.out}")
    _print_skipped(skipped)
    return 0


def _folder(args: argparse.Namespace) -> int:
    from datamodules.skeleton.importers import import_skeleton_folder

    n, skipped = import_skeleton_folder(args.root, args.out)
    print(f"wrote {n} samples to {args.out}")
    _print_skipped(skipped)
    return 0


def _video(args: argparse.Namespace) -> int:
    from datamodules.skeleton.pose_extract import PoseUnavailable, convert_videos

    try:
        report = convert_videos(args.inputs, args.out, max_frames=args.max_frames)
    except PoseUnavailable as err:
        print(f"vidrec data video-to-skeleton: {err}")
        return 2
    print(
        f"wrote {report.written} samples ({', '.join(report.class_names)}) to {report.out}; "
        f"{report.frames} frames at {report.frames_per_second:.1f} frames/s"
    )
    for name, frames, with_person, visibility in report.videos:
        print(f"  {name}: a person in {with_person} of {frames} frames (mean landmark visibility {visibility:.2f})")
    _print_skipped(report.skipped)
    return 0 if report.written else 1
