"""Tests of the vidrec.timeseries/1 HDF5 schema: round trip and the reader's errors."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pytest

from datamodules.timeseries.schema import (
    SCHEMA,
    Recording,
    TimeSeriesFileError,
    describe,
    read_info,
    read_recordings,
    write_recordings,
)


def _write(path: Path) -> list[Recording]:
    rng = np.random.default_rng(0)
    recordings = [
        Recording(
            "zeta", rng.normal(size=(50, 3)).astype(np.float32), np.array([0] * 25 + [-1] * 25), subject=7, split="test"
        ),
        Recording("alpha", rng.normal(size=(40, 3)).astype(np.float32), np.array([1] * 40), subject=3, split="train"),
        Recording("mid", rng.normal(size=(30, 3)).astype(np.float32), np.array([2] * 30), subject=3),
    ]
    write_recordings(
        path, recordings, sampling_rate=25.0, channel_names=["x", "y", "z"], class_names=["a", "b", "c"], source="me"
    )
    return recordings


def test_round_trip_keeps_values_attrs_and_write_order(tmp_path: Path) -> None:
    path = tmp_path / "ts.h5"
    written = _write(path)
    info, recordings = read_recordings(path)
    assert info.sampling_rate == 25.0
    assert info.channel_names == ["x", "y", "z"] and info.class_names == ["a", "b", "c"]
    assert info.source == "me" and info.num_classes == 3 and info.num_channels == 3
    assert [r.id for r in recordings] == ["zeta", "alpha", "mid"]  # creation order, not alphabetical
    for a, b in zip(written, recordings):
        np.testing.assert_array_equal(a.samples, b.samples)
        np.testing.assert_array_equal(a.labels, b.labels)
        assert (a.subject, a.split) == (b.subject, b.split)
        assert b.samples.dtype == np.float32 and b.labels.dtype == np.int64
    with h5py.File(path) as f:
        assert f.attrs["schema"] == SCHEMA
        assert f["recordings/zeta/samples"].chunks is None  # contiguous layout
    assert read_info(path).recording_ids == ["zeta", "alpha", "mid"]
    line = describe(path)
    assert "3 recordings" in line and "120 samples" in line and "test: 1 rec" in line and "a=25" in line


def test_missing_file_names_path_and_hint(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"nope\.h5.*run this"):
        read_info(tmp_path / "nope.h5", missing_hint=" (run this)")
    with pytest.raises(FileNotFoundError, match=r"nope\.h5"):
        read_recordings(tmp_path / "nope.h5")


@pytest.mark.parametrize("attr", ["schema", "sampling_rate", "channel_names", "class_names"])
def test_missing_root_attribute(tmp_path: Path, attr: str) -> None:
    path = tmp_path / "ts.h5"
    _write(path)
    with h5py.File(path, "a") as f:
        del f.attrs[attr]
    with pytest.raises(TimeSeriesFileError, match=rf"ts\.h5.*'{attr}'"):
        read_recordings(path)


@pytest.mark.parametrize("key", ["samples", "labels"])
def test_missing_dataset(tmp_path: Path, key: str) -> None:
    path = tmp_path / "ts.h5"
    _write(path)
    with h5py.File(path, "a") as f:
        del f[f"recordings/alpha/{key}"]
    with pytest.raises(TimeSeriesFileError, match=rf"ts\.h5: /recordings/alpha: missing required dataset '{key}'"):
        read_recordings(path)


def test_missing_subject_attribute(tmp_path: Path) -> None:
    path = tmp_path / "ts.h5"
    _write(path)
    with h5py.File(path, "a") as f:
        del f["recordings/mid"].attrs["subject"]
    with pytest.raises(TimeSeriesFileError, match=r"ts\.h5: /recordings/mid: missing required attribute 'subject'"):
        read_recordings(path)


def test_nan_names_recording_and_first_index(tmp_path: Path) -> None:
    path = tmp_path / "ts.h5"
    _write(path)
    with h5py.File(path, "a") as f:
        data = f["recordings/alpha/samples"]
        values = data[()]
        values[12, 1] = np.nan
        values[30, 0] = np.inf
        data[...] = values
    with pytest.raises(TimeSeriesFileError, match=r"ts\.h5: /recordings/alpha/samples: .*finite.*t=12, c=1"):
        read_recordings(path)


def test_wrong_channel_count(tmp_path: Path) -> None:
    path = tmp_path / "ts.h5"
    _write(path)
    with h5py.File(path, "a") as f:
        del f["recordings/mid/samples"]
        f["recordings/mid"].create_dataset("samples", data=np.zeros((30, 2), np.float32))
    with pytest.raises(TimeSeriesFileError, match=r"ts\.h5: /recordings/mid/samples: expected 3 channels"):
        read_recordings(path)


@pytest.mark.parametrize("bad", [3, -2])
def test_label_out_of_range(tmp_path: Path, bad: int) -> None:
    path = tmp_path / "ts.h5"
    _write(path)
    with h5py.File(path, "a") as f:
        labels = f["recordings/zeta/labels"][()]
        labels[5] = bad
        f["recordings/zeta/labels"][...] = labels
    with pytest.raises(TimeSeriesFileError, match=rf"ts\.h5: /recordings/zeta/labels: .*\[-1, 3\).*{bad} at index 5"):
        read_recordings(path)


def test_writer_refuses_invalid_recordings(tmp_path: Path) -> None:
    ok: dict[str, Any] = dict(sampling_rate=10.0, channel_names=["x"], class_names=["a"])
    bad_nan = Recording("r", np.array([[np.nan]], np.float32), np.array([0]), subject=0)
    with pytest.raises(TimeSeriesFileError, match="/recordings/r/samples"):
        write_recordings(tmp_path / "a.h5", [bad_nan], **ok)
    bad_split = Recording("r", np.zeros((2, 1), np.float32), np.array([0, 0]), subject=0, split="val")
    with pytest.raises(TimeSeriesFileError, match="'split'"):
        write_recordings(tmp_path / "b.h5", [bad_split], **ok)
    dup = Recording("r", np.zeros((2, 1), np.float32), np.array([0, 0]), subject=0)
    with pytest.raises(TimeSeriesFileError, match="duplicated"):
        write_recordings(tmp_path / "c.h5", [dup, dup], **ok)
