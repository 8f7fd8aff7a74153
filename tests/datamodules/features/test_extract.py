"""`vidrec extract-features` on tiny videos in the UCF101 layout: schema, sampling, quarantine, resume, errors;
and (slow) the whole chain video -> stream checkpoint -> features -> TS-LSTM -> `vidrec test`."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from datamodules.features import FeatureReader
from datamodules.features.extract import _context_indices, sampled_frames
from datamodules.video.synthetic import SyntheticSettings, generate_synthetic_actions
from vidrec.cli import main

ROOT = Path(__file__).resolve().parents[3]


@pytest.fixture(scope="module")
def videos(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """2 classes x 4 videos of 12 frames, 32 x 32, plus one broken file listed in the test split."""
    root = tmp_path_factory.mktemp("ucf")
    generate_synthetic_actions(root, SyntheticSettings(num_classes=2, videos_per_class=4, frames=12, size=32))
    broken = root / "SquareMovingLeft" / "v_SquareMovingLeft_g99_c01.mp4"
    broken.write_bytes(b"not a video")
    with open(root / "ucfTrainTestlist" / "testlist01.txt", "a") as f:
        f.write("SquareMovingLeft/v_SquareMovingLeft_g99_c01.mp4\n")
    return root


def _extract(root: Path, out: Path, *extra: str, status: int = 0) -> None:
    args = ["extract-features", "ucf101", "--root", str(root), "--out", str(out), "--backbone", "resnet18"]
    args += ["--random-init", "--short-side", "32", "--crop-size", "32", "--no-progress", "--threads", "1", *extra]
    assert main(args) == status


def test_sampling_and_context() -> None:
    np.testing.assert_array_equal(sampled_frames(100, 4), [12, 37, 62, 87])  # centres of 4 equal segments
    np.testing.assert_array_equal(sampled_frames(3, 5), [0, 0, 1, 2, 2])  # fewer frames than samples: repeats
    np.testing.assert_array_equal(sampled_frames(4, None), [0, 1, 2, 3])
    np.testing.assert_array_equal(_context_indices(np.array([1, 9]), 3, 4), [[0, 0, 1], [1, 5, 9]])  # edge fill


def test_extract_writes_schema_quarantines_and_resumes(
    videos: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    torch.manual_seed(0)
    out = tmp_path / "feats.h5"
    with pytest.warns(RuntimeWarning, match="skipping unreadable video"):
        _extract(videos, out, "--frames", "5", "--batch-size", "3")
    assert "wrote 8 videos" in capsys.readouterr().out
    reader = FeatureReader(out)
    assert (reader.info.feature_dim, reader.info.dtype, reader.info.sampling) == (
        512,
        "float16",
        {"mode": "uniform", "frames": 5},
    )
    assert reader.info.extractor["name"] == "resnet18" and reader.info.extractor["weights"] is None
    assert reader.info.extractor["settings"]["context_frames"] == 1
    assert reader.info.class_names == ["SquareMovingLeft", "SquareMovingRight"]
    assert [p for p, _ in reader.quarantined] == ["SquareMovingLeft/v_SquareMovingLeft_g99_c01.mp4"]
    feats = list(reader.read())
    assert len(feats) == 8 and {v.split for v in feats} == {"train", "test"}
    assert all(v.features.shape == (5, 512) and v.num_frames == 12 and v.fps == 25.0 for v in feats)
    np.testing.assert_array_equal(feats[0].frame_indices, sampled_frames(12, 5))
    assert np.isfinite(feats[0].features.astype(np.float32)).all() and feats[0].features.std() > 0
    # resume: complete videos are skipped; another extractor is refused
    _extract(videos, out, "--frames", "5", "--batch-size", "3")
    assert "wrote 0 videos, skipped 8" in capsys.readouterr().out
    _extract(videos, out, "--frames", "6", status=2)  # a user error: one line on stderr, status 2
    assert "written by another extractor" in capsys.readouterr().err


def test_every_frame_and_refusals(videos: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "every.h5"
    with pytest.warns(RuntimeWarning):
        _extract(videos, out, "--every-frame", "--dtype", "float32")
    (first, *_) = FeatureReader(out).read()
    assert first.features.shape == (12, 512) and first.features.dtype == np.float32
    np.testing.assert_array_equal(first.frame_indices, np.arange(12))
    with pytest.raises(SystemExit, match="--backbone needs --weights"):
        main(["extract-features", "ucf101", "--root", str(videos), "--out", str(out), "--backbone", "resnet18"])
    assert (
        main(
            [
                "extract-features",
                "ucf101",
                "--root",
                str(videos),
                "--out",
                str(out),
                "--backbone",
                "resnet18",
                "--weights",
                str(tmp_path / "missing.pth"),
            ]
        )
        == 2
    )
    assert "missing.pth does not exist" in capsys.readouterr().err


@pytest.mark.slow
def test_video_to_stream_checkpoint_to_ts_lstm(videos: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The chain with tiny trainings: R(2+1)D stream checkpoint -> per-frame features -> TS-LSTM -> `vidrec test`."""
    monkeypatch.chdir(tmp_path)
    torch.manual_seed(0)
    stream_cfg = str(ROOT / "configs" / "video" / "synthetic_r2plus1d.yaml")
    common = ["--trainer.enable_progress_bar", "false", "--trainer.max_epochs", "1", "--trainer.log_every_n_steps", "1"]
    assert (
        main(
            [
                "fit",
                "-c",
                stream_cfg,
                "--data.init_args.root",
                str(videos),
                "--data.init_args.num_workers",
                "0",
                "--data.init_args.batch_size",
                "4",
                "--data.init_args.clip.frame_stride",
                "1",
                "--data.init_args.transform.crop_size",
                "24",
                "--data.init_args.transform.train_short_side",
                "32",
                "--data.init_args.transform.test_short_side",
                "32",
                "--model.model.init_args.num_classes",
                "2",
                "--model.scheduler.init_args.T_max",
                "1",
                *common,
            ]
        )
        == 0
    )
    (ckpt,) = Path("runs/synthetic_r2plus1d").rglob("last.ckpt")
    feats = tmp_path / "stream_feats.h5"
    with pytest.warns(RuntimeWarning):
        assert (
            main(
                [
                    "extract-features",
                    "ucf101",
                    "--root",
                    str(videos),
                    "--out",
                    str(feats),
                    "--checkpoint",
                    str(ckpt),
                    "--frames",
                    "6",
                    "--short-side",
                    "32",
                    "--crop-size",
                    "24",
                    "--no-progress",
                ]
            )
            == 0
        )
    reader = FeatureReader(feats)
    assert reader.info.extractor["kind"] == "checkpoint" and len(reader.info.extractor["checkpoint_sha256"]) == 64
    assert reader.info.extractor["settings"]["context_frames"] == reader.info.extractor["receptive_field"] == 7
    head_cfg = str(ROOT / "configs" / "video" / "synthetic_ts_lstm.yaml")
    head = [
        "-c",
        head_cfg,
        "--data.init_args.path",
        str(feats),
        "--data.init_args.num_frames",
        "6",
        "--model.model.init_args.num_classes",
        "2",
        *common,
    ]
    assert main(["fit", *head]) == 0
    (head_ckpt,) = Path("runs/synthetic_ts_lstm").rglob("last.ckpt")
    assert main(["test", *head, "--ckpt_path", str(head_ckpt)]) == 0
    (report,) = Path("runs/synthetic_ts_lstm").rglob("test_metrics.json")
    metrics = json.loads(report.read_text())
    assert metrics["test/groups"] == 2.0  # video-level accuracy over the 2 readable test videos
    assert 0.0 <= metrics["test/group_acc"] <= 1.0
