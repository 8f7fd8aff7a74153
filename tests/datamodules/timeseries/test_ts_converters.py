"""Tests of the time-series converters on tiny files in the official layouts, the embedded BasicMotions and HAPT."""

from __future__ import annotations

import time
import zipfile
from pathlib import Path

import numpy as np
import pytest

from datamodules.timeseries.converters.command import main as data_main
from datamodules.timeseries.converters.generic import GenericFormat, convert_generic
from datamodules.timeseries.converters.hapt import UCI_TEST_SUBJECTS, convert_hapt
from datamodules.timeseries.converters.uci_har import UCIHARChannels, convert_uci_har
from datamodules.timeseries.converters.uea import convert_basicmotions, convert_uea, read_ts
from datamodules.timeseries.schema import read_recordings

UCI_SIGNALS = ["body_acc", "body_gyro", "total_acc"]


def _fake_uci_har(root: Path, rng: np.random.Generator) -> dict[str, list[tuple[int, np.ndarray, np.ndarray]]]:
    """Write a tiny 'UCI HAR Dataset' tree; return per split the true (subject, samples (T, 9), labels (T,)) runs."""
    base = root / "UCI HAR Dataset"
    base.mkdir(parents=True)
    (base / "activity_labels.txt").write_text("1 WALKING\n2 SITTING\n3 LAYING\n")
    # per split: runs of (subject, number of windows, per-window labels)
    layout = {"train": [(1, 3, [0, 0, 1]), (1, 2, [2, 2]), (5, 1, [1])], "test": [(2, 4, [1, 1, 1, 0])]}
    truth: dict[str, list[tuple[int, np.ndarray, np.ndarray]]] = {}
    for split, runs in layout.items():
        windows, subjects, labels = [], [], []
        truth[split] = []
        for subject, n, window_labels in runs:
            signal = rng.normal(size=(64 * (n + 1), 9)).astype(np.float32)  # one continuous run
            sample_labels = np.repeat(window_labels[0], 128).tolist()
            for i in range(n):
                windows.append(signal[64 * i : 64 * i + 128])  # (128, 9), 50% overlap
                subjects.append(subject)
                labels.append(window_labels[i] + 1)
                if i > 0:
                    sample_labels += [window_labels[i]] * 64
            truth[split].append((subject, signal, np.array(sample_labels)))
        (base / split / "Inertial Signals").mkdir(parents=True)
        np.savetxt(base / split / f"subject_{split}.txt", subjects, fmt="%d")
        np.savetxt(base / split / f"y_{split}.txt", labels, fmt="%d")
        stacked = np.stack(windows)  # (N, 128, 9)
        for s, signal_name in enumerate(UCI_SIGNALS):
            for a, axis in enumerate("xyz"):
                np.savetxt(
                    base / split / "Inertial Signals" / f"{signal_name}_{axis}_{split}.txt",
                    stacked[:, :, 3 * s + a],
                    fmt="%.9e",
                )
    return truth


def _check_uci(out: Path, truth: dict[str, list[tuple[int, np.ndarray, np.ndarray]]], columns: list[int]) -> None:
    info, recordings = read_recordings(out)
    assert info.class_names == ["WALKING", "SITTING", "LAYING"] and info.sampling_rate == 50.0
    expected = [(split, *run) for split in ("train", "test") for run in truth[split]]
    assert len(recordings) == len(expected) == 4
    for rec, (split, subject, signal, labels) in zip(recordings, expected):
        assert (rec.split, rec.subject) == (split, subject)
        np.testing.assert_array_equal(rec.samples, signal[:, columns])
        np.testing.assert_array_equal(rec.labels, labels)


def test_uci_har_directory_rebuilds_continuous_recordings(tmp_path: Path) -> None:
    truth = _fake_uci_har(tmp_path / "src", np.random.default_rng(0))
    out = convert_uci_har(tmp_path / "src", tmp_path / "uci.h5")
    _check_uci(out, truth, list(range(9)))
    info, _ = read_recordings(out)
    assert info.channel_names[:3] == ["body_acc_x", "body_acc_y", "body_acc_z"]


def test_uci_har_zip_and_six_channels(tmp_path: Path) -> None:
    truth = _fake_uci_har(tmp_path / "src", np.random.default_rng(1))
    archive = tmp_path / "UCI HAR Dataset.zip"
    with zipfile.ZipFile(archive, "w") as z:
        for path in sorted((tmp_path / "src").rglob("*.txt")):
            z.write(path, path.relative_to(tmp_path / "src").as_posix())
    out = convert_uci_har(archive, tmp_path / "uci6.h5", channels=UCIHARChannels.TOTAL_ACC_GYRO)
    _check_uci(out, truth, [6, 7, 8, 3, 4, 5])  # total_acc xyz, body_gyro xyz
    assert read_recordings(out)[0].channel_names == ["total_acc_x", "total_acc_y", "total_acc_z"] + [
        "body_gyro_x",
        "body_gyro_y",
        "body_gyro_z",
    ]


