"""Generic converter: a directory of CSV or NPZ files, one continuous recording per file -> ``vidrec.timeseries/1``.

CSV: a header row, then one row per sample. ``channels`` names the signal columns (default: every column that is not
the label or subject column), ``label_column`` the per-sample label: class names (strings) or integer class indices.
Empty cells and "-1" in the label column mean unlabelled.

NPZ: arrays ``samples`` (T, C) and ``labels`` (T,) (strings or ints, as for CSV), optional scalar ``subject``; the
keys are configurable.

The subject of a file comes from ``subject_column`` (CSV, must be constant within the file), from the NPZ
``subject`` array, from the first group of ``subject_pattern`` (a regular expression searched in the file name,
e.g. ``r"subject(\\d+)"``), or else it is the file's index in sorted order. The sampling rate is given by the user.

An official split (``train`` / ``test``, what ``split_mode: OFFICIAL`` and ``tools/cross_validate.py`` read) comes
from ``split_column`` (CSV, constant within a file) or the NPZ ``split`` array (a scalar string); without one the
file has no official split and subjects are split by the datamodule's other modes.
"""

from __future__ import annotations

import csv
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from datamodules.timeseries.schema import Recording, write_recordings

_UNLABELLED_TOKENS = ("", "-1")


@dataclass
class GenericFormat:
    """How to read the files of a generic directory.

    Attributes:
        label_column: CSV column holding per-sample labels.
        channels: CSV columns to use as channels, in order; None = all other columns (CSV), or all columns of the
            NPZ samples array.
        subject_column: CSV column holding the subject id (constant within a file).
        subject_pattern: Regular expression searched in the file name; group 1 is the integer subject id.
        split_column: CSV column holding the file's official split, "train" or "test" (constant within a file).
        class_names: Class names in index order. For string labels, None = sorted unique names over all files;
            for integer labels, None = "0".."K-1" with K = max label + 1.
        samples_key: NPZ key of the (T, C) samples.
        labels_key: NPZ key of the (T,) labels.
        pattern: Glob for the files in the directory; default "*.csv" and "*.npz".
    """

    label_column: str = "label"
    channels: list[str] | None = None
    subject_column: str | None = None
    subject_pattern: str | None = None
    split_column: str | None = None
    class_names: list[str] | None = None
    samples_key: str = "samples"
    labels_key: str = "labels"
    pattern: str | None = None


_Read = tuple[np.ndarray, np.ndarray, list[str], int | None, str | None]


def _constant(path: Path, table: np.ndarray, header: list[str], column: str, what: str) -> str:
    if column not in header:
        raise ValueError(f"{path}: {what} column {column!r} not in header {header}")
    values = np.unique(np.char.strip(table[:, header.index(column)]))
    if len(values) != 1:
        raise ValueError(f"{path}: {what} column {column!r} must be constant, found {values[:5]}")
    return str(values[0])


def _check_split(path: Path, split: str | None) -> str | None:
    if split is not None and split not in ("train", "test"):
        raise ValueError(f"{path}: split {split!r}: expected 'train' or 'test'")
    return split


def _read_csv(path: Path, fmt: GenericFormat) -> _Read:
    """Samples (T, C), raw label strings (T,), channel names, optional subject and split of one CSV file."""
    with path.open(newline="", encoding="utf-8") as f:
        rows = list(csv.reader(f))
    if len(rows) < 2:
        raise ValueError(f"{path}: expected a header row and at least one data row")
    header = [h.strip() for h in rows[0]]
    table = np.array(rows[1:], dtype=str)  # (T, columns)
    if table.ndim != 2 or table.shape[1] != len(header):
        raise ValueError(f"{path}: every row must have {len(header)} fields like the header")
    if fmt.label_column not in header:
        raise ValueError(f"{path}: label column {fmt.label_column!r} not in header {header}")
    skip = {fmt.label_column, fmt.subject_column, fmt.split_column}
    channels = fmt.channels if fmt.channels is not None else [h for h in header if h not in skip]
    missing = [c for c in channels if c not in header]
    if missing:
        raise ValueError(f"{path}: channel columns {missing} not in header {header}")
    try:
        samples = table[:, [header.index(c) for c in channels]].astype(np.float64)  # (T, C)
    except ValueError as err:
        raise ValueError(f"{path}: channel columns {channels} must be numeric ({err})") from err
    subject = None
    if fmt.subject_column is not None:
        subject = int(_constant(path, table, header, fmt.subject_column, "subject"))
    split = None
    if fmt.split_column is not None:
        split = _check_split(path, _constant(path, table, header, fmt.split_column, "split"))
    labels = np.char.strip(table[:, header.index(fmt.label_column)])
    return samples, labels, channels, subject, split


