"""decord and torchcodec as alternative decoders.

decord's frame index is its own (packet timestamps sorted): on files the frame index addresses by pts it gives the
same frames, and the reader checks every clip's timestamps against the index; files the index addresses in decode
order (MPEG-4 Part 2 B-frames in AVI, duplicated timestamps) are read with PyAV instead. A decord ``VideoReader``
created before DataLoader workers fork can deadlock them, so the reader opens one per read in its decode thread.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["DecordVideo", "TorchCodecVideo"]


class DecordVideo:
    """A decord ``VideoReader``: header facts and ``read(indices)``."""

    def __init__(self, path: str, num_threads: int) -> None:
        import decord

        self._reader = decord.VideoReader(path, num_threads=num_threads)
        self.num_frames = len(self._reader)
        self.fps = float(self._reader.get_avg_fps())
        self.start_time = float(self._reader.get_frame_timestamp([0])[0, 0]) if self.num_frames else 0.0

    def read(self, indices: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
        """Frames (T, H, W, 3) uint8 and their start seconds (T,) as decord stamps them."""
        frames = self._reader.get_batch(list(indices)).asnumpy()  # (T, H, W, 3) uint8
        stamps = np.asarray(self._reader.get_frame_timestamp(list(indices)))[:, 0]  # (T,) start seconds
        return frames, stamps


class TorchCodecVideo:
    """A torchcodec ``VideoDecoder`` in exact seek mode."""

    def __init__(self, path: str, num_threads: int) -> None:
        from torchcodec.decoders import VideoDecoder  # optional dependency

        self._decoder = VideoDecoder(path, seek_mode="exact", num_ffmpeg_threads=num_threads)
        meta = self._decoder.metadata
        self.num_frames = int(meta.num_frames or 0)
        self.fps = float(meta.average_fps or 0.0)
        self.start_time = float(getattr(meta, "begin_stream_seconds", 0.0) or 0.0)

    def read(self, indices: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
        """Frames (T, H, W, 3) uint8 and their start seconds (T,)."""
        batch = self._decoder.get_frames_at(indices=list(indices))
        frames = batch.data.permute(0, 2, 3, 1).numpy()  # (T, C, H, W) -> (T, H, W, C)
        return frames, batch.pts_seconds.numpy()