def test_uci_har_missing_file_is_named(tmp_path: Path) -> None:
    _fake_uci_har(tmp_path / "src", np.random.default_rng(2))
    (tmp_path / "src/UCI HAR Dataset/test/y_test.txt").unlink()
    with pytest.raises(FileNotFoundError, match="y_test.txt"):
        convert_uci_har(tmp_path / "src", tmp_path / "uci.h5")


TS_TEXT = """# a comment
@problemName Tiny
@timeStamps false
@missing false
@univariate false
@dimensions 2
@equalLength false
@classLabel true up down
@data
1,2,3:4,5,6:down
0.5,1.5:2.5,3.5:up
"""


def test_uea_ts_files(tmp_path: Path) -> None:
    (tmp_path / "Tiny_TRAIN.ts").write_text(TS_TEXT)
    (tmp_path / "Tiny_TEST.ts").write_text(TS_TEXT.replace("1,2,3:4,5,6:down\n", ""))
    ts = read_ts(tmp_path / "Tiny_TRAIN.ts")
    assert ts.problem_name == "Tiny" and ts.class_names == ["up", "down"] and ts.labels == ["down", "up"]
    out = convert_uea(
        tmp_path / "Tiny_TRAIN.ts", tmp_path / "tiny.h5", test_path=tmp_path / "Tiny_TEST.ts", sampling_rate=4.0
    )
    info, recs = read_recordings(out)
    assert info.channel_names == ["dim_0", "dim_1"] and info.sampling_rate == 4.0
    assert [(r.split, r.subject) for r in recs] == [("train", 0), ("train", 1), ("test", 2)]
    np.testing.assert_array_equal(recs[0].samples, [[1, 4], [2, 5], [3, 6]])
    np.testing.assert_array_equal(recs[0].labels, [1, 1, 1])
    np.testing.assert_array_equal(recs[1].labels, [0, 0])


def test_uea_bad_label_names_file(tmp_path: Path) -> None:
    (tmp_path / "bad.ts").write_text(TS_TEXT.replace(":up\n", ":sideways\n"))
    with pytest.raises(ValueError, match=r"bad\.ts: case 1 has class label 'sideways'"):
        read_ts(tmp_path / "bad.ts")


def test_embedded_basicmotions(tmp_path: Path) -> None:
    info, recs = read_recordings(convert_basicmotions(tmp_path / "bm.h5"))
    assert len(recs) == 80 and info.num_channels == 6 and info.num_classes == 4 and info.sampling_rate == 10.0
    assert info.class_names == ["Standing", "Running", "Walking", "Badminton"]
    assert sum(r.split == "train" for r in recs) == 40 and sum(r.split == "test" for r in recs) == 40
    assert all(r.samples.shape == (100, 6) for r in recs)
    assert np.bincount([int(r.labels[0]) for r in recs]).tolist() == [20, 20, 20, 20]
    assert "UEA" in (info.source or "")


def test_generic_csv_with_names_and_subject_pattern(tmp_path: Path) -> None:
    src = tmp_path / "csv"
    src.mkdir()
    (src / "subj3_a.csv").write_text("t,ax,ay,activity\n0,1.0,2.0,walk\n1,1.5,2.5,walk\n2,3.0,4.0,\n3,5,6,sit\n")
    (src / "subj8_b.csv").write_text("t,ax,ay,activity\n0,7,8,sit\n1,9,10,sit\n")
    fmt = GenericFormat(label_column="activity", channels=["ax", "ay"], subject_pattern=r"subj(\d+)")
    info, recs = read_recordings(convert_generic(src, tmp_path / "g.h5", sampling_rate=20.0, fmt=fmt))
    assert info.class_names == ["sit", "walk"] and info.channel_names == ["ax", "ay"]
    assert [(r.id, r.subject) for r in recs] == [("subj3_a", 3), ("subj8_b", 8)]
    np.testing.assert_array_equal(recs[0].samples, [[1, 2], [1.5, 2.5], [3, 4], [5, 6]])
    np.testing.assert_array_equal(recs[0].labels, [1, 1, -1, 0])


def test_generic_csv_subject_column_and_int_labels(tmp_path: Path) -> None:
    src = tmp_path / "csv"
    src.mkdir()
    (src / "a.csv").write_text("x,label,who\n0.1,0,4\n0.2,2,4\n0.3,-1,4\n")
    fmt = GenericFormat(subject_column="who", class_names=["a", "b", "c"])
    info, recs = read_recordings(convert_generic(src, tmp_path / "g.h5", sampling_rate=1.0, fmt=fmt))
    assert info.channel_names == ["x"] and recs[0].subject == 4
    np.testing.assert_array_equal(recs[0].labels, [0, 2, -1])
    (src / "b.csv").write_text("x,label,who\n0.1,7,5\n")
    with pytest.raises(ValueError, match=r"b\.csv: label '7' outside"):
        convert_generic(src, tmp_path / "g2.h5", sampling_rate=1.0, fmt=fmt)