def _read_npz(path: Path, fmt: GenericFormat) -> _Read:
    """Samples (T, C), raw label strings (T,), channel names, optional subject and split of one NPZ file."""
    with np.load(path, allow_pickle=False) as data:
        for key in (fmt.samples_key, fmt.labels_key):
            if key not in data:
                raise ValueError(f"{path}: missing array {key!r} (has {sorted(data.keys())})")
        samples = np.asarray(data[fmt.samples_key], dtype=np.float64)
        labels = np.asarray(data[fmt.labels_key]).astype(str)
        subject = int(data["subject"]) if "subject" in data else None
        split = _check_split(path, str(data["split"])) if "split" in data else None
    if samples.ndim != 2:
        raise ValueError(f"{path}: array {fmt.samples_key!r} must be (T, C), got shape {samples.shape}")
    channels = fmt.channels if fmt.channels is not None else [f"ch{c}" for c in range(samples.shape[1])]
    if len(channels) != samples.shape[1]:
        raise ValueError(f"{path}: {len(channels)} channel names for {samples.shape[1]} channels")
    return samples, labels, channels, subject, split


def _is_int(token: str) -> bool:
    return token.lstrip("-").isdigit()


def generic_recordings(directory: str | Path, fmt: GenericFormat) -> tuple[list[Recording], list[str], list[str]]:
    """Read every CSV/NPZ file of ``directory`` as one recording.

    Returns:
        (recordings, channel_names, class_names).
    """
    directory = Path(directory)
    if not directory.is_dir():
        raise FileNotFoundError(f"{directory}: directory of CSV/NPZ recordings not found")
    patterns = [fmt.pattern] if fmt.pattern else ["*.csv", "*.npz"]
    files = sorted({p for pattern in patterns for p in directory.glob(pattern) if p.is_file()})
    if not files:
        raise FileNotFoundError(f"{directory}: no files matching {patterns}")
    raw = []
    channel_names: list[str] | None = None
    for index, path in enumerate(files):
        samples, labels, channels, subject, split = (_read_npz if path.suffix == ".npz" else _read_csv)(path, fmt)
        if channel_names is None:
            channel_names = channels
        elif channels != channel_names:
            raise ValueError(f"{path}: channels {channels} differ from {channel_names} of {files[0]}")
        if labels.shape != (len(samples),):
            raise ValueError(f"{path}: expected {len(samples)} labels, got shape {labels.shape}")
        if subject is None and fmt.subject_pattern is not None:
            match = re.search(fmt.subject_pattern, path.name)
            if match is None:
                raise ValueError(f"{path}: file name does not match subject_pattern {fmt.subject_pattern!r}")
            subject = int(match.group(1))
        raw.append((path, samples, labels, index if subject is None else subject, split))
    tokens = {str(t) for _, _, labels, _, _ in raw for t in np.unique(labels)} - set(_UNLABELLED_TOKENS)
    integer = all(_is_int(t) for t in tokens)
    if fmt.class_names is not None:
        class_names = list(fmt.class_names)
    elif integer:
        class_names = [str(k) for k in range(max((int(t) for t in tokens), default=-1) + 1)]
    else:
        class_names = sorted(tokens)
    lookup = {name: k for k, name in enumerate(class_names)}
    recordings = []
    for path, samples, labels, subject, split in raw:
        out = np.full(len(labels), -1, dtype=np.int64)
        for token in (str(t) for t in np.unique(labels)):
            if token in _UNLABELLED_TOKENS:
                continue
            if token in lookup:
                k = lookup[token]
            elif _is_int(token):
                k = int(token)
            else:
                raise ValueError(f"{path}: label {token!r} in column {fmt.label_column!r} is not in {class_names}")
            if not 0 <= k < len(class_names):
                raise ValueError(f"{path}: label {token!r} outside 0..{len(class_names) - 1} ({class_names})")
            out[labels == token] = k
        recordings.append(Recording(path.stem, samples.astype(np.float32), out, subject=int(subject), split=split))
    assert channel_names is not None
    return recordings, channel_names, class_names


def convert_generic(
    directory: str | Path, out: str | Path, *, sampling_rate: float, fmt: GenericFormat | None = None
) -> Path:
    """Convert a directory of CSV/NPZ recordings to a ``vidrec.timeseries/1`` file (see module docstring)."""
    recordings, channel_names, class_names = generic_recordings(directory, fmt or GenericFormat())
    return write_recordings(
        out, recordings, sampling_rate=sampling_rate, channel_names=channel_names, class_names=class_names
    )
