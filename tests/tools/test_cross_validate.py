"""tools/cross_validate.py: folds over the training subjects only, variant parsing, one fold run end to end."""

import sys
from pathlib import Path

import numpy as np
import pytest

from datamodules.timeseries.converters.uea import convert_basicmotions
from datamodules.timeseries.schema import Recording, write_recordings
from tests.tools.conftest import ROOT, load_tool


def test_folds_partition_the_training_subjects_and_never_hold_a_test_subject(tmp_path: Path) -> None:
    recordings = [
        Recording(f"s{s}", np.zeros((20, 1), np.float32), np.zeros(20, np.int64), subject=s, split=split)
        for s, split in [(1, "train"), (2, "test"), (3, "train"), (4, "train"), (5, "test"), (6, "train"), (7, "train")]
    ]
    path = tmp_path / "f.h5"
    write_recordings(path, recordings, sampling_rate=50.0, channel_names=["a"], class_names=["c"])
    cv = load_tool("cross_validate")
    folds = cv.training_subject_folds(str(path), 2, seed=0)
    assert sorted(s for fold in folds for s in fold) == [1, 3, 4, 6, 7] and [len(f) for f in folds] == [3, 2]
    assert folds == cv.training_subject_folds(str(path), 2, seed=0)  # deterministic for a seed
    with pytest.raises(ValueError, match="5 training subjects cannot make 6 folds"):
        cv.training_subject_folds(str(path), 6, seed=0)
    assert cv.parse_variant("width 64: --model.model.init_args.width 64") == (
        "width 64",
        ["--model.model.init_args.width", "64"],
    )
    with pytest.raises(ValueError, match="expected 'NAME: --key value"):
        cv.parse_variant("--no-name")


@pytest.mark.slow
def test_one_fold_runs_vidrec_fit_and_reports_validation_metrics(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    convert_basicmotions(tmp_path / "bm.h5")
    monkeypatch.chdir(tmp_path)
    cv = load_tool("cross_validate")
    overrides = ["--data.init_args.path", str(tmp_path / "bm.h5"), "--trainer.max_epochs", "1"]
    argv, sys.argv = sys.argv, sys.argv[:1]
    try:
        metrics = cv.run_fold(
            str(ROOT / "configs/har/basicmotions_resnet1d.yaml"), overrides, [1, 2, 3], tmp_path / "cv"
        )
    finally:
        sys.argv = argv
    assert 0.0 <= metrics["val/acc"] <= 1.0 and "val/f1_macro" in metrics
    # logs and checkpoints of the fold sit in its folder, not in the config's runs/
    assert list((tmp_path / "cv").rglob("metrics.csv")) and list((tmp_path / "cv").rglob("events.out.tfevents.*"))
    assert list((tmp_path / "cv").rglob("*.ckpt")) and not (tmp_path / "runs").exists()


def test_folds_use_every_subject_of_a_file_without_official_split(tmp_path: Path) -> None:
    recordings = [
        Recording(f"s{s}", np.zeros((20, 1), np.float32), np.zeros(20, np.int64), subject=s) for s in range(1, 7)
    ]
    path = tmp_path / "f.h5"
    write_recordings(path, recordings, sampling_rate=50.0, channel_names=["a"], class_names=["c"])
    cv = load_tool("cross_validate")
    folds = cv.training_subject_folds(str(path), 3, seed=0)
    assert sorted(s for fold in folds for s in fold) == [1, 2, 3, 4, 5, 6] and not cv.has_official_split(str(path))
    with pytest.raises(ValueError, match="6 subjects \\(the file has no official split\\) cannot make 7 folds"):
        cv.training_subject_folds(str(path), 7, seed=0)


@pytest.mark.slow
def test_minirocket_fold_on_a_file_without_official_split(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Closed-form fitting through `vidrec fit` (one pass) on a fold of a split-free file."""
    rng = np.random.default_rng(0)
    t = np.arange(200)
    recordings = []
    for s in range(1, 7):
        cls = s % 2
        x = np.sin(t / (2 + 4 * cls))[:, None] + 0.1 * rng.standard_normal((200, 2))
        recordings.append(Recording(f"s{s}", x.astype(np.float32), np.full(200, cls), subject=s))
    path = tmp_path / "f.h5"
    write_recordings(path, recordings, sampling_rate=50.0, channel_names=["a", "b"], class_names=["slow", "fast"])
    monkeypatch.chdir(tmp_path)
    cv = load_tool("cross_validate")
    overrides = [
        "--data.init_args.path",
        str(path),
        "--data.init_args.windows.window",
        "32",
        "--data.init_args.windows.hop",
        "16",
        "--data.init_args.windows.eval_hop",
        "16",
        "--data.init_args.windows.context",
        "24",
        "--model.model.init_args.in_channels",
        "2",
        "--model.model.init_args.num_classes",
        "2",
        "--model.model.init_args.window",
        "32",
        "--model.model.init_args.num_features",
        "336",
    ]
    argv, sys.argv = sys.argv, sys.argv[:1]
    try:
        metrics = cv.run_fold(str(ROOT / "configs/har/hapt_minirocket.yaml"), overrides, [1, 2], tmp_path / "cv", False)
    finally:
        sys.argv = argv
    assert metrics["val/acc"] == 1.0
