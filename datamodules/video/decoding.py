"""Robust clip decoding: PyAV by default (a fast exact path), decord and torchcodec as alternatives.

What goes wrong with real video collections, and what :class:`RobustVideoReader` does about it:

* **Forks.** A decord ``VideoReader`` created before DataLoader workers fork can deadlock them. Readers are opened
  per read in the worker's own decode thread (started lazily, re-created when the process id changes).
* **Corrupt, truncated, zero-byte, non-video or unsupported files.** The read fails; the path and the reason are
  appended to a quarantine file (TSV: ``path<TAB>reason``), a warning is issued, later reads of that path are
  refused at once, and the caller gets ``None`` (the dataset substitutes another video, see ``dataset.py``).
* **Headers that over-report the frame count.** When a read fails, the number of frames that actually decode is
  found by probing backwards from the header's last index (galloping, then bisection) with PyAV, cached per path,
  and the clip is re-chosen inside that range and read with PyAV (decord's threaded decoder fails at random on
  damaged streams, PyAV deterministically). A warning reports the clamp. If nothing decodes, the file is
  quarantined.
* **Hangs.** Every read (open + decode) runs in a daemon thread and is abandoned after ``timeout_s``; the timed-out
  path is quarantined and a fresh thread serves the next read. decord and PyAV release the GIL while in FFmpeg,
  so the timeout fires even when the decoder is stuck.
* **Wrong frames.** The timestamps of the frames returned (decord ``get_frame_timestamp``, PyAV/torchcodec frame
  pts) are compared with ``t0 + index / fps``; mismatches beyond ``timestamp_tolerance_frames`` are counted and
  reported once per file.

Where a random 16-frame clip of 320x240 h264 spends its time and what the PyAV path does (see
``tools/bench_video_decoding.py``): **open**: ``avformat_find_stream_info`` decodes frames to learn what an mp4/mov
header already says (~2 of ~3 ms); ``fast_probe`` caps the analysis at 0.1 s with its decoders decoding nothing
(~0.7 ms), reopening with the full probe when a fact is missing; facts are cached per path (:class:`VideoFacts`).
**Pre-roll**: the backward seek lands on the last key frame at or before the clip (checked: no extra frames);
outside the clip ``skip_nonref`` has the h264 decoder skip non-reference frames (nothing refers to them, so the clip
is bit-identical to a full decode; h264 only, its ``nal_ref_idc`` is exact). **Decoder delay**: a B-frame stream
outputs a frame only after later packets; once the clip's packets are sent the decoder is drained instead.
**Colour**: ``frame.to_ndarray`` builds a threaded swscale context per frame (~0.25 ms); one single-threaded context
per video takes ~0.03-0.08 ms, and each frame is written straight into the clip array (no per-frame arrays stacked).
**Memory**: the per-clip buffers (decoder frame pool, RGB frames, the clip) are allocated and freed on every read.
glibc's dynamic thresholds follow what the process allocated before; in some histories the freed heap top is
returned to the kernel after every read and faulted back in on the next: measured ~1700 page faults and ~5 ms of
system time a clip (a quarter of its cost) in a loop that reads and resizes, 190-260 faults in the dataset path,
0 in other processes (the spread of earlier measurements). ``retain_freed_mb`` fixes the thresholds once per
process (:func:`retain_freed_memory`), so no history leads there: 0-50 faults a clip.
**Hand-off** to the decode thread: ~30 us a read.
**Scaling** (``short_side`` of :meth:`RobustVideoReader.read`): the exact frames are resized by torch
(``torchvision.transforms.v2.functional.resize``, antialiased bilinear: the transforms' resize, identical pixels), or,
with ``scale_in_decoder``, converted and scaled by one swscale call (bilinear, filter widened when shrinking, written
as planar RGB: ~0.12 ms a frame against ~0.15 ms for RGB + torch resize at 320x240 -> 128x170; swscale's packed-RGB
scaled output costs ~0.25 ms). Not bit-identical to the torch resize: on RGB sources (lossless libx264rgb) within
2 levels on smooth content, mean 0.22 (max 15) on random noise; on yuv420p h264 mean ~1.6 levels, up to ~66 at
saturated colour edges, because the exact conversion repeats each chroma sample over 2x2 pixels while swscale
interpolates chroma.
"""

