"""UEA/UCR ``.ts`` (sktime format) and UCR ``.tsv`` converter -> ``vidrec.timeseries/1``; embedded BasicMotions.

UCR ``.tsv`` (the UCR 2018 archive, univariate): one case per line, the class label first, then the values, tab
separated; variable-length series are padded with trailing ``NaN``, which is dropped.

Format: header lines ``@problemName``, ``@timeStamps``, ``@missing``, ``@univariate``, ``@dimensions`` (or
``@dimension``), ``@equalLength``, ``@seriesLength``, ``@classLabel true <names...>``, then ``@data`` and one case per
line: dimensions separated by ``:``, values by ``,``, the class label last. ``#`` lines are comments.

Each case becomes one recording labelled uniformly with its class; cases of the TRAIN file get split "train", of the
TEST file "test"; the subject is the case index (TRAIN cases first). The format carries no sampling rate, so the
caller gives it.

BasicMotions (UEA multivariate archive, Bagnall et al., "The UEA multivariate time series classification archive,
2018", arXiv:1811.00075): four students, smartwatch accelerometer + gyroscope, 10 Hz, 100 samples per case,
4 classes (Standing, Running, Walking, Badminton), 40 + 40 cases. The copy in ``datamodules/data`` comes from sktime
(BSD-3-Clause).
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np

from datamodules.timeseries.schema import Recording, write_recordings

BASICMOTIONS_RATE = 10.0
BASICMOTIONS_CHANNELS = ["acc_x", "acc_y", "acc_z", "gyro_x", "gyro_y", "gyro_z"]
BASICMOTIONS_SOURCE = (
    "BasicMotions, UEA multivariate time series classification archive (Bagnall et al. 2018, arXiv:1811.00075), "
    "www.timeseriesclassification.com; copy shipped with sktime (BSD-3-Clause). Smartwatch accelerometer and "
    "gyroscope, 10 Hz."
)


@dataclass
class TsFile:
    """A parsed ``.ts`` file.

    Attributes:
        problem_name: ``@problemName``.
        class_names: Labels of ``@classLabel true ...`` in header order.
        cases: Per case a (T, D) float64 array (dimensions as columns).
        labels: Per case the class label string.
    """

    problem_name: str
    class_names: list[str]
    cases: list[np.ndarray]
    labels: list[str]


def read_ts(path: str | Path) -> TsFile:
    """Parse a UEA/UCR ``.ts`` file with class labels.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: naming the file, line and what was expected (missing ``@data``, timestamps, ragged dimensions,
            an undeclared class label, a dimension count different from the header).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: .ts file not found")
    header: dict[str, list[str]] = {}
    cases: list[np.ndarray] = []
    labels: list[str] = []
    in_data = False
    with path.open(encoding="utf-8") as f:
        for lineno, raw in enumerate(f, start=1):
            line = raw.strip()
            if not line or line.startswith("#"):
                continue
            if not in_data:
                if not line.startswith("@"):
                    raise ValueError(f"{path}:{lineno}: expected a '@key value' header line before '@data'")
                key, *values = line.split()
                key = key[1:].lower()
                if key == "data":
                    in_data = True
                    _check_header(path, header)
                else:
                    header[key] = values
                continue
            *dims, label = line.split(":")
            if not dims:
                raise ValueError(f"{path}:{lineno}: expected '<dim 0>:...:<dim D-1>:<class label>'")
            try:
                series = [np.array(d.split(","), dtype=np.float64) for d in dims]  # '?' -> error below
            except ValueError as err:
                raise ValueError(
                    f"{path}:{lineno}: non-numeric value ({err}); missing values are not supported"
                ) from err
            if len({len(s) for s in series}) != 1:
                raise ValueError(f"{path}:{lineno}: dimensions have different lengths {[len(s) for s in series]}")
            cases.append(np.stack(series, axis=1))  # (T, D)
            labels.append(label.strip())
    if not in_data:
        raise ValueError(f"{path}: missing '@data' line")
    class_names = header["classlabel"][1:]
    dims_declared = header.get("dimensions", header.get("dimension"))
    for i, (case, label) in enumerate(zip(cases, labels)):
        if label not in class_names:
            raise ValueError(f"{path}: case {i} has class label {label!r}, expected one of {class_names}")
        if dims_declared and case.shape[1] != int(dims_declared[0]):
            raise ValueError(
                f"{path}: case {i} has {case.shape[1]} dimensions, header @dimensions says {dims_declared}"
            )
    if not cases:
        raise ValueError(f"{path}: no cases after '@data'")
    return TsFile(header.get("problemname", [path.stem])[0], class_names, cases, labels)


