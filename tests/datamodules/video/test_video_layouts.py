"""Annotation parsers on tiny fake trees in the official layouts."""

from __future__ import annotations

from pathlib import Path

import pytest

from datamodules.video.layouts import (
    AnnotationError,
    Split,
    parse_class_folders,
    parse_hmdb51,
    parse_kinetics,
    parse_ucf101,
)


def _ucf_tree(root: Path) -> Path:
    notes = root / "ucfTrainTestlist"
    notes.mkdir(parents=True)
    (notes / "classInd.txt").write_text("1 ApplyEyeMakeup\n2 HandstandPushups\n")
    (notes / "trainlist01.txt").write_text(
        "ApplyEyeMakeup/v_ApplyEyeMakeup_g08_c01.avi 1\nHandstandPushups/v_HandStandPushups_g08_c01.avi 2\n"
    )
    (notes / "testlist01.txt").write_text("ApplyEyeMakeup/v_ApplyEyeMakeup_g01_c01.avi\n\n")
    return notes


def test_ucf101_train_and_test_lists(tmp_path: Path) -> None:
    notes = _ucf_tree(tmp_path)
    train = parse_ucf101(tmp_path, notes, Split.TRAIN, fold=1)
    assert train.class_names == ["ApplyEyeMakeup", "HandstandPushups"]
    assert train.items == [
        (tmp_path / "ApplyEyeMakeup/v_ApplyEyeMakeup_g08_c01.avi", 0),
        (tmp_path / "HandstandPushups/v_HandStandPushups_g08_c01.avi", 1),
    ]
    test = parse_ucf101(tmp_path, notes, Split.TEST, fold=1)
    assert test.items == [(tmp_path / "ApplyEyeMakeup/v_ApplyEyeMakeup_g01_c01.avi", 0)]


def test_ucf101_errors_name_file_and_line(tmp_path: Path) -> None:
    notes = _ucf_tree(tmp_path)
    (notes / "trainlist02.txt").write_text("ApplyEyeMakeup/v_a.avi 1\nApplyEyeMakeup/v_b.avi 2\n")
    with pytest.raises(AnnotationError, match=r"trainlist02\.txt:2: label '2' does not match"):
        parse_ucf101(tmp_path, notes, Split.TRAIN, fold=2)
    (notes / "testlist03.txt").write_text("Unknown/v_c.avi\n")
    with pytest.raises(AnnotationError, match=r"testlist03\.txt:1: class folder 'Unknown'"):
        parse_ucf101(tmp_path, notes, Split.TEST, fold=3)
    (notes / "classInd.txt").write_text("1 A\nthree B\n")
    with pytest.raises(AnnotationError, match=r"classInd\.txt:2"):
        parse_ucf101(tmp_path, notes, Split.TRAIN)


def test_hmdb51_split_codes(tmp_path: Path) -> None:
    notes = tmp_path / "splits"
    notes.mkdir()
    (notes / "walk_test_split1.txt").write_text("w1.avi 1 \nw2.avi 2 \nw3.avi 0 \n")
    (notes / "brush_hair_test_split1.txt").write_text("b1.avi 2\nb2.avi 1\n")
    train = parse_hmdb51(tmp_path, notes, Split.TRAIN, fold=1)
    assert train.class_names == ["brush_hair", "walk"]
    assert train.items == [(tmp_path / "brush_hair/b2.avi", 0), (tmp_path / "walk/w1.avi", 1)]
    test = parse_hmdb51(tmp_path, notes, Split.TEST, fold=1)
    assert test.items == [(tmp_path / "brush_hair/b1.avi", 0), (tmp_path / "walk/w2.avi", 1)]
    (notes / "walk_test_split2.txt").write_text("w1.avi 1\nw2.avi 7\n")
    with pytest.raises(AnnotationError, match=r"walk_test_split2\.txt:2"):
        parse_hmdb51(tmp_path, notes, Split.TRAIN, fold=2)


def test_kinetics_csv_with_and_without_class_folders_and_missing_clips(tmp_path: Path) -> None:
    notes = tmp_path / "annotations"
    notes.mkdir()
    header = "label,youtube_id,time_start,time_end,split\n"
    (notes / "train.csv").write_text(header + "abseiling,aaa,14,24,train\nzumba,bbb,0,10,train\nzumba,ccc,5,15,train\n")
    (notes / "validate.csv").write_text(header + "zumba,ddd,3,13,val\n")
    (tmp_path / "train/abseiling").mkdir(parents=True)
    (tmp_path / "train/abseiling/aaa_000014_000024.mp4").write_bytes(b"x")
    (tmp_path / "train/bbb_000000_000010.mp4").write_bytes(b"x")  # no class folder
    (tmp_path / "val").mkdir()
    (tmp_path / "val/ddd_000003_000013.mp4").write_bytes(b"x")
    train = parse_kinetics(tmp_path, notes, Split.TRAIN)
    assert train.class_names == ["abseiling", "zumba"]
    assert train.items == [
        (tmp_path / "train/abseiling/aaa_000014_000024.mp4", 0),
        (tmp_path / "train/bbb_000000_000010.mp4", 1),
    ]
    assert train.missing == 1 and train.missing_examples == ["ccc_000005_000015"]
    assert parse_kinetics(tmp_path, notes, Split.VAL).items == [(tmp_path / "val/ddd_000003_000013.mp4", 1)]
    (notes / "validate.csv").write_text(header + "zumba,ddd,3,13,val\nzumba,eee,x,13,val\n")
    with pytest.raises(AnnotationError, match=r"validate\.csv:3: time_start"):
        parse_kinetics(tmp_path, notes, Split.VAL)
    (notes / "validate.csv").write_text("youtube_id,time_start,time_end\nddd,3,13\n")
    with pytest.raises(AnnotationError, match=r"validate\.csv:1: missing column"):
        parse_kinetics(tmp_path, notes, Split.VAL)


def test_class_folders(tmp_path: Path) -> None:
    for split, name in [("train", "jump"), ("train", "run"), ("test", "run")]:
        (tmp_path / split / name).mkdir(parents=True)
        (tmp_path / split / name / "a.mp4").write_bytes(b"x")
    (tmp_path / "train/run/readme.txt").write_text("not a video")
    train = parse_class_folders(tmp_path, Split.TRAIN)
    assert train.class_names == ["jump", "run"]
    assert train.items == [(tmp_path / "train/jump/a.mp4", 0), (tmp_path / "train/run/a.mp4", 1)]
    assert parse_class_folders(tmp_path, Split.TEST).items == [(tmp_path / "test/run/a.mp4", 1)]
    with pytest.raises(AnnotationError, match="class-folder split not found"):
        parse_class_folders(tmp_path, Split.VAL)
