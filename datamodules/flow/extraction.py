"""Optical-flow extraction of a video collection into ``vidrec.flow/1`` files (``vidrec data flow``).

Per video (:func:`extract_video_flow`): frames are decoded by vidrec's ``RobustVideoReader`` in chunks of
``chunk_frames`` (consecutive chunks share a frame, so memory is bounded on long videos), converted to
grayscale, resized to ``short_side``, and the flow of every consecutive pair is computed, quantised with the fixed
bound and written to ``<id>.h5.partial``; the file gets ``complete = True`` and is renamed to ``<id>.h5`` only when
every field is written, so a killed run leaves no file that looks finished.

Over a collection (:func:`extract_flow`):

* **Resumable.** A video whose ``.h5`` exists, verifies against the schema and was made with the same extractor
  parameters is skipped; a half-written ``.partial``, a file that fails verification or one made with other
  parameters is redone.
* **Worker processes** (``workers``): each computes whole videos with a one-threaded OpenCV; the parent writes
  nothing but the quarantine list and the progress bar (videos done, frames/s, ETA).
* **Bad input never stops the run.** A video with no decodable frame, one frame only (no pair: no flow), a corrupt
  or truncated file, a hang: the video is recorded as ``path<TAB>reason`` in ``<out>/quarantine.tsv`` (the video
  datamodules' format), the warning names the file, and the run goes on.

Live video (:class:`IncrementalFlow`): the flow of each new frame from the cached previous frame only, through the
same grayscale/resize, estimator and quantisation (:func:`flow_field`) as a file, so a streamed field equals the
stored one of the same two frames.

The per-frame loop of mmaction2's ``tools/misc/flow_extraction.py`` (the same OpenCV call, one JPEG per component and
frame) is reproduced by ``tools/bench_flow.py`` for comparison.
"""

from __future__ import annotations

import enum
import json
import multiprocessing
import os
import time
import warnings
from collections.abc import Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from datamodules.flow.methods import FlowEstimator, FlowMethod, FlowSettings, build_estimator, require_cv2_optflow
from datamodules.flow.schema import FlowFileError, FlowHeader, flow_path, quantize, verify_flow_file
from datamodules.video.decoding import DecodeSettings, QuarantineLog, RobustVideoReader

__all__ = [
    "ExtractionStatus",
    "ExtractionSummary",
    "FlowInputError",
    "IncrementalFlow",
    "VideoOutcome",
    "extract_flow",
    "extract_video_flow",
    "find_videos",
    "flow_field",
    "to_gray_short_side",
]

VIDEO_SUFFIXES = (".mp4", ".avi", ".mkv", ".webm", ".mov", ".m4v", ".mpg", ".mpeg")


class FlowInputError(ValueError):
    """A video cannot give optical flow (no frame or a single frame); the message names the file."""


class ExtractionStatus(enum.Enum):
    """What happened to one video."""

    DONE = "done"
    SKIPPED = "skipped"  # a verified file with the same parameters was already there
    FAILED = "failed"  # quarantined


@dataclass
class VideoOutcome:
    """The result of one video: its id, status, fields written, seconds and (when failed) the reason."""

    video_id: str
    status: ExtractionStatus
    fields: int = 0
    seconds: float = 0.0
    reason: str = ""


@dataclass
class ExtractionSummary:
    """A collection run: counts per status, fields computed, wall time and where the quarantine list is."""

    done: int
    skipped: int
    failed: int
    fields: int
    seconds: float
    quarantine_path: Path
    outcomes: list[VideoOutcome]