def test_generic_npz(tmp_path: Path) -> None:
    src = tmp_path / "npz"
    src.mkdir()
    rng = np.random.default_rng(0)
    x0, x1 = rng.normal(size=(10, 3)), rng.normal(size=(6, 3))
    np.savez(src / "r0.npz", samples=x0, labels=np.array([0] * 5 + [1] * 5), subject=np.array(11))
    np.savez(src / "r1.npz", samples=x1, labels=np.array([1] * 6))
    info, recs = read_recordings(convert_generic(src, tmp_path / "n.h5", sampling_rate=100.0))
    assert info.class_names == ["0", "1"] and info.channel_names == ["ch0", "ch1", "ch2"]
    assert [r.subject for r in recs] == [11, 1]  # second file: its index
    np.testing.assert_allclose(recs[0].samples, x0.astype(np.float32))
    np.testing.assert_array_equal(recs[1].labels, [1] * 6)


def test_command_standalone_prints_summary(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data_main(["basicmotions", "--out", str(tmp_path / "bm.h5")])
    line = capsys.readouterr().out
    assert "80 recordings" in line and "8000 samples" in line and "train: 40 rec" in line and "test: 40 rec" in line
    assert (tmp_path / "bm.h5").is_file()


@pytest.mark.slow
def test_hapt_real_installed_file(tmp_path: Path) -> None:
    start = time.perf_counter()
    out = convert_hapt(tmp_path / "hapt.h5")
    assert time.perf_counter() - start < 60
    info, recs = read_recordings(out)
    assert len({r.subject for r in recs}) == 30 and len(recs) == 61
    assert sum(len(r.labels) for r in recs) == 1_122_772
    assert info.num_classes == 6 and info.sampling_rate == 50.0 and info.num_channels == 6
    assert {r.subject for r in recs if r.split == "test"} == set(UCI_TEST_SUBJECTS)
    assert all(r.split == "train" for r in recs if r.subject not in UCI_TEST_SUBJECTS)
    labels = np.concatenate([r.labels for r in recs])
    assert labels.min() == -1 and labels.max() == 5
    assert np.bincount(labels[labels >= 0]).tolist() == [122091, 116707, 107961, 126677, 138105, 136865]


def test_ucr_tsv_files_label_first_and_trailing_nan(tmp_path: Path) -> None:
    (tmp_path / "P_TRAIN.tsv").write_text("2\t0.5\t1.0\t1.5\n1.0\t3\t4\tNaN\n")
    (tmp_path / "P_TEST.tsv").write_text("3\t7\t8\t9\n")
    data_main(
        [
            "uea",
            str(tmp_path / "P_TRAIN.tsv"),
            "--test",
            str(tmp_path / "P_TEST.tsv"),
            "--sampling-rate",
            "5",
            "--out",
            str(tmp_path / "p.h5"),
        ]
    )
    info, recs = read_recordings(tmp_path / "p.h5")
    assert info.class_names == ["1", "2", "3"] and info.channel_names == ["dim_0"]  # both files' labels, sorted
    assert [(r.split, len(r.samples), int(r.labels[0])) for r in recs] == [
        ("train", 3, 1),
        ("train", 2, 0),
        ("test", 3, 2),
    ]
    np.testing.assert_array_equal(recs[1].samples[:, 0], [3, 4])  # the NaN padding is dropped
    (tmp_path / "bad.tsv").write_text("1\t0.5\tNaN\t1.5\n")
    with pytest.raises(ValueError, match=r"bad\.tsv:1: missing values"):
        convert_uea(tmp_path / "bad.tsv", tmp_path / "b.h5", sampling_rate=1.0)


def test_generic_split_column_and_npz_split(tmp_path: Path) -> None:
    src = tmp_path / "csv"
    src.mkdir()
    (src / "a.csv").write_text("x,label,who,part\n0.1,0,1,train\n0.2,1,1,train\n")
    (src / "b.csv").write_text("x,label,who,part\n0.3,1,2,test\n")
    fmt = GenericFormat(subject_column="who", split_column="part")
    info, recs = read_recordings(convert_generic(src, tmp_path / "g.h5", sampling_rate=1.0, fmt=fmt))
    assert info.channel_names == ["x"] and [(r.subject, r.split) for r in recs] == [(1, "train"), (2, "test")]
    (src / "c.csv").write_text("x,label,who,part\n0.3,1,3,holdout\n")
    with pytest.raises(ValueError, match=r"c\.csv: split 'holdout': expected 'train' or 'test'"):
        convert_generic(src, tmp_path / "g2.h5", sampling_rate=1.0, fmt=fmt)
    npz = tmp_path / "npz"
    npz.mkdir()
    np.savez(npz / "r0.npz", samples=np.zeros((4, 2)), labels=np.zeros(4, int), split=np.array("test"))
    _, recs = read_recordings(convert_generic(npz, tmp_path / "n.h5", sampling_rate=1.0))
    assert recs[0].split == "test"
