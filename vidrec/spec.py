"""The deployment spec: how a trained classifier must be fed, written once into every checkpoint.

A model alone does not say how to use it: the window it was trained on, the left context before that window and how
that context is filled at the start of a recording, the hop of the windows ``vidrec test`` scored, the sampling rate
(or frame rate), the input channels (or frame size), the normalisation, the label policy and the split of the
subjects (or videos) it was tested on. :class:`DeploymentSpec` carries all of them. The data module that trained the
model builds it (``deployment_spec()``), the classification task stores it in the checkpoint as plain types
(``to_dict``: readable with ``torch.load(weights_only=True)``), ``vidrec.tasks.load_checkpoint`` returns it, and the
streaming runtime, ``vidrec evaluate-streaming``, ``vidrec stream`` and ``vidrec export-stream`` are built from it.
Nothing downstream re-derives these settings from the data file.

This module also holds the one implementation of the two operations both sides of a stream must do alike:

* :class:`ChannelNormalization`: ``x * (1 / std) - mean / std`` per channel, in float32, for NumPy arrays and
  tensors of any layout (time series ``(..., C, T)``, video ``(..., C, T, H, W)``).
* :func:`edge_fill`: ``n`` copies of the first time step in front of a sequence, what a model trained with
  ``context_padding: EDGE`` sees before a recording starts (and what the streaming runtime feeds a fresh stream).
"""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import numpy as np
import torch

from vidrec.skeleton_spec import SkeletonSpec
from vidrec.two_stream_spec import TwoStreamSpec

__all__ = [
    "SPEC_VERSION",
    "ChannelNormalization",
    "ContextPadding",
    "DeploymentSpec",
    "Modality",
    "SplitSpec",
    "edge_fill",
]

SPEC_VERSION = 1

ArrayT = TypeVar("ArrayT", np.ndarray, torch.Tensor)


class Modality(enum.Enum):
    """What one time step of the input is."""

    TIMESERIES = "timeseries"  # a (C,) sample of C sensor channels; inputs (B, C, T)
    VIDEO = "video"  # a (3, H, W) frame; inputs (B, 3, T, H, W)
    SKELETON = "skeleton"  # a frame of M bodies x V joints x C coordinates; inputs (B, M * V * C, T) (see ``skeleton``)


class ContextPadding(enum.Enum):
    """What happens to windows whose left context would start before their recording."""

    DROP = "drop"  # no such windows: the first target window of a recording starts at sample `context`
    EDGE = "edge"  # the missing context is copies of the recording's first sample (what a starting stream sees)


def edge_fill(x: ArrayT, copies: int, *, axis: int = -1) -> ArrayT:
    """Prepend ``copies`` copies of the first step of ``x`` along its time ``axis`` (NumPy array or tensor).

    Example: samples ``(C, T)`` -> ``(C, copies + T)`` whose first ``copies + 1`` columns equal ``x[:, 0]``.
    """
    if copies < 0:
        raise ValueError(f"edge_fill: copies must be >= 0, got {copies}")
    if x.shape[axis] == 0:
        raise ValueError("edge_fill: cannot repeat the first step of an empty sequence")
    if isinstance(x, torch.Tensor):
        first = x.narrow(axis, 0, 1)
        return torch.cat([first.repeat_interleave(copies, dim=axis), x], dim=axis)
    first_np = np.take(x, [0], axis=axis)
    return np.concatenate([np.repeat(first_np, copies, axis=axis), x], axis=axis)


