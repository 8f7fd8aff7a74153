"""The robust clip reader: frames at exact display indices, a time bound, clamped frame counts and quarantine.

What goes wrong with real video collections, and what :class:`RobustVideoReader` does about it:

* **Frames addressed wrongly** (MPEG-4 Part 2 B-frames in AVI, variable frame rate, lying frame counts). On the
  first read of a path the reader builds its :class:`FrameIndex` (``frame_index.py``) and caches it: every backend
  returns the frames at the requested display indices (the order of a full sequential decode). decord's clips are
  checked against the index (its frame count and timestamps); a file it cannot address is read with PyAV.
* **Forks.** A decord ``VideoReader`` created before DataLoader workers fork can deadlock them. Readers are opened
  per read in the worker's own decode thread (started lazily, re-created when the process id changes).
* **Corrupt, truncated, zero-byte, non-video or unsupported files.** The read fails; the path and the reason are
  listed once in a quarantine file (TSV: ``path<TAB>reason``), a warning is issued once, later reads of that path
  are refused at once, and the caller gets ``None`` (the dataset substitutes another video, see ``dataset.py``).
* **Files of which only the leading frames decode** (truncated, damaged tail). When a read fails, the number of
  frames that decode is found by probing backwards from the last index (galloping, then bisection) with PyAV,
  cached per path; with ``DamagedPolicy.READABLE_FRAMES`` clips are re-chosen inside that range (one warning per
  file), with ``DamagedPolicy.SKIP`` the file is quarantined.
* **Hangs.** Every read runs in a daemon thread and is abandoned after ``timeout_s`` (``timeouts.py``).
* **Wrong timestamps.** In PTS mode the returned frames' timestamps are compared with ``index / fps``; mismatches
  beyond ``timestamp_tolerance_frames`` are counted and reported once per file.

"Once per file" holds across DataLoader workers and epochs: warnings and quarantine entries are recorded in files
next to the quarantine file (``quarantine.py``).
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from datamodules.video.decoding import backends
from datamodules.video.decoding.backends import find_decodable_frame_count
from datamodules.video.decoding.frame_index import FrameIndex, IndexMode, build_frame_index
from datamodules.video.decoding.memory import retain_freed_memory
from datamodules.video.decoding.quarantine import OnceLog, QuarantineLog
from datamodules.video.decoding.settings import (
    DamagedPolicy,
    DecodedClip,
    DecoderBackend,
    DecodeSettings,
    DecodeTimeout,
    OpenVideo,
    VideoFacts,
    resize_short_side,
)
from datamodules.video.decoding.timeouts import DecodeThread

__all__ = ["ChooseIndices", "RobustVideoReader"]

ChooseIndices = Callable[[int, float], list[int]]  # (decodable frame count, fps) -> display indices of the clip
_MAX_CACHED = 1_000_000  # cached facts / indexes per reader (a few hundred bytes each)


def _warned_path(quarantine: Path | None) -> Path | None:
    return None if quarantine is None else quarantine.with_name(quarantine.name + ".warned")


class RobustVideoReader:
    """Reads clips at exact display indices with a time bound; clamps damaged files and quarantines bad ones.

    Safe to construct in the main process and pickle into DataLoader workers: it opens nothing until ``read``.

    Args:
        settings: backend, timeout, tolerance and damaged-file policy.
        quarantine_path: TSV file receiving ``path<TAB>reason`` once for every file given up on (a sibling
            ``<name>.warned`` records which per-file warnings were issued); None keeps both in memory only
            (``quarantine.entries``).
    """

    def __init__(self, settings: DecodeSettings | None = None, quarantine_path: str | Path | None = None) -> None:
        self.settings = settings or DecodeSettings()
        self.quarantine = QuarantineLog(quarantine_path)
        self.warned = OnceLog(_warned_path(self.quarantine.path))
        self._bad: set[str] = set()
        self._damaged: dict[str, int] = {}  # path -> leading frames that decode, for files whose reads failed
        self._facts: dict[str, VideoFacts] = {}  # path -> header facts (PyAV), oldest dropped past _MAX_CACHED
        self._indexes: dict[str, FrameIndex] = {}  # path -> frame index, oldest dropped past _MAX_CACHED
        self._pyav_only: set[str] = set()  # paths the configured backend cannot address (read with PyAV)
        self.timestamp_mismatches = 0
        self._thread: DecodeThread | None = None
        self._pid = -1

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_thread"], state["_pid"] = None, -1  # threads do not cross process boundaries
        return state

    def set_quarantine_path(self, path: str | Path | None) -> None:
        """Redirect the quarantine file (e.g. once the trainer's log dir is known)."""
        self.quarantine.path = Path(path) if path is not None else None
        self.warned.path = _warned_path(self.quarantine.path)

    def is_quarantined(self, path: str | Path) -> bool:
        """True when this process has given up on ``path``."""
        return str(path) in self._bad

    def frame_index(self, path: str | Path) -> FrameIndex:
        """The cached :class:`FrameIndex` of ``path``, built on first use (raises for unreadable files)."""
        key = str(path)
        index = self._indexes.get(key)
        if index is None:
            if os.path.getsize(key) == 0:
                raise ValueError("zero-byte file")
            index = build_frame_index(key, num_threads=self.settings.num_threads)
            if len(self._indexes) >= _MAX_CACHED:
                del self._indexes[next(iter(self._indexes))]  # the oldest entry
            self._indexes[key] = index
        return index

    def read(self, path: str | Path, choose: ChooseIndices, short_side: int | None = None) -> DecodedClip | None:
        """Decode the clip ``choose(num_frames, fps)`` of ``path``; None (after quarantining it) when unreadable.

        Args:
            path: video file.
            choose: display indices of the clip from the decodable frame count and the frame rate.
            short_side: return frames resized so their short side is this (size as torchvision's resize computes
                it): by swscale while converting when ``settings.scale_in_decoder`` (PyAV), else by torch's
                antialiased resize of the exact frames. None: native size.
        """
        key = str(path)
        if key in self._bad:
            return None
        if self._thread is None or self._pid != os.getpid():
            if self.settings.retain_freed_mb is not None:
                retain_freed_memory(self.settings.retain_freed_mb)  # once per process (each DataLoader worker)
            self._thread, self._pid = DecodeThread(), os.getpid()
        try:
            clip = self._thread.run(lambda: self._read_now(key, choose, short_side), self.settings.timeout_s)
        except DecodeTimeout as error:
            self._thread = None  # the stuck thread is abandoned; the next read starts a fresh one
            self._give_up(key, f"timeout: {error}")
            return None
        except Exception as error:  # any decoder failure: the file is quarantined and reported, never silently
            self._give_up(key, f"{type(error).__name__}: {error}")
            return None
        self._check_timestamps(key, clip)
        return clip

    def _warn_once(self, path: str, kind: str, message: str, stacklevel: int = 4) -> None:
        if self.warned.first(f"{path}\t{kind}"):
            warnings.warn(message, RuntimeWarning, stacklevel=stacklevel)

    def _give_up(self, path: str, reason: str) -> None:
        self._bad.add(path)
        if self.quarantine.add(path, reason):
            where = f" (listed in {self.quarantine.path})" if self.quarantine.path else ""
            warnings.warn(f"skipping unreadable video {path}: {reason}{where}", RuntimeWarning, stacklevel=3)

    def _open(
        self, path: str, backend: DecoderBackend, index: FrameIndex | None, short_side: int | None = None
    ) -> OpenVideo:
        """Open ``path``; ``short_side`` reaches PyAV only with ``scale_in_decoder`` (else the frames are native)."""
        facts = self._facts.get(path) if backend is DecoderBackend.PYAV else None
        scaled = short_side if self.settings.scale_in_decoder and backend is DecoderBackend.PYAV else None
        video = backends.open_video(
            path,
            backend,
            self.settings.num_threads,
            settings=self.settings,
            facts=facts,
            short_side=scaled,
            frame_index=index if backend is DecoderBackend.PYAV else None,
        )
        if facts is None and isinstance(getattr(video, "facts", None), VideoFacts):
            if len(self._facts) >= _MAX_CACHED:
                del self._facts[next(iter(self._facts))]  # the oldest entry
            self._facts[path] = video.facts  # type: ignore[attr-defined]
        return video

    def _backend_for(self, path: str, index: FrameIndex) -> DecoderBackend:
        backend = self.settings.backend
        if backend is DecoderBackend.PYAV or path in self._damaged or path in self._pyav_only:
            return DecoderBackend.PYAV
        if index.mode is IndexMode.DECODE_ORDER:
            self._pyav_only.add(path)
            self._warn_once(
                path,
                "pyav",
                f"{path}: frames are addressed in decode order ({index.reason}); "
                f"{backend.value} cannot address them, read with PyAV",
                stacklevel=5,
            )
            return DecoderBackend.PYAV
        return backend

    def _read_now(self, path: str, choose: ChooseIndices, short_side: int | None = None) -> DecodedClip:
        index = self.frame_index(path)
        count = self._damaged.get(path, index.num_frames)
        if count <= 0:
            raise ValueError(f"no frames (header reports {index.header_frames})")
        if index.fps <= 0:
            raise ValueError(f"frame rate {index.fps}")
        lost = index.header_frames - index.num_frames if index.header_exact else 0
        if lost > 0 and path not in self._damaged:  # the index found the damage: frames the header lists are absent
            if self.settings.damaged is DamagedPolicy.SKIP:
                raise ValueError(f"damaged: {lost} of the {index.header_frames} frames the header lists are absent")
            self._warn_once(
                path,
                "clamp",
                f"{path}: only {index.num_frames} of the {index.header_frames} frames the header lists are present; "
                "clips are taken from those",
            )
        backend = self._backend_for(path, index)
        indices = choose(count, index.fps)
        try:
            video = self._open(path, backend, index, short_side)
            frames, stamps = video.read(indices)
            if backend is not DecoderBackend.PYAV and not self._agrees_with_index(path, index, video, indices, stamps):
                video = self._open(path, DecoderBackend.PYAV, index, short_side)
                frames, stamps = video.read(indices)
        except Exception as first_error:  # maybe a damaged tail: clamp, then read the frames that decode with PyAV
            if path in self._damaged:
                raise
            count = self._clamp(path, index)
            if count == index.num_frames:
                raise  # every frame decodes alone: the failure is not a damaged tail
            if count == 0:
                raise ValueError(f"no frame decodes ({type(first_error).__name__}: {first_error})") from None
            if self.settings.damaged is DamagedPolicy.SKIP:
                raise ValueError(
                    f"damaged: only the first {count} of {index.num_frames} frames decode ({first_error})"
                ) from None
            self._warn_once(
                path,
                "clamp",
                f"{path}: only the first {count} of {index.num_frames} frames decode; "
                "clips are taken from those, decoded with PyAV",
            )
            video = self._open(path, DecoderBackend.PYAV, index, short_side)
            indices = choose(count, index.fps)
            frames, stamps = video.read(indices)
        if short_side is not None:
            frames = resize_short_side(frames, short_side)  # no-op when swscale already scaled them
        frames = np.ascontiguousarray(frames)  # (T, H, W, 3) uint8
        stamps = np.asarray(stamps, np.float64) - video.start_time  # relative to frame 0
        return DecodedClip(frames=frames, indices=list(indices), timestamps=stamps, num_frames=count, fps=index.fps)

    def _agrees_with_index(
        self, path: str, index: FrameIndex, video: OpenVideo, indices: list[int], stamps: np.ndarray
    ) -> bool:
        """Whether another backend's clip is the index's: same frame count, timestamps at ``index / fps``."""
        expected = np.asarray(indices, np.float64) / index.fps
        tolerance = self.settings.timestamp_tolerance_frames / index.fps
        relative = np.asarray(stamps, np.float64) - video.start_time
        if video.num_frames == index.num_frames and np.all(np.abs(relative - expected) <= tolerance):
            return True
        self._pyav_only.add(path)
        self._warn_once(
            path,
            "pyav",
            f"{path}: {self.settings.backend.value} disagrees with the frame index ({video.num_frames} frames, "
            f"frame {indices[0]} stamped {relative[0]:.4f} s; index: {index.num_frames} frames, "
            f"{expected[0]:.4f} s); read with PyAV",
            stacklevel=6,
        )
        return False

    def _clamp(self, path: str, index: FrameIndex) -> int:
        """Leading frames that decode, probed with PyAV (decord's threaded decoder fails at random on damage)."""
        state: dict[str, OpenVideo] = {"video": self._open(path, DecoderBackend.PYAV, index)}

        def frame_decodes(i: int) -> bool:
            try:
                state["video"].read([i])
                return True
            except Exception:  # a failed probe is the answer "no"; the reader is reopened for the next probe
                state["video"] = self._open(path, DecoderBackend.PYAV, index)
                return False

        count = find_decodable_frame_count(frame_decodes, index.num_frames)
        self._damaged[path] = count
        return count

    def _check_timestamps(self, path: str, clip: DecodedClip) -> None:
        index = self._indexes.get(path)
        if index is not None and index.mode is IndexMode.DECODE_ORDER:
            return  # stamps of decode-order files are not index / fps; the index is the reference
        expected = np.asarray(clip.indices, dtype=np.float64) / clip.fps  # (T,) seconds from frame 0
        tolerance = self.settings.timestamp_tolerance_frames / clip.fps
        wrong = np.abs(clip.timestamps - expected) > tolerance
        if wrong.any():
            self.timestamp_mismatches += int(wrong.sum())
            first = int(np.argmax(wrong))
            self._warn_once(
                path,
                "timestamps",
                f"{path}: {int(wrong.sum())}/{len(wrong)} frames have timestamps off their index "
                f"(frame {clip.indices[first]}: {clip.timestamps[first]:.4f} s, expected {expected[first]:.4f} s)",
            )