from __future__ import annotations

import ctypes
import enum
import importlib.util
import os
import queue
import threading
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any, Literal, Protocol

import numpy as np

__all__ = [
    "DecoderBackend",
    "DecodeSettings",
    "DecodedClip",
    "VideoFacts",
    "OpenVideo",
    "QuarantineLog",
    "RobustVideoReader",
    "DecodeTimeout",
    "open_video",
    "find_decodable_frame_count",
    "available_backends",
    "retain_freed_memory",
    "short_side_size",
]


class DecoderBackend(enum.Enum):
    """Which library decodes the video."""

    DECORD = "decord"
    PYAV = "pyav"
    TORCHCODEC = "torchcodec"


def available_backends() -> list[DecoderBackend]:
    """Backends whose library is importable here."""
    modules = {DecoderBackend.DECORD: "decord", DecoderBackend.PYAV: "av", DecoderBackend.TORCHCODEC: "torchcodec"}
    return [b for b, m in modules.items() if importlib.util.find_spec(m) is not None]


@dataclass
class DecodeSettings:
    """How clips are decoded.

    Attributes:
        backend: decoder library; PyAV by default (the fastest exact path here, and the one damaged files fall
            back to), decord or torchcodec on request.
        timeout_s: a read (open + decode) running longer than this is abandoned and its file quarantined.
        timestamp_tolerance_frames: a returned frame whose timestamp is further than this many frame periods from
            ``t0 + index / fps`` counts as a mismatch (reported, not fatal).
        num_threads: decoder threads per read; 1 suits DataLoader workers (parallelism comes from the workers).
        fast_probe: PyAV only: open mp4/mov/m4v files without decoding frames to probe them (falls back to the
            full probe when the header lacks a fact).
        skip_nonref: PyAV only: skip h264 non-reference frames the clip does not contain (frames are unchanged).
        scale_in_decoder: PyAV only: when a read asks for a short side (the datamodule passes the transforms'
            resize), convert and scale each frame in one swscale call (bilinear, antialiased) instead of
            converting at native size and resizing with torch. A little cheaper, not bit-identical to the torch
            resize (mean ~1.6 levels on h264, see the module docstring); False keeps the exact frames, resized
            by torch exactly as the transforms would.
        retain_freed_mb: glibc only: fix malloc's trim threshold at this many MB (and its mmap threshold at half,
            at most 32 MB) in every process that reads, so the per-clip buffers are reused instead of returned to
            the kernel and faulted in again (~5 ms a clip at 320x240). Process-wide; None leaves malloc alone.
    """

    backend: DecoderBackend = DecoderBackend.PYAV
    timeout_s: float = 20.0
    timestamp_tolerance_frames: float = 0.5
    num_threads: int = 1
    fast_probe: bool = True
    skip_nonref: bool = True
    scale_in_decoder: bool = False
    retain_freed_mb: int | None = 64

    def __post_init__(self) -> None:
        if self.retain_freed_mb is not None and self.retain_freed_mb < 1:
            raise ValueError(f"DecodeSettings.retain_freed_mb must be >= 1 or None, got {self.retain_freed_mb}")


