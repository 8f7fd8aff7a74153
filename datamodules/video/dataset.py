"""Map-style clip dataset over a list of videos, with pytorchvideo's clip samplers and a deterministic length.

* TRAIN: one item per video; each read draws a random clip (``RandomClipSampler``), so an epoch sees one random
  clip of every video.
* EVAL: one item per (video, clip, crop): ``clips_per_video`` clips evenly spread by ``ConstantClipsPerVideoSampler``
  times ``crops_per_clip`` spatial crops (e.g. 10 x 3 views). Items carry ``"group"`` = video index so the task can
  average scores per video.

Clip timing: a clip holds ``frames_per_clip`` frames ``step`` native frames apart, where ``step = frame_stride`` or,
when ``target_fps`` is set, ``fps / target_fps`` of each video. The samplers work in any time unit, so they are fed
durations in frames (video: decodable frames; clip: ``frames_per_clip * step``); frame ``k`` of a clip starting at
``s`` is ``floor(s + k * step)``. Videos shorter than a clip repeat their last frame.

Unreadable videos: the reader quarantines them and returns None; the dataset then returns, deterministically, the
same clip/crop of the next readable video of the same class (cyclically after it in the list), else of the next
video of any class, so batch sizes stay fixed and the epoch length is exact. Its ``"group"`` is the substitute's
index, so video-level test scores stay per video (the quarantined video is simply absent from them).
"""

from __future__ import annotations

import enum
import math
from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np
from pytorchvideo.data.clip_sampling import ConstantClipsPerVideoSampler, RandomClipSampler
from torch import Tensor
from torch.utils.data import Dataset

from datamodules.video.decoding import DecodedClip, RobustVideoReader

__all__ = ["ClipTiming", "SamplingMode", "VideoClipDataset", "clip_frame_indices"]


@dataclass
class ClipTiming:
    """Temporal extent of a clip.

    Attributes:
        frames_per_clip: frames T fed to the model.
        frame_stride: native frames between consecutive clip frames (ignored when ``target_fps`` is set).
        target_fps: resample every video to this rate (step = fps / target_fps), whatever its native rate.
    """

    frames_per_clip: int = 16
    frame_stride: int = 1
    target_fps: float | None = None

    def __post_init__(self) -> None:
        if self.frames_per_clip < 1 or self.frame_stride < 1:
            raise ValueError(
                f"frames_per_clip and frame_stride must be >= 1, got {self.frames_per_clip} and {self.frame_stride}"
            )
        if self.target_fps is not None and self.target_fps <= 0:
            raise ValueError(f"target_fps must be > 0, got {self.target_fps}")

    def step(self, fps: float) -> Fraction:
        """Native frames between clip frames for a video at ``fps``."""
        if self.target_fps is None:
            return Fraction(self.frame_stride)
        return Fraction(fps).limit_denominator(1001) / Fraction(self.target_fps).limit_denominator(1001)

    def duration(self, fps: float) -> Fraction:
        """Clip duration in native frames."""
        return self.frames_per_clip * self.step(fps)


class SamplingMode(enum.Enum):
    """TRAIN: one random clip per video per epoch. EVAL: fixed clips x crops per video."""

    TRAIN = "train"
    EVAL = "eval"


def clip_frame_indices(start: Fraction | float, timing: ClipTiming, num_frames: int, fps: float) -> list[int]:
    """Frame indices of the clip starting at frame position ``start``; indices past the end repeat the last frame."""
    step = timing.step(fps)
    start = Fraction(start)
    return [min(math.floor(start + k * step), num_frames - 1) for k in range(timing.frames_per_clip)]


