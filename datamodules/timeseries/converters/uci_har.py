"""UCI HAR converter: the official "UCI HAR Dataset" windows -> continuous ``vidrec.timeseries/1`` recordings.

Data: Anguita, Ghio, Oneto, Parra, Reyes-Ortiz, "A Public Domain Dataset for Human Activity Recognition Using
Smartphones", ESANN 2013; UCI Machine Learning Repository "Human Activity Recognition Using Smartphones", CC BY 4.0.

Official layout (a directory or the ``.zip``, optionally with the data set zip nested inside the download zip)::

    UCI HAR Dataset/activity_labels.txt                  "1 WALKING" ... "6 LAYING"
    UCI HAR Dataset/{train,test}/subject_{split}.txt     one subject id per window
    UCI HAR Dataset/{train,test}/y_{split}.txt           one activity id (1-based) per window
    UCI HAR Dataset/{train,test}/Inertial Signals/{body_acc,body_gyro,total_acc}_{x,y,z}_{split}.txt
                                                         one window of 128 samples (50 Hz) per line

The windows overlap by 50%. Recordings are rebuilt per subject and contiguous run: window i+1 continues window i when
both belong to the same subject and the first half of i+1 equals the second half of i exactly (all channels); the
run then grows by the second half of i+1, whose samples take the label of window i+1. Otherwise a new recording
starts. Acc is in g, gyro in rad/s; body_acc is total_acc with gravity removed by the authors' filter.
"""

from __future__ import annotations

import enum
import io
import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np

from datamodules.timeseries.schema import Recording, write_recordings

ROOT = "UCI HAR Dataset"
SAMPLING_RATE = 50.0
WINDOW = 128
SIGNALS_9 = ["body_acc", "body_gyro", "total_acc"]
SIGNALS_6 = ["total_acc", "body_gyro"]
SOURCE = (
    "UCI HAR: Human Activity Recognition Using Smartphones (UCI Machine Learning Repository, CC BY 4.0). "
    "Anguita, Ghio, Oneto, Parra, Reyes-Ortiz, ESANN 2013. 50 Hz; acc in g, gyro in rad/s; continuous recordings "
    "rebuilt from the official 50%-overlapping 128-sample windows; split = official train/test."
)


class UCIHARChannels(enum.Enum):
    """Which inertial signals become channels (x, y, z of each, in this order)."""

    ALL = "all"  # 9 channels: body_acc, body_gyro, total_acc (as the official data set)
    TOTAL_ACC_GYRO = "total_acc_gyro"  # 6 channels: total_acc, body_gyro (raw-sensor-like, as HAPT)


def _file_reader(source: str | Path) -> Callable[[str], bytes]:
    """Return ``read(relative_path) -> bytes`` for paths under ``UCI HAR Dataset/`` in a directory or zip."""
    source = Path(source)
    if not source.exists():
        raise FileNotFoundError(f"{source}: UCI HAR data set not found (expected the '{ROOT}' directory or its .zip)")
    if source.is_dir():
        root = source if (source / "activity_labels.txt").is_file() else source / ROOT

        def read_dir(rel: str) -> bytes:
            path = root / rel
            if not path.is_file():
                raise FileNotFoundError(f"{source}: missing file {path} (official UCI HAR layout expected)")
            return path.read_bytes()

        return read_dir
    archive = zipfile.ZipFile(source)
    names = set(archive.namelist())
    if not any(n.endswith("activity_labels.txt") for n in names):
        inner = [n for n in names if n.endswith(".zip") and ROOT in n]
        if len(inner) == 1:  # the UCI download wraps "UCI HAR Dataset.zip" in another zip
            archive = zipfile.ZipFile(io.BytesIO(archive.read(inner[0])))
            names = set(archive.namelist())
    labels_file = [n for n in names if n.endswith("activity_labels.txt") and "__MACOSX" not in n]
    if len(labels_file) != 1:
        raise FileNotFoundError(f"{source}: expected exactly one '{ROOT}/activity_labels.txt' in the zip")
    prefix = labels_file[0][: -len("activity_labels.txt")]

    def read_zip(rel: str) -> bytes:
        name = prefix + rel
        if name not in names:
            raise FileNotFoundError(f"{source}: missing member {name!r} (official UCI HAR layout expected)")
        return archive.read(name)

    return read_zip


def _numbers(data: bytes, what: str, dtype: type = np.float64) -> np.ndarray:
    """Parse whitespace-separated numbers (fast path for the large signal files)."""
    values: np.ndarray = np.array(data.split(), dtype=dtype)
    if values.size == 0:
        raise ValueError(f"{what}: file is empty")
    return values