def find_videos(root: str | Path) -> list[tuple[str, Path]]:
    """``(id, path)`` of every video under ``root`` (recursive, sorted); ``id``: the relative path without suffix."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"video root {root} is not a folder")
    found = []
    for dirpath, _, files in os.walk(root):
        for name in files:
            path = Path(dirpath) / name
            if path.suffix.lower() in VIDEO_SUFFIXES:
                found.append((path.relative_to(root).with_suffix("").as_posix(), path))
    return sorted(found)


def to_gray_short_side(frames: np.ndarray, short_side: int | None) -> np.ndarray:
    """uint8 RGB ``(T, H, W, 3)`` -> uint8 grayscale ``(T, h, w)`` with short side ``short_side`` (area resampling)."""
    cv2 = require_cv2_optflow()
    t, h, w = frames.shape[:3]
    if short_side is None or min(h, w) == short_side:
        size = (w, h)
    elif h <= w:
        size = (int(round(w * short_side / h)), short_side)
    else:
        size = (short_side, int(round(h * short_side / w)))
    out = np.empty((t, size[1], size[0]), dtype=np.uint8)
    for k in range(t):
        gray = cv2.cvtColor(frames[k], cv2.COLOR_RGB2GRAY)
        out[k] = gray if size == (w, h) else cv2.resize(gray, size, interpolation=cv2.INTER_AREA)
    return out


def flow_field(estimator: FlowEstimator, previous: np.ndarray, current: np.ndarray, bound: float) -> np.ndarray:
    """The stored field of one pair of grayscale frames ``(H, W)``: uint8 ``(2, H, W)``, x then y, quantised."""
    q = quantize(estimator(previous, current), bound)  # (H, W, 2) px -> uint8, on the contiguous float field
    return np.ascontiguousarray(q.transpose(2, 0, 1))  # (2, H, W): moving bytes is cheaper than strided floats


class IncrementalFlow:
    """Flow of a live video, one field per new frame, from the cached previous frame only.

    Each frame goes through :func:`to_gray_short_side` and the pair through :func:`flow_field`, as in
    :func:`extract_video_flow`: with the same ``FlowSettings`` field ``k`` equals the stored field ``k`` (frames
    ``k -> k + 1``) of the same frames.

    Args:
        settings: The extractor's settings (the flow checkpoint's, stored in its deployment spec).
    """

    def __init__(self, settings: FlowSettings) -> None:
        self.settings = settings
        self._estimator = build_estimator(settings)
        self._previous: np.ndarray | None = None

    def reset(self) -> None:
        """Forget the cached frame (a new stream: its first frame gives no field)."""
        self._previous = None

    def push(self, rgb: np.ndarray) -> np.ndarray | None:
        """uint8 RGB ``(H, W, 3)`` -> the field from the previous frame to it, uint8 ``(2, h, w)``; None at first."""
        gray = to_gray_short_side(rgb[None], self.settings.short_side)[0]  # (h, w) uint8
        previous, self._previous = self._previous, gray
        if previous is None:
            return None
        if previous.shape != gray.shape:
            raise ValueError(f"IncrementalFlow: frame size changed from {previous.shape} to {gray.shape} mid-stream")
        return flow_field(self._estimator, previous, gray, self.settings.bound)


def _settings_match(header: FlowHeader, settings: FlowSettings) -> bool:
    return header.params == settings.as_dict()


def extract_video_flow(
    video: str | Path,
    out: str | Path,
    settings: FlowSettings,
    reader: RobustVideoReader | None = None,
    estimator: FlowEstimator | None = None,
) -> int:
    """Compute and write the flow of one video to ``out`` (a ``vidrec.flow/1`` file); the number of fields.

    ``estimator``: one built from ``settings`` to reuse across videos (default: built here).

    Raises:
        FlowInputError: the video has no decodable frame or a single frame; or the reader gave up on it.
    """
    video, out = Path(video), Path(out)
    reader = reader or RobustVideoReader(DecodeSettings())
    estimator = estimator or build_estimator(settings)
    partial = out.with_name(out.name + ".partial")
    partial.parent.mkdir(parents=True, exist_ok=True)
    chunk = settings.chunk_frames

    def frames_from(start: int) -> tuple[np.ndarray, int, float, tuple[int, int]]:
        clip = reader.read(video, lambda n, fps: list(range(min(start, n - 1), min(start + chunk, n))))
        if clip is None:
            reason = reader.quarantine.entries[-1][1] if reader.quarantine.entries else "unreadable"
            raise FlowInputError(f"{video}: {reason}")
        size = (int(clip.frames.shape[1]), int(clip.frames.shape[2]))
        return to_gray_short_side(clip.frames, settings.short_side), clip.num_frames, clip.fps, size

    gray, num_frames, fps, source_size = frames_from(0)
    if num_frames < 2:
        raise FlowInputError(f"{video}: {num_frames} decodable frame(s); optical flow needs at least two")
    fields = num_frames - 1
    height, width = gray.shape[1:]
    header = FlowHeader(
        source=str(video),
        video_frames=num_frames,
        fps=fps,
        bound=settings.bound,
        method=settings.method.value,
        params=settings.as_dict(),
        source_size=source_size,
        size=(height, width),
    )
    compression: dict[str, Any] = {"compression": settings.compression} if settings.compression else {}
    if settings.compression == "gzip":
        compression["compression_opts"] = 1  # level 1: most of gzip's ratio on flow, a fraction of its time
    with h5py.File(partial, "w") as f:
        f.attrs.update(header.attributes())
        f.attrs["complete"] = False
        flow_ds = f.create_dataset(
            "flow", shape=(fields, 2, height, width), dtype=np.uint8, chunks=(1, 2, height, width), **compression
        )
        pairs = np.stack([np.arange(fields), np.arange(1, fields + 1)], axis=1).astype(np.int32)  # (N-1, 2)
        f.create_dataset("frame_indices", data=pairs)
        start = 0  # video index of gray[0]
        while True:
            block = np.empty((len(gray) - 1, 2, height, width), dtype=np.uint8)  # one write per decoded chunk
            for k in range(len(gray) - 1):
                block[k] = flow_field(estimator, gray[k], gray[k + 1], settings.bound)  # (2, H, W) uint8
            flow_ds[start : start + len(block)] = block
            start += len(gray) - 1
            if start >= fields:
                break
            gray, count, _, _ = frames_from(start)  # the next chunk starts with the last frame of this one
            if count != num_frames:
                raise FlowInputError(f"{video}: decodable frame count changed from {num_frames} to {count} mid-read")
        f.attrs["complete"] = True
    os.replace(partial, out)
    return fields


# --------------------------------------------------------------------------------------------------------------------
# A collection


@dataclass
class _Job:
    video_id: str
    video: Path
    out: Path
    settings: FlowSettings
    decode: DecodeSettings


def _existing_is_valid(out: Path, settings: FlowSettings) -> tuple[bool, str]:
    if not out.exists():
        return False, ""
    try:
        header = verify_flow_file(out)
    except FlowFileError as error:
        return False, str(error)
    if not _settings_match(header, settings):
        return False, f"{out}: made with other parameters ({header.params}); recomputing"
    return True, ""


_ESTIMATORS: dict[str, FlowEstimator] = {}  # per process: RAFT's weights are loaded once, not once a video


def _estimator(settings: FlowSettings) -> FlowEstimator:
    key = json.dumps([settings.as_dict(), settings.device], sort_keys=True)
    if key not in _ESTIMATORS:
        _ESTIMATORS.clear()
        _ESTIMATORS[key] = build_estimator(settings)
    return _ESTIMATORS[key]


def _run_job(job: _Job) -> VideoOutcome:
    """Extract one video (in a worker): never raises; failures come back as FAILED outcomes."""
    start = time.perf_counter()
    try:
        require_cv2_optflow().setNumThreads(1)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the parent reports each failure once
            reader = RobustVideoReader(job.decode)
            fields = extract_video_flow(job.video, job.out, job.settings, reader, _estimator(job.settings))
        return VideoOutcome(job.video_id, ExtractionStatus.DONE, fields, time.perf_counter() - start)
    except Exception as error:  # any failure of one video is recorded and the run goes on
        job.out.with_name(job.out.name + ".partial").unlink(missing_ok=True)
        reason = str(error) if isinstance(error, FlowInputError) else f"{job.video}: {type(error).__name__}: {error}"
        return VideoOutcome(job.video_id, ExtractionStatus.FAILED, 0, time.perf_counter() - start, reason)


def _outcomes(jobs: Sequence[_Job], workers: int) -> Iterator[VideoOutcome]:
    if workers <= 1:
        for job in jobs:
            yield _run_job(job)
        return
    # RAFT may run on CUDA, which a forked child cannot initialise: its workers are spawned
    raft = any(job.settings.method is FlowMethod.RAFT for job in jobs)
    context = multiprocessing.get_context("spawn") if raft else None
    with ProcessPoolExecutor(workers, mp_context=context) as pool:
        yield from pool.map(_run_job, jobs, chunksize=1)


def extract_flow(
    video_root: str | Path,
    out: str | Path,
    settings: FlowSettings | None = None,
    workers: int = 1,
    decode: DecodeSettings | None = None,
    videos: Sequence[tuple[str, Path]] | None = None,
    progress: bool = True,
) -> ExtractionSummary:
    """Extract the flow of every video under ``video_root`` into ``out`` (resumable, see the module docstring).

    Args:
        video_root: folder of videos (any depth; the ids are relative paths).
        out: flow root; ``<out>/<id>.h5`` per video and ``<out>/quarantine.tsv``.
        settings: the extractor (default: DIS medium, short side 256, bound 20).
        workers: worker processes.
        decode: reader settings (time bound per read and backend).
        videos: ``(id, path)`` pairs to extract instead of everything under ``video_root``.
        progress: show a progress bar (videos, frames/s, ETA).
    """
    settings = settings or FlowSettings()
    decode = decode or DecodeSettings()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    listed = list(videos) if videos is not None else find_videos(video_root)
    quarantine = QuarantineLog(out / "quarantine.tsv")
    outcomes: list[VideoOutcome] = []
    jobs = []
    for video_id, path in listed:
        target = flow_path(out, video_id)
        target.with_name(target.name + ".partial").unlink(missing_ok=True)  # half-written by an earlier run
        valid, why = _existing_is_valid(target, settings)
        if valid:
            outcomes.append(VideoOutcome(video_id, ExtractionStatus.SKIPPED))
            continue
        if why:
            warnings.warn(f"redoing {why}", RuntimeWarning, stacklevel=2)
        jobs.append(_Job(video_id, Path(path), target, settings, decode))

    bar = _Progress(len(jobs), enabled=progress)
    with bar:
        for outcome in _outcomes(jobs, workers):
            outcomes.append(outcome)
            if outcome.status is ExtractionStatus.FAILED:
                quarantine.add(dict((j.video_id, j.video) for j in jobs)[outcome.video_id], outcome.reason)
                warnings.warn(f"flow: skipping {outcome.reason}", RuntimeWarning, stacklevel=2)
            bar.advance(outcome.fields)
    count = {s: sum(o.status is s for o in outcomes) for s in ExtractionStatus}
    return ExtractionSummary(
        done=count[ExtractionStatus.DONE],
        skipped=count[ExtractionStatus.SKIPPED],
        failed=count[ExtractionStatus.FAILED],
        fields=sum(o.fields for o in outcomes),
        seconds=time.perf_counter() - start,
        quarantine_path=quarantine.path or out / "quarantine.tsv",
        outcomes=outcomes,
    )


class _Progress:
    """A rich progress bar over videos with the flow fields per second and the ETA."""

    def __init__(self, total: int, enabled: bool) -> None:
        self.enabled = enabled and total > 0
        self.total = total
        self.fields = 0
        self.start = time.perf_counter()
        if self.enabled:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

            self.progress = Progress(
                TextColumn("flow"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("videos, {task.fields[rate]} frames/s"),
                TimeRemainingColumn(),
            )
            self.task = self.progress.add_task("flow", total=total, rate="-")

    def __enter__(self) -> _Progress:
        if self.enabled:
            self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.enabled:
            self.progress.stop()

    def advance(self, fields: int) -> None:
        self.fields += fields
        if self.enabled:
            rate = self.fields / max(time.perf_counter() - self.start, 1e-9)
            self.progress.update(self.task, advance=1, rate=f"{rate:.1f}")
