"""Opening a video with the chosen backend, and finding how many leading frames of a damaged file decode."""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from pathlib import Path

from datamodules.video.decoding.decord_reader import DecordVideo, TorchCodecVideo
from datamodules.video.decoding.frame_index import FrameIndex
from datamodules.video.decoding.pyav_reader import PyAVVideo
from datamodules.video.decoding.settings import DecoderBackend, DecodeSettings, OpenVideo, VideoFacts

__all__ = ["open_video", "find_decodable_frame_count"]


def open_video(
    path: str | Path,
    backend: DecoderBackend,
    num_threads: int = 1,
    settings: DecodeSettings | None = None,
    facts: VideoFacts | None = None,
    short_side: int | None = None,
    frame_index: FrameIndex | None = None,
) -> OpenVideo:
    """Open ``path`` with ``backend``; raises whatever the library raises for unreadable files.

    Args:
        path: video file.
        backend: decoder library.
        num_threads: decoder threads.
        settings: PyAV only: ``fast_probe`` and ``skip_nonref`` (defaults: both on).
        facts: PyAV only: the path's cached :class:`VideoFacts` (the opened video's ``facts`` attribute).
        short_side: PyAV only: ``read`` returns frames scaled to this short side by swscale (bilinear,
            antialiased; not bit-identical to torch's resize); None: native size. Other backends ignore it.
        frame_index: PyAV only: how display indices map to frames; None: by pts from the header's start time.
    """
    if backend is DecoderBackend.DECORD:
        return DecordVideo(str(path), num_threads)
    if backend is DecoderBackend.PYAV:
        settings = settings or DecodeSettings()
        return PyAVVideo(
            str(path),
            num_threads,
            fast_probe=settings.fast_probe,
            skip_nonref=settings.skip_nonref,
            facts=facts,
            short_side=short_side,
            frame_index=frame_index,
        )
    if backend is DecoderBackend.TORCHCODEC:
        if importlib.util.find_spec("torchcodec") is None:
            raise ImportError("DecoderBackend.TORCHCODEC needs the 'torchcodec' package, which is not installed")
        return TorchCodecVideo(str(path), num_threads)
    raise ValueError(f"unknown decoder backend {backend!r}; expected one of {[b.value for b in DecoderBackend]}")


def find_decodable_frame_count(frame_decodes: Callable[[int], bool], header_count: int) -> int:
    """Number of leading frames that decode, assuming frames decode up to some index and fail after it.

    Probes the header's last index first, then gallops backwards (1, 2, 4, ... frames) to a decodable index and
    bisects between it and the first known failure: O(log n) probes.

    Args:
        frame_decodes: returns True when frame ``i`` decodes.
        header_count: frame count claimed by the container.

    Returns:
        The clamped count, 0 when not even frame 0 decodes.
    """
    if header_count <= 0:
        return 0
    bad = header_count - 1
    if frame_decodes(bad):
        return header_count
    step, good = 1, -1
    while bad > 0:
        candidate = max(bad - step, 0)
        if frame_decodes(candidate):
            good = candidate
            break
        bad, step = candidate, step * 2
    if good < 0:
        return 0
    while bad - good > 1:
        middle = (good + bad) // 2
        if frame_decodes(middle):
            good = middle
        else:
            bad = middle
    return good + 1