def read_tsv(path: str | Path) -> TsFile:
    """Parse a UCR archive ``.tsv`` file (univariate): one case per line, the class label first, tab separated.

    Trailing ``NaN`` values (the padding of variable-length series in the UCR 2018 archive) are dropped; a ``NaN``
    inside a series is refused. The class names are the labels found, sorted (numerically when all are numbers);
    :func:`uea_recordings` merges the names of a TRAIN and a TEST file.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: naming the file and line (no values after the label, non-numeric values, missing values).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: .tsv file not found")
    cases: list[np.ndarray] = []
    labels: list[str] = []
    with path.open(encoding="utf-8") as f:
        for lineno, raw in enumerate(f, start=1):
            line = raw.strip()
            if not line:
                continue
            label, *values = line.split("\t")
            if not values:
                raise ValueError(f"{path}:{lineno}: expected '<label>\\t<value>\\t...' (tab separated), got one field")
            try:
                series = np.array(values, dtype=np.float64)
            except ValueError as err:
                raise ValueError(f"{path}:{lineno}: non-numeric value ({err})") from err
            finite = np.flatnonzero(~np.isnan(series))
            if not len(finite) or len(finite) != finite[-1] + 1:
                raise ValueError(f"{path}:{lineno}: missing values (NaN) inside the series are not supported")
            cases.append(series[: finite[-1] + 1, None])  # (T, 1)
            labels.append(_label_name(label.strip()))
    if not cases:
        raise ValueError(f"{path}: no cases")
    return TsFile(path.stem.rsplit("_", 1)[0], _sorted_labels(set(labels)), cases, labels)


def _label_name(token: str) -> str:
    """UCR labels are numbers written as ``1`` or ``1.0``; keep integers as integers."""
    try:
        value = float(token)
    except ValueError:
        return token
    return str(int(value)) if value.is_integer() else token


def _sorted_labels(labels: set[str]) -> list[str]:
    try:
        return sorted(labels, key=float)
    except ValueError:
        return sorted(labels)


def read_cases(path: str | Path) -> TsFile:
    """A ``.ts`` (UEA/sktime) or ``.tsv`` (UCR) file, by its suffix."""
    return read_tsv(path) if Path(path).suffix.lower() == ".tsv" else read_ts(path)


def _check_header(path: Path, header: dict[str, list[str]]) -> None:
    """Refuse headers this reader does not support."""
    if header.get("timestamps", ["false"])[0].lower() == "true":
        raise ValueError(f"{path}: '@timeStamps true' is not supported")
    class_label = header.get("classlabel", [])
    if not class_label or class_label[0].lower() != "true" or len(class_label) < 2:
        raise ValueError(f"{path}: expected '@classLabel true <label> ...' in the header")


def uea_recordings(
    train_path: str | Path, test_path: str | Path | None = None
) -> tuple[list[Recording], list[str], int]:
    """Recordings (one per case) of a TRAIN and optional TEST ``.ts`` file.

    Returns:
        (recordings, class_names, num_dimensions).
    """
    recordings: list[Recording] = []
    files = [(Path(train_path), "train")] + ([(Path(test_path), "test")] if test_path is not None else [])
    parsed = [(path, split, read_cases(path)) for path, split in files]
    class_names: list[str] | None = None
    if all(path.suffix.lower() == ".tsv" for path, _, _ in parsed):  # no header: the labels of both files
        class_names = _sorted_labels({name for _, _, ts in parsed for name in ts.class_names})
        for _, _, ts in parsed:
            ts.class_names = class_names
    num_dims: int | None = None
    for path, split, ts in parsed:
        if class_names is None:
            class_names = ts.class_names
        elif ts.class_names != class_names:
            raise ValueError(f"{path}: @classLabel {ts.class_names} differs from the TRAIN file's {class_names}")
        for case, label in zip(ts.cases, ts.labels):
            if num_dims is None:
                num_dims = case.shape[1]
            elif case.shape[1] != num_dims:
                raise ValueError(f"{path}: case with {case.shape[1]} dimensions, expected {num_dims}")
            subject = len(recordings)
            recordings.append(
                Recording(
                    id=f"{split}_{subject:05d}",
                    samples=case.astype(np.float32),
                    labels=np.full(len(case), class_names.index(label), dtype=np.int64),
                    subject=subject,
                    split=split,
                )
            )
    assert class_names is not None and num_dims is not None  # read_ts refuses empty files
    return recordings, class_names, num_dims


def convert_uea(
    train_path: str | Path,
    out: str | Path,
    *,
    test_path: str | Path | None = None,
    sampling_rate: float,
    channel_names: list[str] | None = None,
    source: str | None = None,
) -> Path:
    """Convert UEA/UCR ``.ts`` files to a ``vidrec.timeseries/1`` file.

    Args:
        train_path: ``<Problem>_TRAIN.ts`` or ``<Problem>_TRAIN.tsv``.
        out: Output ``.h5`` path.
        test_path: ``<Problem>_TEST.ts`` (optional).
        sampling_rate: Hz (the format does not carry it).
        channel_names: One name per dimension; default ``dim_0 ...``.
        source: Citation / licence text.
    """
    recordings, class_names, num_dims = uea_recordings(train_path, test_path)
    names = channel_names if channel_names is not None else [f"dim_{d}" for d in range(num_dims)]
    if len(names) != num_dims:
        raise ValueError(f"{train_path}: channel_names has {len(names)} names, the data has {num_dims} dimensions")
    return write_recordings(
        out, recordings, sampling_rate=sampling_rate, channel_names=names, class_names=class_names, source=source
    )


def basicmotions_paths() -> tuple[Path, Path]:
    """Paths of the embedded ``BasicMotions_TRAIN.ts`` and ``BasicMotions_TEST.ts``."""
    data = resources.files("datamodules") / "data"
    paths = (Path(str(data / "BasicMotions_TRAIN.ts")), Path(str(data / "BasicMotions_TEST.ts")))
    for path in paths:
        if not path.is_file():
            raise FileNotFoundError(f"{path}: embedded BasicMotions file missing from the datamodules package")
    return paths


def convert_basicmotions(out: str | Path) -> Path:
    """Convert the embedded BasicMotions copy (80 recordings, 6 channels, 10 Hz, 4 classes)."""
    train, test = basicmotions_paths()
    return convert_uea(
        train,
        out,
        test_path=test,
        sampling_rate=BASICMOTIONS_RATE,
        channel_names=BASICMOTIONS_CHANNELS,
        source=BASICMOTIONS_SOURCE,
    )
