"""Frame-accurate clip decoding: PyAV by default, decord and torchcodec as alternatives.

Modules, by responsibility:

* ``settings``: backends, :class:`DecodeSettings`, :class:`DecodedClip`, header facts, short-side sizing.
* ``frame_index``: per file, whether frames are addressed by timestamp or by decoder output order, and why.
* ``pyav_reader`` / ``decord_reader``: random access by display index with each library; ``backends`` opens one.
* ``reader``: :class:`RobustVideoReader`, what datasets use: time bound, clamp of damaged files, quarantine.
* ``check``: ``check-videos``: a quick or a full decode of every file, with a verdict per file.
* ``memory``, ``timeouts``, ``quarantine``: malloc thresholds, time-bounded reads, once-per-file records.

The names below are the public interface (``from datamodules.video.decoding import RobustVideoReader``).
"""

from datamodules.video.decoding.backends import find_decodable_frame_count, open_video
from datamodules.video.decoding.frame_index import FrameIndex, IndexMode, Keyframe, build_frame_index
from datamodules.video.decoding.memory import retain_freed_memory
from datamodules.video.decoding.quarantine import OnceLog, QuarantineLog
from datamodules.video.decoding.reader import ChooseIndices, RobustVideoReader
from datamodules.video.decoding.settings import (
    DamagedPolicy,
    DecodedClip,
    DecoderBackend,
    DecodeSettings,
    DecodeTimeout,
    OpenVideo,
    VideoFacts,
    available_backends,
    resize_short_side,
    short_side_size,
)

__all__ = [
    "ChooseIndices",
    "DamagedPolicy",
    "DecoderBackend",
    "DecodeSettings",
    "DecodedClip",
    "DecodeTimeout",
    "FrameIndex",
    "IndexMode",
    "Keyframe",
    "OnceLog",
    "OpenVideo",
    "QuarantineLog",
    "RobustVideoReader",
    "VideoFacts",
    "available_backends",
    "build_frame_index",
    "find_decodable_frame_count",
    "open_video",
    "resize_short_side",
    "retain_freed_memory",
    "short_side_size",
]
