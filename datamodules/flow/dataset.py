"""Map-style dataset of two-stream inputs: RGB frames, stacks of L flow fields, or both, joined by video id.

Sampling (positions are video frame indices ``t`` in ``[0, N)``; the flow stack of ``t`` is the L fields centred on
it, fields ``t - L // 2 .. t - L // 2 + L - 1``, field ``i`` being the motion from frame ``i`` to ``i + 1``):

* TRAIN (TSN, Wang et al. 2016): the video is cut into ``segments`` equal parts and one position is drawn in each;
  one item per video per epoch, inputs ``(K, C, H, W)`` (``(C, H, W)`` when ``segments == 1``).
* EVAL (the papers' test protocol): ``frames`` positions evenly spaced over the video, times ``crops`` spatial crops;
  one item per (video, position, crop) with ``"group"`` = the video's index, so the task averages the softmax scores
  per video.

Inputs: RGB ``(3, H, W)`` ImageNet-normalised; flow ``(2L, H, W)``, x/y interleaved, in units of the bound; BOTH
``{"rgb": ..., "flow": ...}`` at the same positions with the same relative crop and flip.

Bad input is never fatal (the item is taken from a substitute video, the problem written once to the quarantine
file and warned with the file's name): a missing or invalid flow file, a flow file whose frame count disagrees with
its video (BOTH mode, where both are read), an unreadable video. A stack that runs past either end of a video is
shifted inside it; a video with fewer than L fields repeats its edge fields, with a warning naming the file.
"""

from __future__ import annotations

import enum
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from datamodules.flow.schema import FlowFile, FlowFileError, flow_path
from datamodules.flow.transforms import (
    CropBox,
    FrameTransformSettings,
    crop_boxes,
    random_crop_box,
    transform_flow,
    transform_rgb,
)
from datamodules.video.decoding import QuarantineLog, RobustVideoReader

__all__ = [
    "SegmentSampling",
    "StreamInput",
    "TwoStreamDataset",
    "VideoEntry",
    "evaluation_positions",
    "stack_field_range",
]


class StreamInput(enum.Enum):
    """What a dataset item carries."""

    RGB = "rgb"
    FLOW = "flow"
    BOTH = "both"


class Mode(enum.Enum):
    """TRAIN: TSN segments, random crops. EVAL: evenly spaced positions x fixed crops."""

    TRAIN = "train"
    EVAL = "eval"


@dataclass
class SegmentSampling:
    """Where in a video inputs are taken.

    Attributes:
        stack_length: L flow fields per stack (2L input channels).
        segments: TSN segments per training item (K; the model averages its logits over them).
        val_frames: evenly spaced positions per validation video.
        val_crops: crops per validation position.
        test_frames: evenly spaced positions per test video (25 in the papers).
        test_crops: crops per test position: 1, 3 or 10.
    """

    stack_length: int = 10
    segments: int = 3
    val_frames: int = 5
    val_crops: int = 1
    test_frames: int = 25
    test_crops: int = 1

    def __post_init__(self) -> None:
        if min(self.stack_length, self.segments, self.val_frames, self.test_frames) < 1:
            raise ValueError(f"SegmentSampling values must be >= 1, got {self}")
        for name in ("val_crops", "test_crops"):
            if getattr(self, name) not in (1, 3, 10):
                raise ValueError(f"SegmentSampling.{name} must be 1, 3 or 10, got {getattr(self, name)}")


@dataclass(frozen=True)
class VideoEntry:
    """One labelled video: its id (relative path without suffix), file and label."""

    video_id: str
    path: Path
    label: int


def evaluation_positions(num_frames: int, count: int) -> list[int]:
    """``count`` frame indices evenly spaced over ``[0, num_frames)`` (the centres of ``count`` equal parts)."""
    return [min(int((j + 0.5) * num_frames / count), num_frames - 1) for j in range(count)]


def segment_positions(num_frames: int, segments: int, rng: np.random.Generator) -> list[int]:
    """One random frame index in each of ``segments`` equal parts of ``[0, num_frames)`` (TSN)."""
    edges = np.linspace(0, num_frames, segments + 1)
    return [min(int(rng.uniform(edges[k], edges[k + 1])), num_frames - 1) for k in range(segments)]