class VideoClipDataset(Dataset[dict[str, Any]]):
    """Clips of labelled videos as ``{"inputs": float (C, T, H, W), "target": int, "group": int}``.

    Args:
        videos: ``(path, label)`` pairs.
        timing: frames per clip and stride / target fps.
        mode: TRAIN (one random clip per video) or EVAL (clips x crops per video).
        transform: maps uint8 ``(T, H, W, 3)`` (and, in EVAL mode, a crop index) to float ``(C, T, H, W)``.
        reader: the robust reader (opens nothing until the first item is read).
        clips_per_video: EVAL clips per video.
        crops_per_clip: EVAL spatial crops per clip (the transform's ``num_crops``).
        max_substitutes: how many other videos to try in place of an unreadable one before raising.
        short_side: the reader returns frames resized to this short side (the transform's first resize, which
            then has nothing left to do); how is ``reader.settings.scale_in_decoder``'s choice. None: native size.
    """

    def __init__(
        self,
        videos: list[tuple[Path, int]],
        timing: ClipTiming,
        mode: SamplingMode,
        transform: Callable[..., Tensor],
        reader: RobustVideoReader,
        clips_per_video: int = 1,
        crops_per_clip: int = 1,
        max_substitutes: int = 20,
        short_side: int | None = None,
    ) -> None:
        if clips_per_video < 1 or crops_per_clip < 1:
            raise ValueError(
                f"clips_per_video and crops_per_clip must be >= 1, got {clips_per_video}, {crops_per_clip}"
            )
        self.videos = [(Path(p), int(label)) for p, label in videos]
        self.timing = timing
        self.mode = mode
        self.transform = transform
        self.reader = reader
        self.clips_per_video = clips_per_video if mode is SamplingMode.EVAL else 1
        self.crops_per_clip = crops_per_clip if mode is SamplingMode.EVAL else 1
        self.max_substitutes = max_substitutes
        self.short_side = short_side
        labels = np.asarray([label for _, label in self.videos], dtype=np.int64)
        self._same_class = {int(c): np.flatnonzero(labels == c) for c in np.unique(labels)}

    @property
    def views_per_video(self) -> int:
        """Items per video: 1 in TRAIN mode, clips x crops in EVAL mode."""
        return self.clips_per_video * self.crops_per_clip

    def __len__(self) -> int:
        return len(self.videos) * self.views_per_video

    def substitutes(self, video: int) -> list[int]:
        """Deterministic order of videos tried in place of ``video``: same class after it (cyclic), then any."""
        same = self._same_class[self.videos[video][1]]
        after = np.concatenate([same[same > video], same[same < video]])
        others = [(video + k) % len(self.videos) for k in range(1, len(self.videos))]
        order = [int(v) for v in after]
        seen = set(order)
        order += [v for v in others if v not in seen]
        return order[: self.max_substitutes]

    def _choose(self, clip_index: int) -> Callable[[int, float], list[int]]:
        def choose(num_frames: int, fps: float) -> list[int]:
            duration = self.timing.duration(fps)
            if self.mode is SamplingMode.TRAIN:
                info = RandomClipSampler(duration)(0, num_frames, {})
            else:
                sampler = ConstantClipsPerVideoSampler(duration, self.clips_per_video)
                for _ in range(clip_index + 1):  # the sampler is stateful: step it to clip `clip_index`
                    info = sampler(0, num_frames, {})
            return clip_frame_indices(info.clip_start_sec, self.timing, num_frames, fps)

        return choose

    def __getitem__(self, index: int) -> dict[str, Any]:
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} items")
        video, view = divmod(index, self.views_per_video)
        clip_index, crop_index = divmod(view, self.crops_per_clip)
        for candidate in [video, *self.substitutes(video)]:
            path, label = self.videos[candidate]
            decoded: DecodedClip | None = self.reader.read(path, self._choose(clip_index), self.short_side)
            if decoded is None:
                continue
            if self.mode is SamplingMode.TRAIN:
                inputs = self.transform(decoded.frames)  # (T, H, W, 3) -> (C, T, H, W)
            else:
                inputs = self.transform(decoded.frames, crop_index)  # (C, T, H, W)
            return {"inputs": inputs, "target": label, "group": candidate}
        raise RuntimeError(
            f"video {self.videos[video][0]} and {self.max_substitutes} substitutes are all unreadable; "
            f"see the quarantine list {self.reader.quarantine.path}"
        )
