"""Per-frame feature extraction: a vidrec checkpoint or a torchvision backbone over every video of a data set.

The feature of frame ``t`` is what a streaming backbone would cache at ``t``: the clip of ``context_frames`` frames
ending at ``t`` (``frame_stride`` native frames apart; frames before the video's start repeat frame 0, the edge fill
of the streaming runtime) goes through the backbone's ``forward_features``; the last temporal position is averaged
over space. For a vidrec checkpoint the clip length defaults to the model's temporal receptive field, so a valid
(streamable) R(2+1)D or P3D gives exactly one position per clip; a 2D torchvision backbone (``resnet101``: the
paper's) reads the frame alone. Frames are taken at ``frames`` evenly spaced positions (the centres of equal
segments; the paper's 25), at every frame, or at every ``frame_step``-th frame (``0, N, 2N, ...``: the sampling a
live stream can reproduce, ``vidrec.streaming.features``).

Writes the feature file of ``datamodules.features.schema``: per video ``(T, D)`` features, frame indices, label,
split, fps, and at the root the extractor's settings and the checkpoint's (or weights') sha256. Batched (clips of a
video go through the backbone ``batch_size`` at a time), resumable (videos already complete in the file are skipped;
a file of another extractor is refused), with a progress bar; unreadable videos are quarantined (recorded in the file
and in ``<out>.quarantine.tsv``) and the run goes on. Weights are only ever read from local files.
"""

from __future__ import annotations

import enum
import hashlib
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from datamodules.features.schema import FeatureFileInfo, FeatureWriter, VideoFeatures, video_key
from datamodules.video.decoding import DecodeSettings, RobustVideoReader
from datamodules.video.transforms import KINETICS_MEAN, KINETICS_STD, EvalClipTransform, TransformSettings

__all__ = [
    "ExtractorKind",
    "ExtractionSettings",
    "FrameEncoder",
    "ExtractionSummary",
    "LabelledVideo",
    "sampled_frames",
    "checkpoint_encoder",
    "torchvision_encoder",
    "extract_features",
    "file_sha256",
]


class ExtractorKind(enum.Enum):
    """Where the backbone comes from."""

    CHECKPOINT = "checkpoint"  # a model trained with `vidrec fit` (RGB or flow stream, P3D, R(2+1)D)
    TORCHVISION = "torchvision"  # torchvision.models.<name> with weights from a local file
    FLOW_CHECKPOINT = "flow_checkpoint"  # a two-stream temporal stream over flow stacks (features.flow_features)


@dataclass
class ExtractionSettings:
    """How frames are sampled and preprocessed.

    Attributes:
        frames: F evenly spaced frames per video (the paper: 25); None: every ``frame_step``-th frame.
        frame_step: with ``frames=None``: native frames between sampled frames (1: every frame).
        batch_size: clips per forward pass.
        short_side: frames are resized so their short side is this ...
        crop_size: ... and centre-cropped to this square.
        mean: per-channel mean of frames in [0, 1] (the backbone's training normalisation).
        std: per-channel standard deviation.
        frame_stride: native frames between the frames of a clip (the checkpoint's training ``frame_stride``).
        context_frames: frames per clip; None: the backbone's temporal receptive field (1 for 2D backbones).
        dtype: stored feature dtype, "float16" or "float32".
    """

    frames: int | None = 25
    frame_step: int = 1
    batch_size: int = 32
    short_side: int = 128
    crop_size: int = 112
    mean: tuple[float, float, float] = KINETICS_MEAN
    std: tuple[float, float, float] = KINETICS_STD
    frame_stride: int = 1
    context_frames: int | None = None
    dtype: str = "float16"

    def __post_init__(self) -> None:
        if self.frames is not None and self.frames < 1:
            raise ValueError(f"frames must be >= 1 or None (every frame), got {self.frames}")
        if self.batch_size < 1 or self.frame_stride < 1 or self.frame_step < 1:
            raise ValueError(
                f"batch_size, frame_stride and frame_step must be >= 1, got {self.batch_size}, {self.frame_stride}, "
                f"{self.frame_step}"
            )
        if self.frames is not None and self.frame_step != 1:
            raise ValueError("frame_step applies to every-frame sampling (frames=None) only")

    @property
    def sampling(self) -> dict[str, Any]:
        """The feature file's ``sampling`` record."""
        if self.frames is not None:
            return {"mode": "uniform", "frames": self.frames}
        if self.frame_step == 1:
            return {"mode": "every", "frames": None}
        return {"mode": "every", "frames": None, "step": self.frame_step}


