"""Video clip transforms built on ``torchvision.transforms.v2`` (pytorchvideo.transforms does not import here).

Decoded clips arrive as uint8 ``(T, H, W, 3)``; the transforms return float ``(C, T, H, W)`` normalised with the
configured mean/std (defaults: the Kinetics-400 statistics used by torchvision's video models).

* train: short side to ``train_short_side`` -> ``RandomResizedCrop(crop_size, crop_scale)`` -> horizontal flip
* test: short side to ``test_short_side`` -> crop ``crop_index`` of ``num_crops`` evenly spaced along the long side
  (1 = center crop, 3 = the left/center/right "three-crop" of multi-view testing)

The datamodule has the reader return frames already at the short side (``VideoClipDataset(short_side=...)``); the
resize here then leaves them untouched (torchvision returns a frame of the requested size as is), so the transforms
also take native-size frames unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor
from torchvision import tv_tensors
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as F

from vidrec.spec import ChannelNormalization

__all__ = ["KINETICS_MEAN", "KINETICS_STD", "TransformSettings", "TrainClipTransform", "EvalClipTransform"]

# Statistics of Kinetics-400 frames in [0, 1], as torchvision.models.video weights expect.
KINETICS_MEAN = (0.43216, 0.394666, 0.37645)
KINETICS_STD = (0.22803, 0.22145, 0.216989)


@dataclass
class TransformSettings:
    """Spatial preprocessing of clips.

    Attributes:
        crop_size: side of the square crop fed to the model.
        train_short_side: short side after resizing, before the random crop (training).
        test_short_side: short side after resizing, before the fixed crops (validation and test).
        crop_scale: area range of RandomResizedCrop, as fractions of the resized frame.
        horizontal_flip: flip training clips with probability 0.5.
        mean: per-channel mean of frames in [0, 1].
        std: per-channel standard deviation of frames in [0, 1].
    """

    crop_size: int = 112
    train_short_side: int = 128
    test_short_side: int = 128
    crop_scale: tuple[float, float] = (0.4, 1.0)
    horizontal_flip: bool = True
    mean: tuple[float, float, float] = KINETICS_MEAN
    std: tuple[float, float, float] = KINETICS_STD

    def __post_init__(self) -> None:
        if self.crop_size > min(self.train_short_side, self.test_short_side):
            raise ValueError(
                f"crop_size {self.crop_size} exceeds a short side (train {self.train_short_side}, "
                f"test {self.test_short_side}); expected crop_size <= both"
            )
        if len(self.mean) != 3 or len(self.std) != 3:
            raise ValueError(f"mean and std need 3 values (RGB), got {self.mean} and {self.std}")


def _to_video(frames: np.ndarray | Tensor) -> tv_tensors.Video:
    clip = torch.as_tensor(frames)  # (T, H, W, 3) uint8
    if clip.ndim != 4 or clip.shape[-1] != 3:
        raise ValueError(f"expected frames shaped (T, H, W, 3), got {tuple(clip.shape)}")
    return tv_tensors.Video(clip.permute(0, 3, 1, 2))  # (T, 3, H, W)


def _finish(video: Tensor, mean: tuple[float, ...], std: tuple[float, ...]) -> Tensor:
    video = F.to_dtype(video, torch.float32, scale=True).as_subclass(Tensor)  # (T, 3, H, W) in [0, 1]
    video = ChannelNormalization(np.asarray(mean), np.asarray(std)).apply(video, channel_axis=1)
    return video.permute(1, 0, 2, 3).contiguous()  # (T, 3, H, W) -> (3, T, H, W)


class TrainClipTransform:
    """Random spatial augmentation of a training clip (the same crop and flip for every frame)."""

    def __init__(self, settings: TransformSettings) -> None:
        self.settings = settings
        steps: list[v2.Transform] = [
            v2.Resize(settings.train_short_side, antialias=True),
            v2.RandomResizedCrop(settings.crop_size, scale=settings.crop_scale, antialias=True),
        ]
        if settings.horizontal_flip:
            steps.append(v2.RandomHorizontalFlip())
        self._spatial = v2.Compose(steps)

    def __call__(self, frames: np.ndarray | Tensor) -> Tensor:
        """uint8 (T, H, W, 3) -> float (3, T, crop, crop)."""
        video = self._spatial(_to_video(frames))  # (T, 3, crop, crop)
        return _finish(video, self.settings.mean, self.settings.std)


class EvalClipTransform:
    """Deterministic resize and crop ``crop_index`` of ``num_crops`` evenly spaced along the long side."""

    def __init__(self, settings: TransformSettings, num_crops: int = 1) -> None:
        if num_crops < 1:
            raise ValueError(f"num_crops must be >= 1, got {num_crops}")
        self.settings = settings
        self.num_crops = num_crops

    def __call__(self, frames: np.ndarray | Tensor, crop_index: int = 0) -> Tensor:
        """uint8 (T, H, W, 3) -> float (3, T, crop, crop)."""
        if not 0 <= crop_index < self.num_crops:
            raise ValueError(f"crop_index {crop_index} outside 0..{self.num_crops - 1}")
        size = self.settings.crop_size
        video = F.resize(_to_video(frames), [self.settings.test_short_side], antialias=True)  # (T, 3, H', W')
        height, width = video.shape[-2:]
        top, left = (height - size) // 2, (width - size) // 2
        if self.num_crops > 1:
            # Spread the crops from one end of the long side to the other (SlowFast's spatial "three-crop").
            offset = round(crop_index * (max(height, width) - size) / (self.num_crops - 1))
            if width >= height:
                left = offset
            else:
                top = offset
        video = F.crop(video, top, left, size, size)  # (T, 3, size, size)
        return _finish(video, self.settings.mean, self.settings.std)