@dataclass
class DecodedClip:
    """Frames of one clip.

    Attributes:
        frames: uint8 array (T, H, W, 3), RGB; (T, h, w, 3) when the read asked for a short side.
        indices: frame indices that were read, length T.
        timestamps: start time in seconds of each returned frame, length T.
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
    """Header facts of one video, cached per path by :class:`RobustVideoReader` (PyAV backend).

    Attributes:
        num_frames: frame count the header claims (may over-report; the reader clamps on failure).
        fps: average frame rate.
        start_time: timestamp of frame 0 in seconds.
        fast_probe: True when the cheap open (no probe decoding) yields these facts; False: open with the full probe.
    """

    num_frames: int
    fps: float
    start_time: float
    fast_probe: bool


class OpenVideo(Protocol):
    """An opened video: header facts and random access by frame index."""

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


def _resize_short_side(frames: np.ndarray, short_side: int) -> np.ndarray:
    """uint8 (T, H, W, 3) -> (T, h, w, 3) with torchvision's antialiased bilinear resize (the transforms' resize)."""
    import torch
    from torchvision.transforms.v2 import functional as F

    height, width = frames.shape[1:3]
    if short_side_size(height, width, short_side) == (height, width):
        return frames
    video = torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2)  # (T, H, W, 3) -> (T, 3, H, W)
    scaled = F.resize(video, [short_side], antialias=True)  # (T, 3, h, w)
    return np.ascontiguousarray(scaled.permute(0, 2, 3, 1).numpy())  # (T, h, w, 3)


_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # mallopt parameters (glibc malloc.h)
_MAX_MMAP_THRESHOLD_MB = 32  # glibc's ceiling on 64-bit (HEAP_MAX_SIZE / 2)
_malloc_tuned: dict[int, int] = {}  # process id -> retain_freed_mb applied in that process


def retain_freed_memory(megabytes: int) -> bool:
    """Have glibc keep up to ``megabytes`` MB of freed heap in this process instead of returning it to the kernel.

    Sets ``M_TRIM_THRESHOLD`` to ``megabytes`` and ``M_MMAP_THRESHOLD`` to half of it (at most 32 MB), which also
    turns off glibc's dynamic thresholds: buffers up to that size come from the heap and are reused read after read.
    Process-wide and applied once per process (the reader calls it in each DataLoader worker).

    Returns:
        True when applied (now or earlier in this process), False on a C library other than glibc.
    """
    pid = os.getpid()
    if _malloc_tuned.get(pid) == megabytes:
        return True
    try:
        if not os.confstr("CS_GNU_LIBC_VERSION"):
            return False
    except (ValueError, OSError):  # no such confstr name: not glibc
        return False
    libc = ctypes.CDLL("libc.so.6")
    mmap_mb = min(max(megabytes // 2, 1), _MAX_MMAP_THRESHOLD_MB)
    trim_ok = libc.mallopt(_M_TRIM_THRESHOLD, megabytes << 20)
    mmap_ok = libc.mallopt(_M_MMAP_THRESHOLD, mmap_mb << 20)
    if not (trim_ok and mmap_ok):
        raise RuntimeError(f"glibc mallopt refused trim threshold {megabytes} MB / mmap threshold {mmap_mb} MB")
    _malloc_tuned[pid] = megabytes
    return True


# --------------------------------------------------------------------------------------------------------------------
# Backends


class _DecordVideo:
    def __init__(self, path: str, num_threads: int) -> None:
        import decord

        self._reader = decord.VideoReader(path, num_threads=num_threads)
        self.num_frames = len(self._reader)
        self.fps = float(self._reader.get_avg_fps())
        self.start_time = float(self._reader.get_frame_timestamp([0])[0, 0]) if self.num_frames else 0.0

    def read(self, indices: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
        frames = self._reader.get_batch(list(indices)).asnumpy()  # (T, H, W, 3) uint8
        stamps = np.asarray(self._reader.get_frame_timestamp(list(indices)))[:, 0]  # (T,) start seconds
        return frames, stamps


_FAST_PROBE_SUFFIXES = (".mp4", ".m4v", ".mov")  # containers whose header holds rate, count and the full index
_FAST_PROBE_OPTIONS = {"analyzeduration": "100000"}  # microseconds of stream analysis (FFmpeg default: 5 s)
_FAST_PROBE_STREAM_OPTIONS = [{"skip_frame": "all"}] * 8  # the probe's decoders decode nothing


class _PyAVVideo:
    """Random access with PyAV: seek to the key frame before the first index, decode forward, pick by pts.

    ``fast_probe`` and ``skip_nonref`` as in :class:`DecodeSettings`; ``facts`` (from an earlier open of ``path``)
    decide the probe and are not recomputed. ``short_side``: frames come out converted and scaled to it by swscale
    (see ``DecodeSettings.scale_in_decoder``); None: native size, the exact frames.
    """

    def __init__(
        self,
        path: str,
        num_threads: int,
        *,
        fast_probe: bool = True,
        skip_nonref: bool = True,
        facts: VideoFacts | None = None,
        short_side: int | None = None,
    ) -> None:
        import av
        from av.video.reformatter import VideoReformatter

        self._path = path
        fast = fast_probe and path.lower().endswith(_FAST_PROBE_SUFFIXES) and (facts is None or facts.fast_probe)
        if fast:
            try:
                self._container = av.open(  # (PyAV's stub types stream_options as list[str]; it takes dicts)
                    path,
                    container_options=_FAST_PROBE_OPTIONS,
                    stream_options=_FAST_PROBE_STREAM_OPTIONS,  # type: ignore[arg-type]
                )
            except (av.error.FFmpegError, ValueError):  # not what the suffix says: the full probe decides below
                fast = False
        if fast and facts is None and not self._header_complete():
            self._container.close()
            fast = False
        if not fast:
            self._container = av.open(path)
        if not self._container.streams.video:
            self._container.close()
            raise ValueError(f"no video stream in {path}")
        stream = self._container.streams.video[0]
        stream.thread_count = num_threads
        self._stream = stream
        self._time_base = Fraction(stream.time_base) if stream.time_base else Fraction(1, 1)
        self._seconds_per_tick = float(self._time_base)
        self._skip_nonref = skip_nonref and stream.codec_context.name == "h264"
        if facts is None:
            rate = stream.average_rate or stream.guessed_rate
            if not rate:
                raise ValueError(f"no frame rate in the header of {path}")
            fps = float(rate)
            start = stream.start_time if stream.start_time is not None else 0
            frames = stream.frames
            if not frames and stream.duration is not None:
                frames = int(round(float(stream.duration * self._time_base) * fps))
            facts = VideoFacts(int(frames), fps, float(start * self._time_base), fast)
        self.facts = facts
        self.num_frames, self.fps, self.start_time = facts.num_frames, facts.fps, facts.start_time
        # One swscale context for all frames of this video, single-threaded: frame.to_ndarray builds one per frame
        # with a slice-thread pool (~0.2 ms a frame), and a pool held across a DataLoader fork hangs when freed.
        self._reformatter = VideoReformatter()
        self._short_side = short_side
        self.decoded_frames = 0  # frames the decoder output so far (skipped frames are not output)
        self.sent_packets = 0  # packets sent to the decoder so far

    def _header_complete(self) -> bool:
        """Whether the cheap open found size, rate and frame count (or duration) of the first video stream."""
        streams = self._container.streams.video
        rate, length = streams and (streams[0].average_rate or streams[0].guessed_rate), streams and streams[0].frames
        return bool(streams and streams[0].codec_context.width and rate and (length or streams[0].duration))

    def _index(self, pts: int) -> int:
        return int(round((pts * self._seconds_per_tick - self.start_time) * self.fps))

    def read(self, indices: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
        frames, stamps, missing = self._decode(indices, economical=True)
        if missing:  # never seen on x264 streams; a plain decode is the reference behaviour
            frames, stamps, missing = self._decode(indices, economical=False)
        if missing or frames is None:
            raise ValueError(f"PyAV: frames {sorted(missing)[:5]} of {self._path} did not decode (stream ended first)")
        return frames, stamps

    def _decode(self, indices: Sequence[int], economical: bool) -> tuple[np.ndarray | None, np.ndarray, set[int]]:
        """Frames (T, H, W, 3) and start seconds (T,) of ``indices``, and the indices that did not decode.

        Each wanted frame is converted straight into its row of the clip array (rows of a repeated index are
        copied). ``economical``: skip non-reference frames outside ``indices`` (h264) and drain the decoder once
        every packet of ``indices`` is sent instead of decoding later packets to push the last frames out.
        """
        rows: dict[int, list[int]] = {}  # frame index -> rows of the clip holding it
        for row, wanted in enumerate(indices):
            rows.setdefault(wanted, []).append(row)
        first, last = min(rows), max(rows)
        seek_seconds = self.start_time + first / self.fps
        self._container.seek(int(Fraction(seek_seconds) / self._time_base), stream=self._stream, backward=True)
        codec = self._stream.codec_context
        skip = economical and self._skip_nonref
        mode: Literal["DEFAULT", "NONREF"] = "DEFAULT"
        codec.skip_frame = mode
        unsent = set(rows)  # indices whose packet is not yet sent to the decoder
        missing = set(rows)  # indices not yet decoded
        clip: np.ndarray | None = None  # (T, H, W, 3), allocated at the first wanted frame (its size decides)
        stamps = np.zeros(len(indices), np.float64)  # (T,) start seconds
        for packet in self._container.demux(self._stream):
            index = self._index(packet.pts) if packet.pts is not None else None
            if skip:
                wanted_mode: Literal["DEFAULT", "NONREF"] = "DEFAULT" if index is None or index in rows else "NONREF"
                if wanted_mode != mode:
                    codec.skip_frame = mode = wanted_mode  # applies to the packets sent from now on
            frames = codec.decode(packet)
            self.sent_packets += 1
            self.decoded_frames += len(frames)
            unsent.discard(index)  # type: ignore[arg-type]
            drained = economical and not unsent and packet.size > 0
            if drained:
                held = codec.decode(None)  # end of input: the decoder hands over the frames it holds
                self.decoded_frames += len(held)
                frames = [*frames, *held]
            for frame in frames:
                if frame.pts is None:
                    continue
                frame_index = self._index(frame.pts)
                if frame_index in missing:
                    if clip is None:
                        height, width = frame.height, frame.width
                        if self._short_side is not None:
                            height, width = short_side_size(height, width, self._short_side)
                        clip = np.empty((len(indices), height, width, 3), np.uint8)
                    at = rows[frame_index]
                    self._convert(frame, clip[at[0]])
                    for row in at[1:]:
                        clip[row] = clip[at[0]]
                    stamps[at] = frame.pts * self._seconds_per_tick
                    missing.discard(frame_index)
                if frame_index >= last:
                    return clip, stamps, missing
            if drained:
                return clip, stamps, missing
        return clip, stamps, missing

    def _convert(self, frame: Any, out: np.ndarray) -> None:
        """Write ``frame`` as RGB at the size of ``out`` (H, W, 3): plain conversion at native size, else scaled."""
        height, width = out.shape[:2]
        if (height, width) == (frame.height, frame.width):
            out[...] = self._reformatter.reformat(frame, format="rgb24", threads=1).to_ndarray()  # (H, W, 3)
            return
        # Scaled packed-RGB output is swscale's slow path (~0.25 ms a frame here); planar RGB is ~0.1 ms.
        planar = self._reformatter.reformat(
            frame, width=width, height=height, format="gbrp", interpolation="BILINEAR", threads=1
        )
        for channel, plane in zip((1, 2, 0), planar.planes):  # gbrp stores the planes G, B, R
            padded = np.frombuffer(memoryview(plane), np.uint8).reshape(height, plane.line_size)  # (h, line_size)
            out[:, :, channel] = padded[:, :width]

    def __del__(self) -> None:
        container = getattr(self, "_container", None)
        if container is not None:
            container.close()


class _TorchCodecVideo:
    def __init__(self, path: str, num_threads: int) -> None:
        from torchcodec.decoders import VideoDecoder  # optional dependency

        self._decoder = VideoDecoder(path, seek_mode="exact", num_ffmpeg_threads=num_threads)
        meta = self._decoder.metadata
        self.num_frames = int(meta.num_frames or 0)
        self.fps = float(meta.average_fps or 0.0)
        self.start_time = float(getattr(meta, "begin_stream_seconds", 0.0) or 0.0)

    def read(self, indices: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
        batch = self._decoder.get_frames_at(indices=list(indices))
        frames = batch.data.permute(0, 2, 3, 1).numpy()  # (T, C, H, W) -> (T, H, W, C)
        return frames, batch.pts_seconds.numpy()


def open_video(
    path: str | Path,
    backend: DecoderBackend,
    num_threads: int = 1,
    settings: DecodeSettings | None = None,
    facts: VideoFacts | None = None,
    short_side: int | None = None,
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
    """
    if backend is DecoderBackend.DECORD:
        return _DecordVideo(str(path), num_threads)
    if backend is DecoderBackend.PYAV:
        settings = settings or DecodeSettings()
        return _PyAVVideo(
            str(path),
            num_threads,
            fast_probe=settings.fast_probe,
            skip_nonref=settings.skip_nonref,
            facts=facts,
            short_side=short_side,
        )
    if backend is DecoderBackend.TORCHCODEC:
        if importlib.util.find_spec("torchcodec") is None:
            raise ImportError("DecoderBackend.TORCHCODEC needs the 'torchcodec' package, which is not installed")
        return _TorchCodecVideo(str(path), num_threads)
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