@dataclass
class FrameEncoder:
    """A backbone turning clips ``(N, 3, context_frames, H, W)`` into features ``(N, D)``."""

    encode: Callable[[Tensor], Tensor]
    context_frames: int
    feature_dim: int
    description: dict[str, Any]  # kind, name, weights file and sha256: goes into the feature file


@dataclass
class LabelledVideo:
    """One video to extract."""

    path: Path
    relative: str  # path relative to the data set root (the feature file's key)
    label: int
    split: str


@dataclass
class ExtractionSummary:
    """What an extraction did, with its throughput."""

    written: int = 0
    skipped: int = 0  # already complete in the file (resume)
    quarantined: list[str] = field(default_factory=list)
    clips: int = 0  # backbone inputs (one per sampled frame)
    decoded_frames: int = 0
    seconds: float = 0.0
    encode_seconds: float = 0.0

    @property
    def clips_per_second(self) -> float:
        """Sampled frames (clips) per second of wall time, decoding included."""
        return self.clips / self.seconds if self.seconds else 0.0

    @property
    def frames_per_second(self) -> float:
        """Decoded video frames per second of wall time."""
        return self.decoded_frames / self.seconds if self.seconds else 0.0


def file_sha256(path: str | Path) -> str:
    """sha256 of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def sampled_frames(num_frames: int, frames: int | None, step: int = 1) -> np.ndarray:
    """Native indices of the sampled frames: the centres of ``frames`` equal segments, or (None) every ``step``-th
    frame from frame 0."""
    if num_frames < 1:
        raise ValueError(f"a video with {num_frames} frames has nothing to sample")
    if frames is None:
        return np.arange(0, num_frames, step, dtype=np.int64)
    return np.minimum(((np.arange(frames) + 0.5) * num_frames / frames).astype(np.int64), num_frames - 1)


def _pooled_last_position(features: Tensor) -> Tensor:
    """``(N, C, T', H', W') -> (N, C)``: the last temporal position, averaged over space."""
    if features.dim() == 5:
        return features[:, :, -1].mean(dim=(2, 3))
    if features.dim() == 4:  # (N, C, H', W')
        return features.mean(dim=(2, 3))
    if features.dim() == 2:
        return features
    raise ValueError(f"backbone features of shape {tuple(features.shape)}; expected (N, C[, T], H, W) or (N, C)")


def checkpoint_encoder(path: str | Path, context_frames: int | None = None) -> FrameEncoder:
    """The ``forward_features`` of a vidrec video checkpoint (RGB stream, R(2+1)D, P3D) as a frame encoder.

    Raises:
        ValueError: the checkpoint's model has no ``forward_features`` (not a vidrec video model).
    """
    from vidrec.tasks.checkpoint import load_checkpoint

    loaded = load_checkpoint(path)
    model = loaded.model.eval()
    forward_features = getattr(model, "forward_features", None)
    if not callable(forward_features):
        raise ValueError(f"{path}: {type(model).__name__} has no forward_features; expected a vidrec video model")
    receptive = int(getattr(model, "receptive_field", 1) or 1)
    context = context_frames or receptive
    if context < receptive:
        raise ValueError(f"{path}: context_frames={context} is shorter than the model's receptive field {receptive}")
    in_channels = next(m for m in model.modules() if isinstance(m, nn.Conv3d)).in_channels
    probe = torch.zeros(1, in_channels, context, 32, 32)
    with torch.inference_mode():
        dim = int(_pooled_last_position(forward_features(probe)).shape[1])

    def encode(clips: Tensor) -> Tensor:
        return _pooled_last_position(forward_features(clips))

    return FrameEncoder(
        encode=encode,
        context_frames=context,
        feature_dim=dim,
        description={
            "kind": ExtractorKind.CHECKPOINT.value,
            "name": type(model).__name__,
            "checkpoint": str(Path(path).resolve()),
            "checkpoint_sha256": file_sha256(path),
            "receptive_field": receptive,
        },
    )


def _drop_classifier(model: nn.Module, name: str) -> int:
    """Replace the last linear layer of a torchvision classifier by the identity; returns its input size."""
    for attr in ("fc", "head", "heads", "classifier"):
        layer = getattr(model, attr, None)
        if isinstance(layer, nn.Linear):
            setattr(model, attr, nn.Identity())
            return int(layer.in_features)
        if isinstance(layer, nn.Sequential) and len(layer) and isinstance(layer[-1], nn.Linear):
            dim = int(layer[-1].in_features)
            layer[-1] = nn.Identity()
            return dim
    raise ValueError(f"torchvision model {name!r}: no final linear layer (fc / head / classifier) to remove")


def torchvision_encoder(name: str, weights: str | Path | None) -> FrameEncoder:
    """A torchvision classifier without its last linear layer, weights read from a local file.

    Args:
        name: a builder of ``torchvision.models`` (2D, e.g. ``resnet101``, reading each frame alone) or of
            ``torchvision.models.video`` (e.g. ``r2plus1d_18``, reading 16-frame clips).
        weights: a local state_dict (``.pth``) of that builder; None keeps the random initialisation (tests and
            timing only: the file then records ``"weights": null``). Nothing is ever downloaded.
    """
    import torchvision

    video = name in torchvision.models.list_models(module=torchvision.models.video)
    if not video and name not in torchvision.models.list_models(module=torchvision.models):
        raise ValueError(f"unknown torchvision model {name!r}")
    model = torchvision.models.get_model(name, weights=None)
    description: dict[str, Any] = {"kind": ExtractorKind.TORCHVISION.value, "name": name, "weights": None}
    if weights is not None:
        file = Path(weights)
        if not file.is_file():
            raise FileNotFoundError(f"--weights {file} does not exist (a local state_dict of torchvision {name})")
        state = torch.load(file, map_location="cpu", weights_only=True)
        model.load_state_dict(state.get("state_dict", state) if isinstance(state, dict) else state)
        description.update(weights=str(file.resolve()), weights_sha256=file_sha256(file))
    dim = _drop_classifier(model, name)
    model.eval()
    context = 16 if video else 1

    def encode(clips: Tensor) -> Tensor:
        return model(clips) if video else model(clips[:, :, -1])  # (N, 3, T, H, W) or its last frame (N, 3, H, W)

    return FrameEncoder(encode=encode, context_frames=context, feature_dim=dim, description=description)


def _context_indices(frames: np.ndarray, context: int, stride: int) -> np.ndarray:
    """``(N, context)`` native indices of each sampled frame's clip, clamped at the video's start (edge fill)."""
    offsets = (np.arange(context) - (context - 1)) * stride  # (context,) ... -2s, -s, 0
    return np.maximum(frames[:, None] + offsets[None], 0)


def extract_features(
    videos: Sequence[LabelledVideo],
    encoder: FrameEncoder,
    out: str | Path,
    settings: ExtractionSettings,
    *,
    class_names: Sequence[str],
    source: str = "",
    decode: DecodeSettings | None = None,
    progress: bool = True,
) -> ExtractionSummary:
    """Extract per-frame features of ``videos`` into the feature file ``out`` (resuming it when it exists)."""
    out = Path(out)
    context = settings.context_frames or encoder.context_frames
    # the sampling is the file's `sampling` record, not the extractor's (files of one backbone join across samplings)
    settings_record = {**asdict(settings), "context_frames": context}
    settings_record.pop("frame_step")
    info = FeatureFileInfo(
        feature_dim=encoder.feature_dim,
        dtype=settings.dtype,
        class_names=list(class_names),
        sampling=settings.sampling,
        extractor={**encoder.description, "settings": settings_record},
        source=source,
    )
    reader = RobustVideoReader(decode or DecodeSettings(), out.with_name(out.name + ".quarantine.tsv"))
    transform = EvalClipTransform(
        TransformSettings(
            crop_size=settings.crop_size,
            train_short_side=settings.short_side,
            test_short_side=settings.short_side,
            mean=settings.mean,
            std=settings.std,
        )
    )
    summary = ExtractionSummary()
    started = time.perf_counter()
    with FeatureWriter(out, info) as writer, _progress(progress, len(videos)) as advance:
        for video in videos:
            key = video_key(video.relative)
            if writer.done(key):
                summary.skipped += 1
                advance()
                continue
            picked: dict[str, np.ndarray] = {}

            def choose(num_frames: int, fps: float, picked: dict[str, np.ndarray] = picked) -> list[int]:
                frames = sampled_frames(num_frames, settings.frames, settings.frame_step)
                clips = _context_indices(frames, context, settings.frame_stride)  # (N, context)
                unique, inverse = np.unique(clips, return_inverse=True)
                picked.update(frames=frames, inverse=inverse.reshape(clips.shape))
                return [int(i) for i in unique]

            clip = reader.read(video.path, choose, short_side=settings.short_side)
            if clip is None:
                reason = reader.quarantine.entries[-1][1] if reader.quarantine.entries else "unreadable"
                writer.quarantine(video.relative, reason)
                summary.quarantined.append(video.relative)
                advance()
                continue
            pixels = transform(clip.frames)  # (3, U, crop, crop), U unique decoded frames
            inverse = torch.from_numpy(picked["inverse"])  # (N, context) positions among the U frames
            t0 = time.perf_counter()
            feats = []
            with torch.inference_mode():
                for start in range(0, len(inverse), settings.batch_size):
                    rows = inverse[start : start + settings.batch_size]  # (n, context)
                    clips = pixels[:, rows].permute(1, 0, 2, 3, 4)  # (3, n, context, h, w) -> (n, 3, context, h, w)
                    feats.append(encoder.encode(clips.contiguous()).float())
            summary.encode_seconds += time.perf_counter() - t0
            writer.write(
                VideoFeatures(
                    key=key,
                    path=video.relative,
                    features=torch.cat(feats).numpy(),  # (N, D)
                    frame_indices=picked["frames"],
                    label=video.label,
                    split=video.split,
                    fps=clip.fps,
                    num_frames=clip.num_frames,
                )
            )
            summary.written += 1
            summary.clips += len(inverse)
            summary.decoded_frames += len(clip.indices)
            advance()
    summary.seconds = time.perf_counter() - started
    return summary


class _progress:
    """A rich progress bar over videos (or nothing), as a context manager returning ``advance()``."""

    def __init__(self, enabled: bool, total: int) -> None:
        self.enabled, self.total = enabled, total
        self._bar: Any = None

    def __enter__(self) -> Callable[[], None]:
        if not self.enabled:
            return lambda: None
        from rich.progress import Progress

        self._bar = Progress(transient=False)
        self._bar.start()
        task = self._bar.add_task("extracting features", total=self.total)
        return lambda: self._bar.advance(task)

    def __exit__(self, *exc: object) -> None:
        if self._bar is not None:
            self._bar.stop()
