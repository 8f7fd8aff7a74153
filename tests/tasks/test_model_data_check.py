"""A model that does not fit its data fails at setup with one message naming the file and the key to change."""

from __future__ import annotations

import logging
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from datamodules.timeseries import HDF5WindowDataModule, SplitMode, SplitSettings, WindowSettings
from datamodules.timeseries.converters.uea import convert_basicmotions
from datamodules.timeseries.schema import Recording, write_recordings
from vidrec.cli import main
from vidrec.models import build_model
from vidrec.tasks.compatibility import ModelDataMismatch, check_model_fits_data

ROOT = Path(__file__).resolve().parents[2]
CONFIG = str(ROOT / "configs/har/basicmotions_resnet1d.yaml")


def _data(channels: int = 6, length: int = 64) -> SimpleNamespace:
    return SimpleNamespace(path="data/x.h5", in_channels=channels, input_length=length)


def test_a_fitting_model_passes_and_keeps_its_mode() -> None:
    model = build_model("resnet1d_tiny", in_channels=6, num_classes=4).train()
    check_model_fits_data(model, _data(), 4)
    assert model.training


@pytest.mark.parametrize(
    ("data", "classes", "message"),
    [
        (_data(channels=5), 4, r"data/x.h5: the data has 5 channels, ResNet1D expects 6 .*in_channels: 5"),
        (_data(), 3, r"data/x.h5: the data has 3 classes, ResNet1D outputs 4 .*num_classes: 3"),
        (_data(length=16), 4, r"data/x.h5: windows of 16 samples .* receptive field of ResNet1D \(31 samples\)"),
    ],
    ids=["channels", "classes", "window"],
)
def test_mismatches_are_named(data: SimpleNamespace, classes: int, message: str) -> None:
    with pytest.raises(ModelDataMismatch, match=message):
        check_model_fits_data(build_model("resnet1d_tiny", in_channels=6, num_classes=4), data, classes)


def test_fit_reports_a_channel_mismatch_in_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    convert_basicmotions(tmp_path / "bm.h5")
    argv = ["fit", "-c", CONFIG, "--data.init_args.path", str(tmp_path / "bm.h5")]
    argv += ["--model.model.init_args.in_channels", "5", "--trainer.enable_progress_bar", "false"]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1] == (
        f"{tmp_path / 'bm.h5'}: the data has 6 channels, ResNet1D expects 5 "
        "(set model.model.init_args.in_channels: 6, or use a file with 5 channels)"
    )
    assert not any("Traceback" in line for line in err)


def test_recordings_shorter_than_a_window_are_counted_in_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    rng = np.random.default_rng(0)
    recs = [
        Recording(f"r{i}", rng.standard_normal((n, 2)).astype(np.float32), np.zeros(n, np.int64), i, "train")
        for i, n in enumerate([100, 20, 10, 100])
    ]
    write_recordings(tmp_path / "d.h5", recs, sampling_rate=10.0, channel_names=["a", "b"], class_names=["x"])
    dm = HDF5WindowDataModule(
        str(tmp_path / "d.h5"),
        windows=WindowSettings(window=32, hop=8),
        split=SplitSettings(mode=SplitMode.SUBJECTS, train_subjects=[0, 1, 2, 3]),
    )
    with caplog.at_level(logging.WARNING):
        dm.setup("fit")
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("train split: 2 of 4 recordings are shorter than a window (32 samples)" in w for w in warnings)
