"""Spatial transforms of two-stream inputs: RGB frames ``(K, 3, H, W)`` and flow stacks ``(K, 2L, H, W)``.

What is correct for flow and not for images (Simonyan & Zisserman, 2014; Wang et al., TSN, 2016):

* **One crop for the whole stack**, and in BOTH mode the same relative crop and flip for RGB and flow.
* **A horizontal flip negates x**: the mirrored motion goes the other way. Channels ``0, 2, 4, ...`` are x.
* **Resizing scales the displacements**: a crop of ``(h, w)`` resized to ``(S, S)`` multiplies x by ``S / w`` and y by
  ``S / h`` (TSN's multi-scale crops with aspect jitter change the two differently).
* Flow arrives as uint8 with the schema's fixed bound and leaves as float ``v / bound`` (``[-1, 1]``, 0 = no motion);
  ``FlowMean.FIELD`` also subtracts each field's mean x and y, the papers' compensation of camera motion.

Training: TSN's multi-scale crop (side = short side x a scale drawn per axis from ``scales``, at a random position),
resized to ``crop_size``, flipped with probability 0.5. Evaluation: 1 crop (centre), 3 (along the long side) or 10
(four corners and the centre, and their mirror images: the papers' ten-crop).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor
from torchvision.transforms.v2 import functional as TF

__all__ = ["IMAGENET_MEAN", "IMAGENET_STD", "CropBox", "FlowMean", "FrameTransformSettings", "crop_boxes"]

IMAGENET_MEAN = (0.485, 0.456, 0.406)  # the statistics torchvision's ImageNet weights expect
IMAGENET_STD = (0.229, 0.224, 0.225)


class FlowMean(enum.Enum):
    """Mean subtraction of flow fields: NONE (128 is zero motion already) or FIELD (each field's own mean x, y)."""

    NONE = "none"
    FIELD = "field"


@dataclass
class FrameTransformSettings:
    """Spatial preprocessing shared by the two streams.

    Attributes:
        crop_size: side of the square fed to the networks (224 in the papers).
        short_side: RGB frames are resized to this short side before cropping; flow keeps its stored size (the
            extractor's ``short_side``, 256 by default).
        scales: TSN multi-scale crop: crop side = short side x a scale drawn per axis (training).
        horizontal_flip: flip training inputs with probability 0.5 (flow: x negated).
        mean: RGB mean of frames in [0, 1] (ImageNet).
        std: RGB standard deviation.
        flow_mean: mean subtraction of flow fields.
    """

    crop_size: int = 224
    short_side: int = 256
    scales: tuple[float, ...] = (1.0, 0.875, 0.75, 0.66)
    horizontal_flip: bool = True
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    flow_mean: FlowMean = FlowMean.NONE

    def __post_init__(self) -> None:
        if isinstance(self.flow_mean, str):
            self.flow_mean = FlowMean(self.flow_mean)
        if self.crop_size > self.short_side:
            raise ValueError(f"crop_size {self.crop_size} exceeds short_side {self.short_side}")
        if not self.scales or not all(0 < s <= 1 for s in self.scales):
            raise ValueError(f"scales must be non-empty and in (0, 1], got {self.scales}")


@dataclass(frozen=True)
class CropBox:
    """A crop in relative coordinates (fractions of height and width) and whether to mirror it."""

    top: float
    left: float
    height: float
    width: float
    flip: bool = False

    def pixels(self, height: int, width: int) -> tuple[int, int, int, int]:
        """``(top, left, h, w)`` in pixels of an image ``(height, width)``."""
        h, w = max(round(self.height * height), 1), max(round(self.width * width), 1)
        top = min(round(self.top * height), height - h)
        left = min(round(self.left * width), width - w)
        return top, left, h, w


def random_crop_box(settings: FrameTransformSettings, height: int, width: int, rng: np.random.Generator) -> CropBox:
    """TSN's multi-scale crop with aspect jitter and a random flip, relative to an image ``(height, width)``."""
    short = min(height, width)
    ch, cw = (short * float(rng.choice(settings.scales)) for _ in range(2))
    top, left = rng.uniform(0, height - ch), rng.uniform(0, width - cw)
    flip = bool(settings.horizontal_flip and rng.random() < 0.5)
    return CropBox(top / height, left / width, ch / height, cw / width, flip)


def crop_boxes(settings: FrameTransformSettings, height: int, width: int, num_crops: int) -> list[CropBox]:
    """The evaluation crops of an image ``(height, width)``: 1 (centre), 3 (along the long side) or 10."""
    side = settings.crop_size / settings.short_side * min(height, width)  # the crop at the resized scale
    rh, rw = side / height, side / width

    def at(top: float, left: float, flip: bool = False) -> CropBox:
        return CropBox(top * (1 - rh), left * (1 - rw), rh, rw, flip)

    if num_crops == 1:
        return [at(0.5, 0.5)]
    if num_crops == 3:
        return [at(0.5, f) if width >= height else at(f, 0.5) for f in (0.0, 0.5, 1.0)]
    if num_crops == 10:
        five = [at(0, 0), at(0, 1), at(1, 0), at(1, 1), at(0.5, 0.5)]
        return five + [CropBox(b.top, b.left, b.height, b.width, True) for b in five]
    raise ValueError(f"test crops must be 1, 3 or 10, got {num_crops}")


def transform_rgb(frames: np.ndarray, box: CropBox, settings: FrameTransformSettings) -> Tensor:
    """uint8 ``(K, H, W, 3)`` frames (already at ``short_side``) -> float ``(K, 3, crop, crop)``, normalised."""
    video = torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2)  # (K, 3, H, W)
    top, left, h, w = box.pixels(*video.shape[-2:])
    video = video[..., top : top + h, left : left + w]
    video = TF.resize(video, [settings.crop_size, settings.crop_size], antialias=True)  # (K, 3, S, S)
    if box.flip:
        video = video.flip(-1)
    video = video.float().div_(255)
    mean = torch.tensor(settings.mean).view(1, 3, 1, 1)
    std = torch.tensor(settings.std).view(1, 3, 1, 1)
    return (video - mean) / std


def transform_flow(stacks: np.ndarray, box: CropBox, settings: FrameTransformSettings) -> Tensor:
    """uint8 ``(K, L, 2, H, W)`` stacks -> float ``(K, 2L, crop, crop)`` in units of the bound, x/y interleaved."""
    k, length = stacks.shape[:2]
    flow = torch.from_numpy(np.ascontiguousarray(stacks)).float().sub_(127.5).div_(127.5)  # (K, L, 2, H, W)
    if settings.flow_mean is FlowMean.FIELD:
        flow = flow - flow.mean(dim=(-2, -1), keepdim=True)
    top, left, h, w = box.pixels(*flow.shape[-2:])
    flow = flow[..., top : top + h, left : left + w].reshape(k, 2 * length, h, w)  # (K, 2L, h, w): x0 y0 x1 y1 ...
    size = settings.crop_size
    flow = F.interpolate(flow, size=(size, size), mode="bilinear", align_corners=False)  # (K, 2L, S, S)
    gain = torch.tensor([size / w, size / h]).repeat(length).view(1, 2 * length, 1, 1)  # displacements follow scale
    flow = flow * gain
    if box.flip:
        flow = flow.flip(-1)
        flow[:, 0::2] = -flow[:, 0::2]  # mirrored motion: x changes sign
    return flow.contiguous()
