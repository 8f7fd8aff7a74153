"""On-disk contract for continuous multichannel time series (wearable-sensor HAR): ``vidrec.timeseries/1``.

One HDF5 file holds many continuous recordings of one data set::

    /                                   root attributes
        schema         str              "vidrec.timeseries/1"
        sampling_rate  float            Hz, shared by every recording
        channel_names  list[str]        C names; column c of every ``samples`` is channel_names[c]
        class_names    list[str]        K names; label k means class_names[k]
        source         str (optional)   citation / licence of the upstream data
    /recordings/<id>                    one group per continuous recording (<id> is any HDF5-safe name)
        samples        float32 (T, C)   contiguous layout (never chunked: contiguous slab reads are ~25x faster
                                        than chunked fancy indexing), finite values only
        labels         int64 (T,)       per-sample class index in [0, K), or -1 = unlabelled
        attrs:
            subject    int              who was recorded (splits are made by subject)
            split      str (optional)   "train" or "test" for data sets that come with an official membership

Recordings are read back in the order they were written (the ``recordings`` group tracks creation order).
Units are not part of the schema; converters state them in ``source`` or their docstrings.

Example:
    >>> write_recordings("toy.h5", [Recording("r0", samples, labels, subject=1)],
    ...                  sampling_rate=50.0, channel_names=["acc_x"], class_names=["walk", "sit"])
    >>> info = read_info("toy.h5"); recordings = read_recordings("toy.h5")
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np

SCHEMA = "vidrec.timeseries/1"
UNLABELLED = -1
SPLITS = ("train", "test")


class TimeSeriesFileError(ValueError):
    """A file does not follow the ``vidrec.timeseries/1`` schema; the message names the file and the key."""


@dataclass
class Recording:
    """One continuous recording.

    Attributes:
        id: Name of the group under ``/recordings``.
        samples: (T, C) float32 signal.
        labels: (T,) int64 per-sample class index, -1 = unlabelled.
        subject: Subject id (splits are made by subject).
        split: Official membership, "train" / "test", or None.
    """

    id: str
    samples: np.ndarray
    labels: np.ndarray
    subject: int
    split: str | None = None


@dataclass(frozen=True)
class TimeSeriesInfo:
    """Root attributes of a schema file plus the recording ids, read without loading any samples."""

    path: str
    sampling_rate: float
    channel_names: list[str]
    class_names: list[str]
    source: str | None
    recording_ids: list[str]

    @property
    def num_classes(self) -> int:
        """Number of classes K."""
        return len(self.class_names)

    @property
    def num_channels(self) -> int:
        """Number of channels C."""
        return len(self.channel_names)


def _str_list(values: object) -> list[str]:
    """Decode an HDF5 string-array attribute into a list of str."""
    arr = np.asarray(values).reshape(-1)
    return [v.decode("utf-8") if isinstance(v, bytes) else str(v) for v in arr]


def write_recordings(
    path: str | Path,
    recordings: Iterable[Recording],
    *,
    sampling_rate: float,
    channel_names: Sequence[str],
    class_names: Sequence[str],
    source: str | None = None,
) -> Path:
    """Write recordings into a new ``vidrec.timeseries/1`` HDF5 file (overwriting ``path``).

    Every recording is checked the same way the reader checks it, so an invalid file is never written.

    Args:
        path: Output ``.h5`` path; parent directories are created.
        recordings: Recordings to store, in order.
        sampling_rate: Sampling rate in Hz.
        channel_names: C channel names.
        class_names: K class names (label k means class_names[k]).
        source: Optional citation / licence text.

    Returns:
        The output path.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    num_channels, num_classes = len(channel_names), len(class_names)
    if sampling_rate <= 0:
        raise TimeSeriesFileError(f"{path}: sampling_rate must be > 0 Hz, got {sampling_rate}")
    if len(set(channel_names)) != num_channels or num_channels == 0:
        raise TimeSeriesFileError(f"{path}: channel_names must be non-empty and unique, got {list(channel_names)}")
    if len(set(class_names)) != num_classes or num_classes == 0:
        raise TimeSeriesFileError(f"{path}: class_names must be non-empty and unique, got {list(class_names)}")
    with h5py.File(path, "w") as f:
        f.attrs["schema"] = SCHEMA
        f.attrs["sampling_rate"] = float(sampling_rate)
        f.attrs["channel_names"] = list(channel_names)
        f.attrs["class_names"] = list(class_names)
        if source is not None:
            f.attrs["source"] = source
        group = f.create_group("recordings", track_order=True)
        seen: set[str] = set()
        for rec in recordings:
            if rec.id in seen or not rec.id or "/" in rec.id:
                raise TimeSeriesFileError(f"{path}: recording id {rec.id!r} is empty, contains '/' or is duplicated")
            seen.add(rec.id)
            samples = np.ascontiguousarray(rec.samples, dtype=np.float32)
            labels = np.ascontiguousarray(rec.labels, dtype=np.int64)
            where = f"{path}: /recordings/{rec.id}"
            _check_arrays(where, samples, labels, num_channels, num_classes)
            if rec.split is not None and rec.split not in SPLITS:
                raise TimeSeriesFileError(f"{where} attr 'split': expected one of {SPLITS} or None, got {rec.split!r}")
            g = group.create_group(rec.id)
            g.create_dataset("samples", data=samples)  # contiguous: no chunks=, no compression
            g.create_dataset("labels", data=labels)
            g.attrs["subject"] = int(rec.subject)
            if rec.split is not None:
                g.attrs["split"] = rec.split
    return path


