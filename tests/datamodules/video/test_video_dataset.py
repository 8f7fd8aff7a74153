"""Clip sampling, dataset lengths and item shapes, deterministic substitution of unreadable videos."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
import torch

from datamodules.video.dataset import ClipTiming, SamplingMode, VideoClipDataset, clip_frame_indices
from datamodules.video.decoding import QuarantineLog, RobustVideoReader
from datamodules.video.synthetic import write_video
from datamodules.video.transforms import EvalClipTransform, TrainClipTransform, TransformSettings


def _raw(frames: np.ndarray, crop_index: int = 0) -> torch.Tensor:
    """No-op transform: uint8 (T, H, W, 3) -> (3, T, H, W), with the crop index added so the test can see it."""
    return torch.from_numpy(frames).permute(3, 0, 1, 2).long() + 1000 * crop_index


def test_clip_frame_indices_stride_fps_and_short_videos() -> None:
    assert clip_frame_indices(3, ClipTiming(4, 2), num_frames=100, fps=25) == [3, 5, 7, 9]
    assert clip_frame_indices(Fraction(5, 2), ClipTiming(3, 1), num_frames=100, fps=25) == [2, 3, 4]
    # 30 fps resampled to 10 fps: every third frame.
    assert clip_frame_indices(0, ClipTiming(4, target_fps=10), num_frames=100, fps=30) == [0, 3, 6, 9]
    # 25 fps to 10 fps: 2.5 frames apart.
    assert clip_frame_indices(0, ClipTiming(4, target_fps=10), num_frames=100, fps=25) == [0, 2, 5, 7]
    assert clip_frame_indices(0, ClipTiming(4, 3), num_frames=5, fps=25) == [0, 3, 4, 4]  # last frame repeats
    with pytest.raises(ValueError, match="frames_per_clip"):
        ClipTiming(0)


def test_eval_items_are_videos_x_clips_x_crops_with_exact_frames(lossless_video) -> None:
    path, frames = lossless_video  # 20 frames
    videos = [(path, 0), (path, 1)]
    dataset = VideoClipDataset(
        videos, ClipTiming(4, 2), SamplingMode.EVAL, _raw, RobustVideoReader(), clips_per_video=3, crops_per_clip=2
    )
    assert len(dataset) == 2 * 3 * 2
    items = [dataset[i] for i in range(len(dataset))]
    assert [it["group"] for it in items] == [0] * 6 + [1] * 6
    assert [it["target"] for it in items] == [0] * 6 + [1] * 6
    # ConstantClipsPerVideoSampler: clip duration 8 frames, max start 12, starts 0, 4, 8.
    for view, start in zip(range(0, 6, 2), [0, 4, 8]):
        expected = torch.from_numpy(frames[start : start + 8 : 2]).permute(3, 0, 1, 2).long()
        torch.testing.assert_close(items[view]["inputs"], expected)
        torch.testing.assert_close(items[view + 1]["inputs"], expected + 1000)  # second crop
    with pytest.raises(IndexError):
        dataset[len(dataset)]


def test_train_items_one_random_clip_per_video(lossless_video) -> None:
    path, frames = lossless_video
    dataset = VideoClipDataset([(path, 2)] * 3, ClipTiming(5, 3), SamplingMode.TRAIN, _raw, RobustVideoReader())
    assert len(dataset) == 3
    starts = set()
    for _ in range(20):
        clip = dataset[1]["inputs"][0, :, 0, 0] % 256  # channel 0 of pixel (0, 0) holds the frame index
        steps = torch.diff(clip)
        assert torch.all(steps == 3), clip
        starts.add(int(clip[0]))
    assert len(starts) > 1 and max(starts) <= 20 - 13


def test_unreadable_video_is_replaced_by_same_class_video(tmp_path: Path, lossless_video) -> None:
    good, frames = lossless_video
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"\x00" * 100)
    other = write_video(tmp_path / "other.mp4", frames[::-1].copy(), lossless=True)
    videos = [(broken, 1), (good, 0), (other, 1)]
    reader = RobustVideoReader(quarantine_path=tmp_path / "q.tsv")
    dataset = VideoClipDataset(videos, ClipTiming(2), SamplingMode.EVAL, _raw, reader, clips_per_video=1)
    assert dataset.substitutes(0) == [2, 1]
    with pytest.warns(RuntimeWarning, match="skipping unreadable video"):
        item = dataset[0]
    assert item["group"] == 2 and item["target"] == 1  # the next video of the same class
    assert [p for p, _ in QuarantineLog.read(tmp_path / "q.tsv")] == [str(broken)]
    assert dataset[0]["group"] == 2  # deterministic


def test_transforms_shapes_and_three_crop_positions() -> None:
    settings = TransformSettings(crop_size=16, train_short_side=20, test_short_side=20, mean=(0, 0, 0), std=(1, 1, 1))
    frames = np.zeros((4, 20, 40, 3), np.uint8)
    frames[:, :, :, 0] = np.arange(40, dtype=np.uint8)  # red = column
    assert TrainClipTransform(settings)(frames).shape == (3, 4, 16, 16)
    three = EvalClipTransform(settings, num_crops=3)
    left, center, right = (three(frames, i) for i in range(3))
    assert left.shape == (3, 4, 16, 16)
    assert [round(float(x[0, 0, 0, 0]) * 255) for x in (left, center, right)] == [0, 12, 24]
    with pytest.raises(ValueError, match="crop_index"):
        three(frames, 3)
    with pytest.raises(ValueError, match="crop_size"):
        TransformSettings(crop_size=200)


@pytest.mark.parametrize("scale_in_decoder", [False, True])
def test_frames_decoded_at_the_short_side_feed_the_transform_unchanged(lossless_video, scale_in_decoder) -> None:
    from datamodules.video.decoding import DecodeSettings

    path, _ = lossless_video  # 24 x 32
    settings = TransformSettings(crop_size=12, train_short_side=16, test_short_side=16)
    transform = EvalClipTransform(settings, num_crops=3)
    timing = ClipTiming(4, 2)

    def dataset(short_side: int | None) -> VideoClipDataset:
        reader = RobustVideoReader(DecodeSettings(scale_in_decoder=scale_in_decoder))
        return VideoClipDataset([(path, 0)], timing, SamplingMode.EVAL, transform, reader, 2, 3, short_side=short_side)

    scaled, native = dataset(16), dataset(None)
    for index in range(len(native)):
        a, b = scaled[index]["inputs"], native[index]["inputs"]
        assert a.shape == b.shape == (3, 4, 12, 12)
        if scale_in_decoder:  # swscale's bilinear vs torch's on random-noise frames at 1.5x: measured ~0.5 levels
            assert (a - b).abs().mean() < 1.0 / 255 / min(settings.std)  # under one intensity level on average
        else:
            torch.testing.assert_close(a, b, rtol=0, atol=0)