# --------------------------------------------------------------------------------------------------------------------
# Quarantine


class QuarantineLog:
    """Append-only TSV of files that could not be read: one ``path<TAB>reason`` line each.

    Lines are written with a single ``write`` in append mode, so DataLoader workers and DDP ranks can share the file.
    """

    def __init__(self, path: str | Path | None) -> None:
        self.path = Path(path) if path is not None else None
        self.entries: list[tuple[str, str]] = []  # what this process quarantined

    def add(self, video: str | Path, reason: str) -> None:
        """Record ``video`` with a one-line ``reason`` (tabs and newlines are replaced)."""
        reason = " ".join(reason.replace("\t", " ").split())[:500]
        self.entries.append((str(video), reason))
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with open(self.path, "a", encoding="utf-8") as f:
                f.write(f"{video}\t{reason}\n")

    @staticmethod
    def read(path: str | Path) -> list[tuple[str, str]]:
        """The ``(path, reason)`` rows of a quarantine file."""
        with open(path, encoding="utf-8") as f:
            return [tuple(line.rstrip("\n").split("\t", 1)) for line in f if line.strip()]  # type: ignore[misc]


# --------------------------------------------------------------------------------------------------------------------
# Time-bounded execution


class _DecodeThread:
    """One daemon thread running jobs; a job that overruns is abandoned with its thread (daemon: exit never waits)."""

    def __init__(self) -> None:
        self._jobs: queue.SimpleQueue[tuple[Callable[[], Any], dict[str, Any], threading.Event]] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._loop, name="vidrec-decode", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while True:
            job, box, done = self._jobs.get()
            try:
                box["value"] = job()
            except BaseException as error:  # handed to the caller, re-raised there
                box["error"] = error
            done.set()

    def run(self, job: Callable[[], Any], timeout_s: float) -> Any:
        box: dict[str, Any] = {}
        done = threading.Event()
        self._jobs.put((job, box, done))
        if not done.wait(timeout_s):
            raise DecodeTimeout(f"read did not finish within {timeout_s:g} s")
        if "error" in box:
            raise box["error"]
        return box["value"]