def _check_arrays(where: str, samples: np.ndarray, labels: np.ndarray, num_channels: int, num_classes: int) -> None:
    """Validate one recording's arrays; ``where`` names file and group in the error."""
    if samples.ndim != 2 or samples.shape[0] == 0:
        raise TimeSeriesFileError(f"{where}/samples: expected a non-empty (T, C) array, got shape {samples.shape}")
    if samples.shape[1] != num_channels:
        raise TimeSeriesFileError(
            f"{where}/samples: expected {num_channels} channels (len(channel_names)), got shape {samples.shape}"
        )
    finite = np.isfinite(samples)
    if not finite.all():
        t, c = np.argwhere(~finite)[0]
        raise TimeSeriesFileError(
            f"{where}/samples: expected finite values, found {samples[t, c]} at index (t={t}, c={c})"
            f" and {int((~finite).sum())} non-finite values in total"
        )
    if labels.shape != (samples.shape[0],):
        raise TimeSeriesFileError(f"{where}/labels: expected shape ({samples.shape[0]},), got {labels.shape}")
    bad = (labels < UNLABELLED) | (labels >= num_classes)
    if bad.any():
        t = int(np.argmax(bad))
        raise TimeSeriesFileError(
            f"{where}/labels: expected values in [-1, {num_classes}) (num_classes = len(class_names)),"
            f" found {int(labels[t])} at index {t}"
        )