def _split_windows(read: Callable[[str], bytes], split: str, signals: list[str]) -> tuple[np.ndarray, ...]:
    """Windows (N, 128, C) float64, subjects (N,), labels (N,) 0-based of one official split."""
    subjects = _numbers(read(f"{split}/subject_{split}.txt"), f"{split}/subject_{split}.txt", np.int64)
    labels = _numbers(read(f"{split}/y_{split}.txt"), f"{split}/y_{split}.txt", np.int64) - 1
    channels = []
    for signal in signals:
        for axis in "xyz":
            rel = f"{split}/Inertial Signals/{signal}_{axis}_{split}.txt"
            values = _numbers(read(rel), rel)
            if values.size != len(subjects) * WINDOW:
                raise ValueError(
                    f"{rel}: expected {len(subjects)} windows x {WINDOW} samples (one window per line of"
                    f" subject_{split}.txt), got {values.size} values"
                )
            channels.append(values.reshape(len(subjects), WINDOW))
    if len(labels) != len(subjects):
        raise ValueError(f"{split}/y_{split}.txt: expected {len(subjects)} labels, got {len(labels)}")
    return np.stack(channels, axis=2), subjects, labels  # (N, 128, C)


def windows_to_recordings(
    windows: np.ndarray, subjects: np.ndarray, labels: np.ndarray, *, split: str | None, id_prefix: str
) -> list[Recording]:
    """Rebuild continuous recordings from 50%-overlapping windows (see module docstring).

    Args:
        windows: (N, W, C) windows in file order, W even.
        subjects: (N,) subject per window.
        labels: (N,) 0-based class per window.
        split: Value of the recordings' ``split`` attribute.
        id_prefix: Recording ids are ``{id_prefix}{k:04d}``.
    """
    half = windows.shape[1] // 2
    # continues[i]: window i+1 continues window i
    continues = (subjects[1:] == subjects[:-1]) & np.all(windows[1:, :half] == windows[:-1, half:], axis=(1, 2))
    starts = np.concatenate([[0], np.flatnonzero(~continues) + 1, [len(windows)]])
    recordings = []
    for k, (a, b) in enumerate(zip(starts[:-1], starts[1:])):
        pieces = [windows[a]] + [windows[i, half:] for i in range(a + 1, b)]  # (W, C), then (W/2, C) each
        piece_labels = [np.full(windows.shape[1], labels[a])] + [np.full(half, labels[i]) for i in range(a + 1, b)]
        recordings.append(
            Recording(
                id=f"{id_prefix}{k:04d}",
                samples=np.concatenate(pieces).astype(np.float32),  # (W + (b-a-1) * W/2, C)
                labels=np.concatenate(piece_labels).astype(np.int64),
                subject=int(subjects[a]),
                split=split,
            )
        )
    return recordings


def uci_har_recordings(
    source: str | Path, *, channels: UCIHARChannels = UCIHARChannels.ALL
) -> tuple[list[Recording], list[str], list[str]]:
    """Read the official UCI HAR layout into continuous recordings.

    Args:
        source: The ``UCI HAR Dataset`` directory, its parent, or the ``.zip``.
        channels: Which inertial signals to keep.

    Returns:
        (recordings, channel_names, class_names).
    """
    read = _file_reader(source)
    class_rows = [line.split() for line in read("activity_labels.txt").decode().splitlines() if line.strip()]
    class_names = [name for _, name in sorted((int(i), name) for i, name in class_rows)]
    signals = SIGNALS_9 if channels == UCIHARChannels.ALL else SIGNALS_6
    recordings: list[Recording] = []
    for split in ("train", "test"):
        windows, subjects, labels = _split_windows(read, split, signals)
        if labels.min() < 0 or labels.max() >= len(class_names):
            raise ValueError(f"{source}: {split}/y_{split}.txt: labels must be in 1..{len(class_names)}")
        recordings += windows_to_recordings(windows, subjects, labels, split=split, id_prefix=f"{split}_")
    channel_names = [f"{signal}_{axis}" for signal in signals for axis in "xyz"]
    return recordings, channel_names, class_names


def convert_uci_har(source: str | Path, out: str | Path, *, channels: UCIHARChannels = UCIHARChannels.ALL) -> Path:
    """Convert the official UCI HAR data set (directory or zip) to a ``vidrec.timeseries/1`` file."""
    recordings, channel_names, class_names = uci_har_recordings(source, channels=channels)
    return write_recordings(
        out,
        recordings,
        sampling_rate=SAMPLING_RATE,
        channel_names=channel_names,
        class_names=class_names,
        source=SOURCE,
    )