@dataclass(frozen=True)
class ChannelNormalization:
    """Per-channel statistics applied as ``(x - mean) / std``, computed as ``x * (1 / std) - mean / std`` in float32.

    Every place that normalises inputs (training windows, test recordings, streaming chunks, video frames) calls
    :meth:`apply`, so offline and streaming inputs are equal bit for bit.

    Attributes:
        mean: (C,) float64.
        std: (C,) float64, > 0.
    """

    mean: np.ndarray
    std: np.ndarray

    def __post_init__(self) -> None:
        mean = np.asarray(self.mean, dtype=np.float64).reshape(-1)
        std = np.asarray(self.std, dtype=np.float64).reshape(-1)
        if mean.shape != std.shape:
            raise ValueError(f"normalisation: mean has {mean.size} entries but std has {std.size}")
        if not np.all(std > 0):
            raise ValueError(f"normalisation: std must be > 0 per channel, got {std.tolist()}")
        object.__setattr__(self, "mean", mean)
        object.__setattr__(self, "std", std)

    @property
    def num_channels(self) -> int:
        """C."""
        return int(self.mean.size)

    @staticmethod
    def identity(num_channels: int) -> ChannelNormalization:
        """Mean 0, std 1."""
        return ChannelNormalization(np.zeros(num_channels), np.ones(num_channels))

    def scale_shift(self) -> tuple[np.ndarray, np.ndarray]:
        """``(1 / std, mean / std)`` as (C,) float32: ``apply(x) == x * scale - shift``."""
        return (1.0 / self.std).astype(np.float32), (self.mean / self.std).astype(np.float32)

    def apply(self, x: ArrayT, *, channel_axis: int = -2, out: ArrayT | None = None) -> ArrayT:
        """Normalise ``x`` with channels on ``channel_axis`` (-2: ``(..., C, T)``; -4: ``(..., C, T, H, W)``).

        Returns float32 (a tensor on ``x``'s device for tensors). With ``out`` (a float32 array or tensor of ``x``'s
        shape, possibly ``x`` itself) the result is written there.
        """
        axis = channel_axis % x.ndim
        if x.shape[axis] != self.num_channels:
            raise ValueError(
                f"normalisation: input has {x.shape[axis]} channels on axis {channel_axis}, "
                f"the statistics {self.num_channels}"
            )
        shape = [1] * x.ndim
        shape[axis] = self.num_channels
        scale, shift = (v.reshape(shape) for v in self.scale_shift())
        if isinstance(x, torch.Tensor):
            s = torch.from_numpy(scale).to(x.device)
            b = torch.from_numpy(shift).to(x.device)
            if out is None:
                return x.to(torch.float32) * s - b
            assert isinstance(out, torch.Tensor)
            torch.mul(x, s, out=out)
            return out.sub_(b)
        if out is None:
            return np.asarray(x, dtype=np.float32) * scale - shift
        assert isinstance(out, np.ndarray)
        np.multiply(x, scale, out=out)
        out -= shift
        return out

    def to_dict(self) -> dict[str, list[float]]:
        """Plain lists (checkpoint storage)."""
        return {"mean": self.mean.tolist(), "std": self.std.tolist()}


@dataclass(frozen=True)
class SplitSpec:
    """The split ``vidrec test`` scored: how it was drawn, and the subjects (or official split) it resolved to.

    Attributes:
        mode: The data module's split mode (``"subjects"``, ``"official"``, ``"kfold"``, ``"loso"``; video:
            ``"official"``).
        fold: KFOLD: test fold; LOSO: test subject; video: the official split number (UCF101/HMDB51 1-3).
        num_folds: KFOLD: number of folds.
        seed: Seed of the fold shuffle and the validation draw.
        train_subjects: Subjects trained on (time series; empty for video).
        val_subjects: Subjects validated on.
        test_subjects: Subjects tested on: the recordings ``vidrec test`` and ``evaluate-streaming`` score.
    """

    mode: str
    fold: int = 0
    num_folds: int = 0
    seed: int = 0
    train_subjects: list[int] = field(default_factory=list)
    val_subjects: list[int] = field(default_factory=list)
    test_subjects: list[int] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """Plain types (checkpoint storage)."""
        return {
            "mode": self.mode,
            "fold": int(self.fold),
            "num_folds": int(self.num_folds),
            "seed": int(self.seed),
            "train_subjects": [int(s) for s in self.train_subjects],
            "val_subjects": [int(s) for s in self.val_subjects],
            "test_subjects": [int(s) for s in self.test_subjects],
        }

    @staticmethod
    def from_dict(d: Mapping[str, Any], where: str = "spec.split") -> SplitSpec:
        """Inverse of :meth:`to_dict`; errors name the missing key."""
        _require(d, ("mode",), where)
        return SplitSpec(
            mode=str(d["mode"]),
            fold=int(d.get("fold", 0)),
            num_folds=int(d.get("num_folds", 0)),
            seed=int(d.get("seed", 0)),
            train_subjects=[int(s) for s in d.get("train_subjects", [])],
            val_subjects=[int(s) for s in d.get("val_subjects", [])],
            test_subjects=[int(s) for s in d.get("test_subjects", [])],
        )