def _open(path: str | Path, hint: str = "") -> h5py.File:
    """Open a schema file for reading with a clear error when it is missing or not HDF5."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: time-series HDF5 file not found{hint}")
    try:
        return h5py.File(path, "r")
    except OSError as err:
        raise TimeSeriesFileError(f"{path}: not a readable HDF5 file ({err})") from err


def _require_attr(f: h5py.File | h5py.Group, key: str, where: str, expected: str) -> object:
    if key not in f.attrs:
        raise TimeSeriesFileError(f"{where}: missing required attribute '{key}' (expected {expected})")
    return f.attrs[key]


def _info_from_open(f: h5py.File, path: str | Path) -> TimeSeriesInfo:
    schema = _require_attr(f, "schema", f"{path}", f"'{SCHEMA}'")
    schema = schema.decode() if isinstance(schema, bytes) else str(schema)
    if schema != SCHEMA:
        raise TimeSeriesFileError(f"{path}: attribute 'schema' is {schema!r}, expected {SCHEMA!r}")
    rate = float(np.asarray(_require_attr(f, "sampling_rate", f"{path}", "sampling rate in Hz (float)")))
    if not rate > 0:
        raise TimeSeriesFileError(f"{path}: attribute 'sampling_rate' must be > 0 Hz, got {rate}")
    channels = _str_list(_require_attr(f, "channel_names", f"{path}", "list of channel names"))
    classes = _str_list(_require_attr(f, "class_names", f"{path}", "list of class names"))
    if not channels or not classes:
        raise TimeSeriesFileError(f"{path}: attributes 'channel_names' and 'class_names' must be non-empty")
    source = f.attrs.get("source")
    if isinstance(source, bytes):
        source = source.decode()
    if "recordings" not in f or not isinstance(f["recordings"], h5py.Group):
        raise TimeSeriesFileError(f"{path}: missing required group '/recordings'")
    ids = list(f["recordings"].keys())
    if not ids:
        raise TimeSeriesFileError(f"{path}: group '/recordings' is empty, expected at least one recording")
    return TimeSeriesInfo(
        path=str(path),
        sampling_rate=rate,
        channel_names=channels,
        class_names=classes,
        source=None if source is None else str(source),
        recording_ids=ids,
    )


def read_info(path: str | Path, *, missing_hint: str = "") -> TimeSeriesInfo:
    """Read and check the root attributes and the recording ids (no samples are loaded).

    Args:
        path: Schema file.
        missing_hint: Appended to the error when the file does not exist (e.g. the command that creates it).

    Raises:
        FileNotFoundError: ``path`` does not exist.
        TimeSeriesFileError: a required attribute or group is missing or invalid.
    """
    with _open(path, missing_hint) as f:
        return _info_from_open(f, path)


def read_recordings(path: str | Path) -> tuple[TimeSeriesInfo, list[Recording]]:
    """Read and validate every recording of a schema file (whole datasets, one read each).

    Raises:
        FileNotFoundError: ``path`` does not exist.
        TimeSeriesFileError: naming file, key and expectation, for a missing dataset or attribute, non-finite
            samples (with recording and first bad index), a channel count that differs from ``channel_names``,
            or labels outside [-1, num_classes).
    """
    recordings = []
    with _open(path) as f:
        info = _info_from_open(f, path)
        for rec_id in info.recording_ids:
            where = f"{path}: /recordings/{rec_id}"
            g = f["recordings"][rec_id]
            for key in ("samples", "labels"):
                if key not in g or not isinstance(g[key], h5py.Dataset):
                    raise TimeSeriesFileError(f"{where}: missing required dataset '{key}'")
            samples = np.asarray(g["samples"][()])
            labels = np.asarray(g["labels"][()])
            if samples.dtype != np.float32:
                raise TimeSeriesFileError(f"{where}/samples: expected dtype float32, got {samples.dtype}")
            if labels.dtype.kind not in "iu":
                raise TimeSeriesFileError(f"{where}/labels: expected an integer dtype (int64), got {labels.dtype}")
            labels = labels.astype(np.int64, copy=False)
            _check_arrays(where, samples, labels, info.num_channels, info.num_classes)
            subject = _require_attr(g, "subject", where, "subject id (int)")
            split = g.attrs.get("split")
            if isinstance(split, bytes):
                split = split.decode()
            if split is not None and split not in SPLITS:
                raise TimeSeriesFileError(f"{where}: attribute 'split' is {split!r}, expected one of {SPLITS}")
            recordings.append(
                Recording(
                    id=rec_id,
                    samples=samples,
                    labels=labels,
                    subject=int(np.asarray(subject)),
                    split=None if split is None else str(split),
                )
            )
    return info, recordings


def describe(path: str | Path) -> str:
    """Validate a schema file and summarise it in one line: recordings, samples, classes, per-split counts.

    Per split (official ``split`` attribute, "none" where absent) it gives recordings, subjects, samples and the
    labelled samples per class.
    """
    info, recordings = read_recordings(path)
    total = sum(len(r.labels) for r in recordings)
    parts = [
        f"{path}: {len(recordings)} recordings, {total} samples, {info.num_channels} channels"
        f" @ {info.sampling_rate:g} Hz, {info.num_classes} classes"
    ]
    for split in sorted({r.split or "none" for r in recordings}):
        recs = [r for r in recordings if (r.split or "none") == split]
        labels = np.concatenate([r.labels for r in recs])
        counts = np.bincount(labels[labels >= 0], minlength=info.num_classes)
        per_class = " ".join(f"{name}={int(n)}" for name, n in zip(info.class_names, counts))
        parts.append(
            f"{split}: {len(recs)} rec, {len({r.subject for r in recs})} subj, {len(labels)} samples,"
            f" {int((labels < 0).sum())} unlabelled, per class {per_class}"
        )
    return "; ".join(parts)