def stack_field_range(position: int, length: int, num_fields: int) -> tuple[int, int]:
    """``(start, stop)`` of the L fields centred on ``position``, shifted to lie inside ``[0, num_fields)``.

    With fewer than L fields the range is the whole video (the caller repeats edge fields to make up L).
    """
    start = position - length // 2
    start = max(0, min(start, num_fields - length))
    return start, min(start + length, num_fields)


class _SkipVideo(Exception):
    """This video cannot give the item; the message names the file (quarantined, another video is used)."""


class TwoStreamDataset(Dataset[dict[str, Any]]):
    """Two-stream inputs of labelled videos as ``{"inputs", "target", "group"}``.

    Args:
        videos: the split's videos.
        input: RGB, FLOW or BOTH.
        mode: TRAIN or EVAL.
        sampling: stack length, segments, evaluation positions and crops.
        transform: crop, flip and normalisation settings.
        reader: the robust video reader (RGB and BOTH).
        flow_root: folder of ``vidrec.flow/1`` files mirroring the video ids (FLOW and BOTH).
        frames: EVAL positions per video.
        crops: EVAL crops per position.
        max_substitutes: other videos tried in place of one that fails before giving up.
    """

    def __init__(
        self,
        videos: list[VideoEntry],
        input: StreamInput,
        mode: Mode,
        sampling: SegmentSampling,
        transform: FrameTransformSettings,
        reader: RobustVideoReader | None,
        flow_root: str | Path | None,
        frames: int = 25,
        crops: int = 1,
        max_substitutes: int = 20,
    ) -> None:
        if input is not StreamInput.RGB and flow_root is None:
            raise ValueError(f"TwoStreamDataset: input {input.value!r} needs flow_root (a folder of flow files)")
        if input is not StreamInput.FLOW and reader is None:
            raise ValueError(f"TwoStreamDataset: input {input.value!r} needs a video reader")
        self.videos = videos
        self.input = input
        self.mode = mode
        self.sampling = sampling
        self.transform = transform
        self.reader = reader
        self.flow_root = Path(flow_root) if flow_root is not None else None
        self.frames = frames if mode is Mode.EVAL else 1
        self.crops = crops if mode is Mode.EVAL else 1
        self.max_substitutes = max_substitutes
        self._bad: set[int] = set()
        self._warned_short: set[str] = set()
        self.quarantine = QuarantineLog(reader.quarantine.path if reader is not None else None)
        labels = np.asarray([v.label for v in videos], dtype=np.int64)
        self._same_class = {int(c): np.flatnonzero(labels == c) for c in np.unique(labels)}

    @property
    def views_per_video(self) -> int:
        """Items per video: 1 in TRAIN mode, frames x crops in EVAL mode."""
        return self.frames * self.crops

    def __len__(self) -> int:
        return len(self.videos) * self.views_per_video

    def set_quarantine_path(self, path: str | Path | None) -> None:
        """Where flow problems are listed (the reader's quarantine file)."""
        self.quarantine.path = Path(path) if path is not None else None

    def substitutes(self, video: int) -> list[int]:
        """Videos tried in place of ``video``: same class after it (cyclic), then any, at most ``max_substitutes``."""
        same = self._same_class[self.videos[video].label]
        order = [int(v) for v in np.concatenate([same[same > video], same[same < video]])]
        seen = set(order)
        order += [v for v in ((video + k) % len(self.videos) for k in range(1, len(self.videos))) if v not in seen]
        return order[: self.max_substitutes]

    # ------------------------------------------------------------------------------------------------ reading
    def _give_up(self, video: int, reason: str) -> None:
        self._bad.add(video)
        self.quarantine.add(self.videos[video].path, reason)
        warnings.warn(f"skipping video: {reason}", RuntimeWarning, stacklevel=3)

    def _flow_file(self, entry: VideoEntry) -> FlowFile:
        assert self.flow_root is not None
        path = flow_path(self.flow_root, entry.video_id)
        if not path.is_file():
            raise _SkipVideo(f"{path}: no flow file for video {entry.path} (run `vidrec data flow`)")
        try:
            return FlowFile(path)
        except FlowFileError as error:
            raise _SkipVideo(str(error)) from None

    def _positions(self, num_frames: int, view: int, rng: np.random.Generator) -> list[int]:
        if self.mode is Mode.TRAIN:
            return segment_positions(num_frames, self.sampling.segments, rng)
        return [evaluation_positions(num_frames, self.frames)[view // self.crops]]

    def _read_stacks(self, flow: FlowFile, positions: list[int]) -> np.ndarray:
        length = self.sampling.stack_length
        stacks = []
        for t in positions:
            start, stop = stack_field_range(t, length, flow.num_fields)
            fields = flow.read_fields(start, stop)  # (l, 2, H, W) uint8, l <= L
            if len(fields) < length:
                if str(flow.path) not in self._warned_short:
                    self._warned_short.add(str(flow.path))
                    warnings.warn(
                        f"{flow.path}: {flow.num_fields} flow fields, fewer than the stack length {length}; "
                        "repeating the last field",
                        RuntimeWarning,
                        stacklevel=4,
                    )
                fields = np.concatenate([fields, np.repeat(fields[-1:], length - len(fields), axis=0)])
            stacks.append(fields)
        return np.stack(stacks)  # (K, L, 2, H, W)

    def _read_rgb(self, entry: VideoEntry, pick: Any) -> tuple[np.ndarray, int]:
        assert self.reader is not None
        clip = self.reader.read(entry.path, pick, self.transform.short_side)
        if clip is None:
            reason = self.reader.quarantine.entries[-1][1] if self.reader.quarantine.entries else "unreadable"
            raise _SkipVideo(f"{entry.path}: {reason}")
        return clip.frames, clip.num_frames  # (K, H, W, 3) uint8

    def _item(self, video: int, view: int, rng: np.random.Generator) -> dict[str, Tensor]:
        entry = self.videos[video]
        inputs: dict[str, Tensor] = {}
        box: CropBox | None = None
        if self.input is StreamInput.RGB:
            chosen: dict[str, list[int]] = {}

            def pick(num_frames: int, fps: float) -> list[int]:
                chosen["positions"] = self._positions(num_frames, view, rng)
                return chosen["positions"]

            frames, _ = self._read_rgb(entry, pick)
            box = self._box(frames.shape[1:3], view, rng)
            inputs["rgb"] = transform_rgb(frames, box, self.transform)  # (K, 3, S, S)
        else:
            with self._flow_file(entry) as flow:
                num_frames = flow.header.video_frames
                positions = self._positions(num_frames, view, rng)
                stacks = self._read_stacks(flow, positions)  # (K, L, 2, H, W)
            box = self._box(stacks.shape[-2:], view, rng)
            inputs["flow"] = transform_flow(stacks, box, self.transform)  # (K, 2L, S, S)
            if self.input is StreamInput.BOTH:
                frames, decoded = self._read_rgb(entry, lambda n, fps: [min(p, n - 1) for p in positions])
                if decoded != num_frames:
                    raise _SkipVideo(
                        f"{flow.path}: flow file made from {num_frames} frames but the video {entry.path} has "
                        f"{decoded} decodable frames (re-extract it with `vidrec data flow`)"
                    )
                inputs["rgb"] = transform_rgb(frames, box, self.transform)
        if self.mode is Mode.EVAL or self.sampling.segments == 1:
            inputs = {k: v[0] for k, v in inputs.items()}  # (C, S, S)
        return inputs

    def _box(self, size: tuple[int, ...], view: int, rng: np.random.Generator) -> CropBox:
        height, width = int(size[0]), int(size[1])
        if self.mode is Mode.TRAIN:
            return random_crop_box(self.transform, height, width, rng)
        return crop_boxes(self.transform, height, width, self.crops)[view % self.crops]

    def __getitem__(self, index: int) -> dict[str, Any]:
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} items")
        video, view = divmod(index, self.views_per_video)
        # TRAIN: fresh randomness per read from torch's generator (seeded per DataLoader worker by torch)
        seed = int(torch.randint(0, 2**31 - 1, ()).item()) if self.mode is Mode.TRAIN else index
        for candidate in [video, *self.substitutes(video)]:
            if candidate in self._bad:
                continue
            try:
                inputs = self._item(candidate, view, np.random.default_rng(seed))
            except _SkipVideo as problem:
                self._give_up(candidate, str(problem))
                continue
            value: Any = inputs if self.input is StreamInput.BOTH else inputs[self.input.value]
            return {"inputs": value, "target": self.videos[candidate].label, "group": candidate}
        raise RuntimeError(
            f"video {self.videos[video].path} and {self.max_substitutes} substitutes all failed; "
            f"see the quarantine list {self.quarantine.path}"
        )