@dataclass(frozen=True)
class DeploymentSpec:
    """Everything a deployment needs to feed a model as it was trained and tested.

    Time steps are samples (time series) or clip frames (video).

    Attributes:
        modality: TIMESERIES or VIDEO.
        window: Labelled time steps per input (time series: the target window; video: frames per clip).
        hop: Time steps between training windows.
        eval_hop: Time steps between the windows ``vidrec test`` scored; the default streaming hop.
        rate: Sampling rate in Hz (time series) or clip frame rate in frames per second (video; 0 when clips take
            every ``frame_stride``-th native frame whatever the video's rate).
        channels: Input channel names (time series) or ``["R", "G", "B"]`` (video).
        normalization: Per-channel statistics applied to raw inputs (video: to frames in [0, 1]).
        class_names: Label k -> name.
        context: Extra time steps of real left context before each window (input length ``context + window``).
        context_padding: DROP or EDGE (see :class:`ContextPadding`).
        label_policy: How a window gets its label (time series: ``"pure"``, ``"majority"``, ``"center"``; video:
            ``"video"``: every clip carries its video's label).
        max_unlabelled_fraction: MAJORITY: largest unlabelled share of a kept window.
        split: The split ``vidrec test`` used, or None when unknown (checkpoints written before specs existed).
        data_path: The data file (time series) or root (video) the model was trained on.
        frame_size: Video: ``(H, W)`` of the frames fed to the model (the crop); empty for time series.
        short_side: Video: short side the frames are resized to before the centre crop.
        frame_stride: Video: native frames between clip frames (when ``rate`` is 0).
        data_source: Video: ``{"class_path": ..., "init_args": {...}}`` of the data module that lists the test
            videos (root, annotations, official split), so ``evaluate-streaming`` reads the videos ``vidrec test``
            read; empty for time series (:meth:`HDF5WindowDataModule.from_spec` rebuilds those from the split).
        skeleton: Skeleton: the joint layout and the anchoring (centring, view alignment) that ``vidrec stream``
            applies to live joint frames as the data module did to clips (``vidrec.skeleton_spec``); else None.
        two_stream: A stream of a two-stream ConvNet: its input, flow stack length, transform and flow extractor
            (``vidrec.two_stream_spec``); else None.
    """

    modality: Modality
    window: int
    hop: int
    eval_hop: int
    rate: float
    channels: list[str]
    normalization: ChannelNormalization
    class_names: list[str]
    context: int = 0
    context_padding: ContextPadding = ContextPadding.DROP
    label_policy: str = "pure"
    max_unlabelled_fraction: float = 0.5
    split: SplitSpec | None = None
    data_path: str = ""
    frame_size: tuple[int, ...] = ()
    short_side: int = 0
    frame_stride: int = 1
    data_source: dict[str, Any] = field(default_factory=dict)
    skeleton: SkeletonSpec | None = None
    two_stream: TwoStreamSpec | None = None

    def __post_init__(self) -> None:
        for name in ("window", "hop", "eval_hop"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"deployment spec: {name} must be >= 1, got {getattr(self, name)}")
        if self.context < 0:
            raise ValueError(f"deployment spec: context must be >= 0, got {self.context}")
        if self.modality is Modality.SKELETON and (
            self.skeleton is None or self.skeleton.num_channels != len(self.channels)
        ):
            raise ValueError(
                f"deployment spec: a skeleton spec needs its joint layout (skeleton) for its {len(self.channels)} "
                f"channels, got {self.skeleton}"
            )
        if self.normalization.num_channels != len(self.channels):
            raise ValueError(
                f"deployment spec: {len(self.channels)} channels but normalisation statistics for "
                f"{self.normalization.num_channels}"
            )

    @property
    def input_length(self) -> int:
        """Time steps per model input: ``context + window``."""
        return self.context + self.window

    @property
    def edge_filled(self) -> bool:
        """Whether windows near a recording's start read edge-filled context (EDGE with context > 0)."""
        return self.context_padding is ContextPadding.EDGE and self.context > 0

    @property
    def first_output(self) -> int | None:
        """Time steps a stream must see before its first report when less than ``input_length`` (edge-filled), else
        None (the runtime's ``first_output`` argument)."""
        return self.window if self.edge_filled else None

    @property
    def in_channels(self) -> int:
        """C."""
        return len(self.channels)

    @property
    def input_shape(self) -> tuple[int, ...]:
        """Shape of one model input without the batch axis: ``(C, T)`` or ``(3, T, H, W)``."""
        return (self.in_channels, self.input_length, *self.frame_size)

    def runtime_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of ``StreamingClassifier`` that follow from the spec (window given separately)."""
        kwargs: dict[str, Any] = {
            "in_channels": self.in_channels,
            "mean": self.normalization.mean.tolist(),
            "std": self.normalization.std.tolist(),
            "first_output": self.first_output,
        }
        if self.modality is Modality.VIDEO:
            # frames arrive normalised by the frame transform (vidrec.streaming.video), as clips do offline
            kwargs.update(frame_shape=tuple(self.frame_size), mean=None, std=None)
        return kwargs

    # ------------------------------------------------------------------------------------------ storage
    def to_dict(self) -> dict[str, Any]:
        """Plain dicts, lists, strings and numbers only, so ``torch.load(weights_only=True)`` reads a checkpoint."""
        return {
            "version": SPEC_VERSION,
            "modality": self.modality.value,
            "window": int(self.window),
            "hop": int(self.hop),
            "eval_hop": int(self.eval_hop),
            "rate": float(self.rate),
            "channels": [str(c) for c in self.channels],
            "normalization": self.normalization.to_dict(),
            "class_names": [str(c) for c in self.class_names],
            "context": int(self.context),
            "context_padding": self.context_padding.value,
            "label_policy": str(self.label_policy),
            "max_unlabelled_fraction": float(self.max_unlabelled_fraction),
            "split": None if self.split is None else self.split.to_dict(),
            "data_path": str(self.data_path),
            "frame_size": [int(v) for v in self.frame_size],
            "short_side": int(self.short_side),
            "frame_stride": int(self.frame_stride),
            "data_source": _plain(self.data_source),
            "skeleton": None if self.skeleton is None else _plain(self.skeleton.to_dict()),
            "two_stream": None if self.two_stream is None else _plain(self.two_stream.to_dict()),
        }

    @staticmethod
    def from_dict(d: Mapping[str, Any], where: str = "checkpoint") -> DeploymentSpec:
        """Inverse of :meth:`to_dict`; errors name ``where`` and the missing or invalid key."""
        keys = ("modality", "window", "hop", "eval_hop", "rate", "channels", "normalization", "class_names")
        _require(d, keys, f"{where}: spec")
        version = int(d.get("version", SPEC_VERSION))
        if version > SPEC_VERSION:
            raise ValueError(f"{where}: deployment spec version {version} is newer than this vidrec ({SPEC_VERSION})")
        norm = d["normalization"]
        _require(norm, ("mean", "std"), f"{where}: spec.normalization")
        split = d.get("split")
        return DeploymentSpec(
            modality=_enum(Modality, d["modality"], f"{where}: spec.modality"),
            window=int(d["window"]),
            hop=int(d["hop"]),
            eval_hop=int(d["eval_hop"]),
            rate=float(d["rate"]),
            channels=[str(c) for c in d["channels"]],
            normalization=ChannelNormalization(np.asarray(norm["mean"]), np.asarray(norm["std"])),
            class_names=[str(c) for c in d["class_names"]],
            context=int(d.get("context", 0)),
            context_padding=_enum(ContextPadding, d.get("context_padding", "drop"), f"{where}: spec.context_padding"),
            label_policy=str(d.get("label_policy", "pure")),
            max_unlabelled_fraction=float(d.get("max_unlabelled_fraction", 0.5)),
            split=None if split is None else SplitSpec.from_dict(split, f"{where}: spec.split"),
            data_path=str(d.get("data_path", "")),
            frame_size=tuple(int(v) for v in d.get("frame_size", ())),
            short_side=int(d.get("short_side", 0)),
            frame_stride=int(d.get("frame_stride", 1)),
            data_source=dict(d.get("data_source") or {}),
            skeleton=None
            if d.get("skeleton") is None
            else SkeletonSpec.from_dict(d["skeleton"], f"{where}: spec.skeleton"),
            two_stream=TwoStreamSpec.from_spec_dict(d, where),
        )

    @staticmethod
    def from_legacy_metadata(data: Mapping[str, Any], class_names: Sequence[str], where: str) -> DeploymentSpec:
        """The spec of a time-series checkpoint written before specs existed, from its ``vidrec.data`` settings.

        Those checkpoints stored window, hop, eval_hop, context, context_padding, sampling_rate, channel names,
        label policy, mean and std, but not the split: ``split`` is None, and commands that score the test split
        (``evaluate-streaming``) refuse them with an error that says so.
        """
        _require(data, ("window", "hop", "sampling_rate", "channel_names", "mean", "std"), f"{where}: vidrec.data")
        return DeploymentSpec(
            modality=Modality.TIMESERIES,
            window=int(data["window"]),
            hop=int(data["hop"]),
            eval_hop=int(data.get("eval_hop") or data["hop"]),
            rate=float(data["sampling_rate"]),
            channels=[str(c) for c in data["channel_names"]],
            normalization=ChannelNormalization(np.asarray(data["mean"]), np.asarray(data["std"])),
            class_names=[str(c) for c in (data.get("class_names") or class_names)],
            context=int(data.get("context", 0) or 0),
            context_padding=_enum(ContextPadding, data.get("context_padding", "drop"), f"{where}: context_padding"),
            label_policy=str(data.get("label_policy", "pure")).lower(),
            split=None,
            data_path=str(data.get("path", "")),
        )


E = TypeVar("E", bound=enum.Enum)


def _plain(value: Any) -> Any:
    """``value`` with tuples as lists and paths as strings; raises for anything ``weights_only`` cannot load."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    raise TypeError(f"deployment spec: {type(value).__name__} is not a plain value ({value!r})")


def _enum(kind: type[E], value: object, where: str) -> E:
    """An enum member from its value or (any case) its name."""
    if isinstance(value, kind):
        return value
    text = str(value)
    for member in kind:
        if text in (member.value, member.name) or text.lower() == str(member.value).lower():
            return member
    raise ValueError(f"{where}: {value!r} is not one of {', '.join(str(m.value) for m in kind)}")


def _require(d: Mapping[str, Any], keys: Sequence[str], where: str) -> None:
    if not isinstance(d, Mapping):
        raise ValueError(f"{where}: expected a mapping, got {type(d).__name__}")
    missing = [k for k in keys if k not in d]
    if missing:
        raise ValueError(f"{where} lacks {', '.join(map(repr, missing))}")