# --------------------------------------------------------------------------------------------------------------------
# The reader


ChooseIndices = Callable[[int, float], list[int]]  # (decodable frame count, fps) -> frame indices of the clip
_MAX_FACTS = 1_000_000  # cached VideoFacts per reader (~200 bytes each)


class RobustVideoReader:
    """Reads clips with a time bound, clamps lying frame counts, checks timestamps and quarantines bad files.

    Safe to construct in the main process and pickle into DataLoader workers: it opens nothing until ``read``.

    Args:
        settings: backend, timeout and tolerance.
        quarantine_path: TSV file receiving ``path<TAB>reason`` for every file given up on; None keeps the list in
            memory only (``quarantine.entries``).
    """

    def __init__(self, settings: DecodeSettings | None = None, quarantine_path: str | Path | None = None) -> None:
        self.settings = settings or DecodeSettings()
        self.quarantine = QuarantineLog(quarantine_path)
        self._bad: set[str] = set()
        self._damaged: dict[str, int] = {}  # path -> frames that decode, for files whose header over-reports
        self._facts: dict[str, VideoFacts] = {}  # path -> header facts (PyAV), oldest dropped past _MAX_FACTS
        self.timestamp_mismatches = 0
        self._thread: _DecodeThread | None = None
        self._pid = -1

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_thread"], state["_pid"] = None, -1  # threads do not cross process boundaries
        return state

    def set_quarantine_path(self, path: str | Path | None) -> None:
        """Redirect the quarantine file (e.g. once the trainer's log dir is known)."""
        self.quarantine.path = Path(path) if path is not None else None

    def is_quarantined(self, path: str | Path) -> bool:
        """True when this process has given up on ``path``."""
        return str(path) in self._bad

    def read(self, path: str | Path, choose: ChooseIndices, short_side: int | None = None) -> DecodedClip | None:
        """Decode the clip ``choose(num_frames, fps)`` of ``path``; None (after quarantining it) when unreadable.

        Args:
            path: video file.
            choose: frame indices of the clip from the decodable frame count and the frame rate.
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
            self._thread, self._pid = _DecodeThread(), os.getpid()
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

    def _give_up(self, path: str, reason: str) -> None:
        self._bad.add(path)
        self.quarantine.add(path, reason)
        where = f" (listed in {self.quarantine.path})" if self.quarantine.path else ""
        warnings.warn(f"skipping unreadable video {path}: {reason}{where}", RuntimeWarning, stacklevel=3)

    def _open(self, path: str, backend: DecoderBackend | None = None, short_side: int | None = None) -> OpenVideo:
        """Open ``path``; ``short_side`` reaches PyAV only with ``scale_in_decoder`` (else the frames are native)."""
        if os.path.getsize(path) == 0:
            raise ValueError("zero-byte file")
        backend = backend or self.settings.backend
        facts = self._facts.get(path) if backend is DecoderBackend.PYAV else None
        scaled = short_side if self.settings.scale_in_decoder and backend is DecoderBackend.PYAV else None
        video = open_video(
            path, backend, self.settings.num_threads, settings=self.settings, facts=facts, short_side=scaled
        )
        if facts is None and isinstance(getattr(video, "facts", None), VideoFacts):
            if len(self._facts) >= _MAX_FACTS:
                del self._facts[next(iter(self._facts))]  # the oldest entry
            self._facts[path] = video.facts  # type: ignore[attr-defined]
        return video

    def _read_now(self, path: str, choose: ChooseIndices, short_side: int | None = None) -> DecodedClip:
        if path in self._damaged:  # known damaged: PyAV, inside the frames that decode
            count = self._damaged[path]
            video = self._open(path, DecoderBackend.PYAV, short_side)
            indices = choose(count, video.fps)
            frames, stamps = video.read(indices)
        else:
            video = self._open(path, short_side=short_side)
            count = video.num_frames
            if count <= 0:
                raise ValueError(f"header reports {video.num_frames} frames")
            if video.fps <= 0:
                raise ValueError(f"header reports frame rate {video.fps}")
            indices = choose(count, video.fps)
            try:
                frames, stamps = video.read(indices)
            except Exception as first_error:  # maybe a lying frame count: clamp, then read with PyAV
                count = self._clamp(path, video.num_frames)
                if count == 0:
                    raise ValueError(f"no frame decodes ({type(first_error).__name__}: {first_error})") from None
                video = self._open(path, DecoderBackend.PYAV, short_side)
                indices = choose(count, video.fps)
                frames, stamps = video.read(indices)
        if short_side is not None:
            frames = _resize_short_side(frames, short_side)  # no-op when swscale already scaled them
        frames = np.ascontiguousarray(frames)  # (T, H, W, 3) uint8
        stamps = stamps - video.start_time  # relative to frame 0
        return DecodedClip(frames=frames, indices=list(indices), timestamps=stamps, num_frames=count, fps=video.fps)

    def _clamp(self, path: str, header_count: int) -> int:
        """Decodable frame count, probed with PyAV (decord's threaded decoder fails at random on damaged streams)."""
        state: dict[str, OpenVideo] = {"video": self._open(path, DecoderBackend.PYAV)}

        def frame_decodes(index: int) -> bool:
            try:
                state["video"].read([index])
                return True
            except Exception:  # a failed probe is the answer "no"; the reader is reopened for the next probe
                state["video"] = self._open(path, DecoderBackend.PYAV)
                return False

        count = find_decodable_frame_count(frame_decodes, header_count)
        self._damaged[path] = count
        if count:
            warnings.warn(
                f"{path}: header reports {header_count} frames but only {count} decode; "
                "clips are taken from those, decoded with PyAV",
                RuntimeWarning,
                stacklevel=4,
            )
        return count

    def _check_timestamps(self, path: str, clip: DecodedClip) -> None:
        expected = np.asarray(clip.indices, dtype=np.float64) / clip.fps  # (T,) seconds from frame 0
        tolerance = self.settings.timestamp_tolerance_frames / clip.fps
        wrong = np.abs(clip.timestamps - expected) > tolerance
        if wrong.any():
            self.timestamp_mismatches += int(wrong.sum())
            first = int(np.argmax(wrong))
            warnings.warn(
                f"{path}: {int(wrong.sum())}/{len(wrong)} frames have timestamps off their index "
                f"(frame {clip.indices[first]}: {clip.timestamps[first]:.4f} s, expected {expected[first]:.4f} s)",
                RuntimeWarning,
                stacklevel=3,
            )
