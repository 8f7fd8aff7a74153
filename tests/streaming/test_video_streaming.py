"""Video checkpoints stream through `vidrec evaluate-streaming` and `vidrec stream`: frames read one by one with
PyAV, each streamed clip equal to the offline clip of the same frames. Tiny videos are written with PyAV in tmp_path."""

from __future__ import annotations

import io
import json
from argparse import Namespace
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
import torch

from datamodules.video.dataset import ClipTiming, clip_frame_indices
from datamodules.video.synthetic import SyntheticSettings, generate_synthetic_actions
from datamodules.video.transforms import EvalClipTransform, TransformSettings
from vidrec.cli import main
from vidrec.spec import ChannelNormalization, DeploymentSpec, Modality
from vidrec.streaming.video import FramePreprocessor, FrameSampler, read_frames, videos_of_test_split
from vidrec.tasks import load_checkpoint

pytest.importorskip("av")

CONFIG = """
seed_everything: 0
trainer:
  max_epochs: 1
  enable_progress_bar: false
  enable_model_summary: false
  logger:
    - class_path: lightning.pytorch.loggers.CSVLogger
      init_args: {save_dir: runs, name: tiny_video}
model:
  model:
    class_path: vidrec.models.r2plus1d.R2Plus1d
    init_args:
      num_classes: 2
      temporal_padding: VALID
      stem_temporal_kernel: 1
      stem_channels: [4, 8]
      stages:
        - {blocks: 1, channels: 8, spatial_stride: 1, temporal_stride: 1, temporal_kernels: [3, 1]}
data:
  class_path: datamodules.video.UCF101DataModule
  init_args:
    root: ROOT
    fold: 1
    clip: {frames_per_clip: 4, frame_stride: 2}
    transform: {crop_size: 16, train_short_side: 20, test_short_side: 20, horizontal_flip: false}
    decode: {backend: PYAV, timeout_s: 20.0, scale_in_decoder: false}
    batch_size: 4
    num_workers: 0
    test_clips: 1
    test_crops: 1
"""


def _spec(**overrides: object) -> DeploymentSpec:
    fields: dict = dict(
        modality=Modality.VIDEO,
        window=4,
        hop=1,
        eval_hop=1,
        rate=0.0,
        channels=["R", "G", "B"],
        normalization=ChannelNormalization(np.array([0.4, 0.5, 0.6]), np.array([0.2, 0.25, 0.3])),
        class_names=["a", "b"],
        frame_size=(16, 16),
        short_side=20,
        frame_stride=2,
    )
    fields.update(overrides)
    return DeploymentSpec(**fields)  # type: ignore[arg-type]


@pytest.mark.parametrize("stride, rate, native", [(2, 0.0, 25.0), (1, 10.0, 25.0), (1, 50.0, 25.0)])
def test_frame_sampler_keeps_the_frames_of_offline_clips(stride: int, rate: float, native: float) -> None:
    spec = _spec(frame_stride=stride, rate=rate)
    sampler = FrameSampler(spec, native)
    streamed = [i for i in range(40) for _ in range(sampler.copies(i))]
    timing = ClipTiming(frames_per_clip=len(streamed) // 2, frame_stride=stride, target_fps=rate or None)
    assert streamed[: timing.frames_per_clip] == clip_frame_indices(Fraction(0), timing, 40, native)


def test_a_frame_is_preprocessed_as_in_the_offline_clip() -> None:
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, size=(3, 30, 40, 3), dtype=np.uint8)  # (T, H, W, 3)
    spec = _spec()
    settings = TransformSettings(
        crop_size=16, train_short_side=20, test_short_side=20, mean=(0.4, 0.5, 0.6), std=(0.2, 0.25, 0.3)
    )
    clip = EvalClipTransform(settings)(frames)  # (3, T, 16, 16)
    prepare = FramePreprocessor(spec)
    streamed = torch.stack([prepare(f) for f in frames], dim=1)
    assert torch.equal(streamed, clip)


@pytest.mark.slow
def test_video_checkpoint_streams_like_offline_clips(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    generate_synthetic_actions(
        tmp_path / "videos", SyntheticSettings(num_classes=2, videos_per_class=4, frames=12, size=24)
    )
    config = tmp_path / "tiny.yaml"
    config.write_text(CONFIG.replace("ROOT", str(tmp_path / "videos")))
    main(["fit", "-c", str(config)])
    (run,) = (tmp_path / "runs" / "tiny_video").iterdir()
    ckpt = run / "checkpoints" / "last.ckpt"

    spec = torch.load(ckpt, map_location="cpu", weights_only=True)["vidrec"]["spec"]
    assert spec["modality"] == "video" and spec["window"] == 4 and spec["frame_size"] == [16, 16]
    assert spec["data_source"]["class_path"] == "datamodules.video.datamodule.UCF101DataModule"
    loaded = load_checkpoint(ckpt)
    videos = videos_of_test_split(loaded.require_spec())
    assert len(videos) == 2  # every fourth video of a class is a test video

    main(["evaluate-streaming", "--checkpoint", str(ckpt), "--out", str(tmp_path / "eval")])
    report = json.loads((tmp_path / "eval" / "streaming_eval.json").read_text())
    assert report["videos"] == 2 and report["clips"] == 2 * (6 - 4 + 1)  # 12 frames, stride 2: 6 clip frames
    assert report["max_abs_logit_delta"] < 1e-4 and report["argmax_agreement"] == 1.0
    assert report["offline"] == report["streaming"]

    from vidrec.streaming.command import run_stream

    out = io.StringIO()
    args = Namespace(
        checkpoint=str(ckpt), input=str(videos[0][0]), hop=None, format="json", max_samples=None, max_seconds=None
    )
    args.source, args.backend, args.precision = "stdin", "torch", "fp32"
    summary = run_stream(args, out=out)
    rows = [json.loads(line) for line in out.getvalue().splitlines()]
    assert summary["frames"] == len(list(read_frames(videos[0][0]))) == 12
    assert len(rows) == 3 and [r["frame"] for r in rows] == [6, 8, 10]  # clip frames 0, 2, ..., 10; full from the 4th
    assert {r["class"] for r in rows} <= set(loaded.class_names)


def test_a_file_with_latin1_metadata_streams_like_training_reads_it(tmp_path: Path) -> None:
    """An AVI whose title is Latin-1 (not UTF-8), as old AVI writers stored it: plain `av.open` raised
    UnicodeDecodeError; streaming opens it as training does (`open_container`) and reads every frame in order."""
    from datamodules.video.decoding.fixture_videos import (
        decode_every_frame,
        index_code_frames,
        read_index_code,
        set_latin1_title,
        write_mpeg4_avi,
    )
    from vidrec.streaming.video import _native_fps

    title = "Caf\u00e9 d\u00e9j\u00e0 vu"
    path = set_latin1_title(write_mpeg4_avi(tmp_path / "latin1.avi", index_code_frames(20), title=title), title)
    assert title.encode("latin-1") in path.read_bytes() and title.encode("utf-8") not in path.read_bytes()
    frames = list(read_frames(path))
    assert [f.index for f in frames] == list(range(20)) and _native_fps(path) == pytest.approx(25.0)
    streamed = np.stack([f.rgb for f in frames])  # (T, H, W, 3)
    np.testing.assert_array_equal(read_index_code(streamed), np.arange(20))
    np.testing.assert_array_equal(streamed, decode_every_frame(path))
