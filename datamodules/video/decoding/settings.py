"""Types shared by the decoders and the reader: backends, settings, decoded clips, header facts, short-side sizing."""

from __future__ import annotations

import enum
import importlib.util
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np

__all__ = [
    "DecoderBackend",
    "DamagedPolicy",
    "DecodeSettings",
    "DecodedClip",
    "VideoFacts",
    "OpenVideo",
    "DecodeTimeout",
    "available_backends",
    "short_side_size",
    "resize_short_side",
]


class DecoderBackend(enum.Enum):
    """Which library decodes the video."""

    DECORD = "decord"
    PYAV = "pyav"
    TORCHCODEC = "torchcodec"


class DamagedPolicy(enum.Enum):
    """What the reader does with a file of which only some frames decode (truncated, damaged tail).

    READABLE_FRAMES: clips are drawn from the frames that decode (one warning per file).
    SKIP: the file is quarantined like an unreadable one and the dataset substitutes another video.
    """

    READABLE_FRAMES = "readable_frames"
    SKIP = "skip"


def available_backends() -> list[DecoderBackend]:
    """Backends whose library is importable here."""
    modules = {DecoderBackend.DECORD: "decord", DecoderBackend.PYAV: "av", DecoderBackend.TORCHCODEC: "torchcodec"}
    return [b for b, m in modules.items() if importlib.util.find_spec(m) is not None]


@dataclass
class DecodeSettings:
    """How clips are decoded.

    Attributes:
        backend: decoder library; PyAV by default (the fastest exact path here, and the one damaged files fall
            back to), decord or torchcodec on request. Whatever the backend, frames are addressed through the
            file's :class:`~datamodules.video.decoding.frame_index.FrameIndex` (built with PyAV); decord's frames
            are checked against it and a file decord cannot address is read with PyAV.
        timeout_s: a read (open + decode) running longer than this is abandoned and its file quarantined.
        timestamp_tolerance_frames: a returned frame whose timestamp is further than this many frame periods from
            ``t0 + index / fps`` counts as a mismatch (reported once per file, not fatal).
        num_threads: decoder threads per read; 1 suits DataLoader workers (parallelism comes from the workers).
        fast_probe: PyAV only: open mp4/mov/m4v files without decoding frames to probe them (falls back to the
            full probe when the header lacks a fact).
        skip_nonref: PyAV only: skip h264 non-reference frames the clip does not contain (frames are unchanged).
        scale_in_decoder: PyAV only: when a read asks for a short side (the datamodule passes the transforms'
            resize), convert and scale each frame in one swscale call (bilinear, antialiased) instead of
            converting at native size and resizing with torch. A little cheaper, not bit-identical to the torch
            resize (mean ~1.6 levels on h264, see ``pyav_reader.py``); False keeps the exact frames, resized
            by torch exactly as the transforms would.
        retain_freed_mb: glibc only: fix malloc's trim threshold at this many MB (and its mmap threshold at half,
            at most 32 MB) in every process that reads, so the per-clip buffers are reused instead of returned to
            the kernel and faulted in again (~5 ms a clip at 320x240). Process-wide; None leaves malloc alone.
        damaged: what to do with a file of which only the leading frames decode (see :class:`DamagedPolicy`).
    """

    backend: DecoderBackend = DecoderBackend.PYAV
    timeout_s: float = 20.0
    timestamp_tolerance_frames: float = 0.5
    num_threads: int = 1
    fast_probe: bool = True
    skip_nonref: bool = True
    scale_in_decoder: bool = False
    retain_freed_mb: int | None = 64
    damaged: DamagedPolicy = DamagedPolicy.READABLE_FRAMES

    def __post_init__(self) -> None:
        if self.retain_freed_mb is not None and self.retain_freed_mb < 1:
            raise ValueError(f"DecodeSettings.retain_freed_mb must be >= 1 or None, got {self.retain_freed_mb}")
        self.backend = DecoderBackend(self.backend)  # a config may give the value as a string
        self.damaged = DamagedPolicy(self.damaged)


@dataclass
class DecodedClip:
    """Frames of one clip.

    Attributes:
        frames: uint8 array (T, H, W, 3), RGB; (T, h, w, 3) when the read asked for a short side.
        indices: display indices of the frames that were read, length T.
        timestamps: start time in seconds of each returned frame relative to frame 0, length T (as the file stamps
            them; in decode-order files these need not be ``index / fps``).
        num_frames: decodable frame count of the video (after any clamp).
        fps: average frame rate of the video.
    """

    frames: np.ndarray
    indices: list[int]
    timestamps: np.ndarray
    num_frames: int
    fps: float


@dataclass(frozen=True)
class VideoFacts:
    """Header facts of one video, cached per path by the reader (PyAV backend).

    Attributes:
        num_frames: frame count the header claims (may over-report; the frame index counts the real ones).
        fps: average frame rate.
        start_time: timestamp of frame 0 in seconds, as the header says.
        fast_probe: True when the cheap open (no probe decoding) yields these facts; False: open with the full probe.
    """

    num_frames: int
    fps: float
    start_time: float
    fast_probe: bool


class OpenVideo(Protocol):
    """An opened video: header facts and random access by display index."""

    num_frames: int  # as the container header says; may over-report
    fps: float
    start_time: float  # timestamp of frame 0 in seconds

    def read(self, indices: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
        """Frames (T, H, W, 3) uint8 RGB and their start timestamps (T,) in seconds."""
        ...


class DecodeTimeout(TimeoutError):
    """A read ran past ``DecodeSettings.timeout_s``."""


def short_side_size(height: int, width: int, short_side: int) -> tuple[int, int]:
    """(height, width) of a ``height x width`` frame resized to ``short_side``, as torchvision's resize computes it.

    The long side is truncated, not rounded (``int(short_side * long / short)``), so frames scaled here are left
    untouched by ``torchvision.transforms.v2.Resize(short_side)``.
    """
    if short_side < 1:
        raise ValueError(f"short_side must be >= 1, got {short_side}")
    if width <= height:
        return int(short_side * height / width), short_side
    return short_side, int(short_side * width / height)


def resize_short_side(frames: np.ndarray, short_side: int) -> np.ndarray:
    """uint8 (T, H, W, 3) -> (T, h, w, 3) with torchvision's antialiased bilinear resize (the transforms' resize)."""
    import torch
    from torchvision.transforms.v2 import functional as F

    height, width = frames.shape[1:3]
    if short_side_size(height, width, short_side) == (height, width):
        return frames
    video = torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2)  # (T, H, W, 3) -> (T, 3, H, W)
    scaled = F.resize(video, [short_side], antialias=True)  # (T, 3, h, w)
    return np.ascontiguousarray(scaled.permute(0, 2, 3, 1).numpy())  # (T, h, w, 3)
