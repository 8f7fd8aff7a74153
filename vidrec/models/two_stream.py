"""Two-stream ConvNets: a spatial stream on RGB frames, a temporal stream on optical-flow stacks, late fusion.

Simonyan & Zisserman, "Two-Stream Convolutional Networks for Action Recognition in Videos" (NeurIPS 2014), with the
ResNet backbones of the two-stream baseline in Ma et al., "TS-LSTM and Temporal-Inception: Exploiting Spatiotemporal
Dynamics for Activity Recognition" (2017), and the segment consensus and cross-modality initialisation of Wang et al.,
"Temporal Segment Networks" (ECCV 2016)::

    RGB frame (B, 3, H, W) ──► ResNet ──► logits_rgb ──► softmax ──┐ x w_rgb
                                                                   ├─► weighted mean ──► fused scores (B, K)
    flow stack (B, 2L, H, W) ─► ResNet ──► logits_flow ─► softmax ─┘ x w_flow         (default w = 1 : 1.5)
      x/y interleaved           (first conv: 2L channels)

* :class:`StreamResNet`: torchvision ResNet-18/50/101 with ``in_channels`` inputs. ImageNet weights come from a
  local state_dict file (``pretrained``), never downloaded. For ``in_channels != 3`` the first convolution is
  initialised **cross-modality**: the ImageNet RGB filters averaged over colour and copied to every flow channel
  (TSN; mmaction2 leaves that layer random, its issue #861). Input ``(B, K, C, H, W)`` (TSN segments) averages the
  logits over K.
* :class:`TwoStreamFusion`: the two streams from their ``vidrec fit`` checkpoints (one config tests the fused model),
  inputs ``{"rgb": ..., "flow": ...}`` of the same views; ``forward`` returns the log of the fused scores (so a
  softmax of it is the fused score), ``forward_streams`` every stream's logits too, for per-stream metrics.
* :func:`fuse_scores_by_video`, :func:`fit_fusion_weight` and :func:`fit_fusion_weights`: fusion of per-video
  scores computed separately, joined by video id (never by order), and the weights fitted on validation scores
  (:func:`stream_scores_by_video` scores a validation loader): by accuracy, or by the likelihood of the true class,
  which also sees a stream that is confidently wrong.
* :class:`FrameScores` and :class:`WindowScores`: a stream as a streamable window classifier over time steps
  (RGB frames, or flow fields stacked ``L`` at a time), scoring each position once and averaging the softmax scores
  of a window's positions (the papers' test protocol over a sliding window); :func:`two_stream_window` joins both
  as a named multi-input model (``vidrec.models.multi_input``), which streams a live video frame by frame
  (``vidrec.streaming.two_stream``)::

      frames (B, 3, T, H, W) ─► per frame: ResNet ─► softmax (B, K, T)   ──► mean over T   ──┐
      fields (B, 2, T-1, H, W) ─► per L-stack: ResNet ─► softmax (B, K, T-L) ─► mean ────────┴─► weighted mean
"""

from __future__ import annotations

import enum
import importlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torchvision
from torch import Tensor, nn

from vidrec.layers.temporal import TemporalAvgPoolHead, TemporalModule
from vidrec.models._base import FusionRule, StreamableClassifier
from vidrec.models._registry import register_model
from vidrec.models.multi_input import NamedInputClassifiers

__all__ = [
    "FrameScores",
    "LogOf",
    "ResNetArch",
    "StreamResNet",
    "TwoStreamFusion",
    "cross_modality_conv",
    "FusionFit",
    "fit_fusion_weight",
    "fit_fusion_weights",
    "stream_scores_by_video",
    "fuse_scores_by_video",
    "load_stream_checkpoint",
    "spatial_stream_resnet18",
    "spatial_stream_resnet50",
    "spatial_stream_resnet101",
    "temporal_stream_resnet18",
    "temporal_stream_resnet50",
    "temporal_stream_resnet101",
    "two_stream_window",
    "WindowScores",
]


class ResNetArch(enum.Enum):
    """torchvision ResNet backbones."""

    RESNET18 = "resnet18"
    RESNET50 = "resnet50"
    RESNET101 = "resnet101"


def cross_modality_conv(conv: nn.Conv2d, in_channels: int) -> nn.Conv2d:
    """A copy of ``conv`` taking ``in_channels`` inputs whose filters are ``conv``'s averaged over its inputs (TSN)."""
    new = nn.Conv2d(
        in_channels,
        conv.out_channels,
        conv.kernel_size,  # type: ignore[arg-type]
        stride=conv.stride,  # type: ignore[arg-type]
        padding=conv.padding,  # type: ignore[arg-type]
        bias=conv.bias is not None,
    )
    with torch.no_grad():
        mean = conv.weight.mean(dim=1, keepdim=True)  # (O, 1, k, k): the filter's response to grey input, per channel
        new.weight.copy_(mean.expand(-1, in_channels, -1, -1))  # (O, in_channels, k, k)
        if conv.bias is not None and new.bias is not None:
            new.bias.copy_(conv.bias)
    return new


def _load_imagenet_state(path: str | Path) -> dict[str, Tensor]:
    file = Path(path)
    if not file.is_file():
        raise FileNotFoundError(
            f"StreamResNet.pretrained: {file} does not exist (expected a local torchvision ResNet state_dict, e.g. "
            "resnet18-f37072fd.pth; weights are never downloaded)"
        )
    state = torch.load(file, map_location="cpu", weights_only=True)
    if isinstance(state, dict) and "state_dict" in state:
        state = state["state_dict"]
    if not isinstance(state, dict) or "conv1.weight" not in state:
        raise ValueError(f"StreamResNet.pretrained: {file} is not a torchvision ResNet state_dict (no 'conv1.weight')")
    return state


class StreamResNet(nn.Module):
    """One stream of a two-stream ConvNet: a torchvision ResNet on ``in_channels`` input planes.

    Input ``(B, C, H, W)``, or ``(B, K, C, H, W)`` for K TSN segments (logits averaged over them); output ``(B, K')``.

    Args:
        arch: resnet18, resnet50 or resnet101.
        num_classes: classes of the classifier.
        in_channels: 3 for RGB (spatial stream), 2L for a stack of L flow fields (temporal stream).
        pretrained: local file of torchvision ImageNet weights (state_dict); None: random initialisation.
        dropout: dropout before the classifier (the papers use high dropout on the temporal stream).
    """

    def __init__(
        self,
        arch: ResNetArch = ResNetArch.RESNET18,
        num_classes: int = 101,
        in_channels: int = 3,
        pretrained: str | None = None,
        dropout: float = 0.5,
    ) -> None:
        super().__init__()
        # a stored config may hold the member's name ("RESNET18") as jsonargparse writes it, or its value
        self.arch = ResNetArch[arch] if isinstance(arch, str) and arch in ResNetArch.__members__ else ResNetArch(arch)
        self.in_channels = in_channels
        backbone: torchvision.models.ResNet = getattr(torchvision.models, self.arch.value)(weights=None)
        if pretrained is not None:
            state = _load_imagenet_state(pretrained)
            own = backbone.state_dict()
            mismatched = [k for k, v in state.items() if k in own and own[k].shape != v.shape]
            if mismatched or set(own) - set(state):
                raise ValueError(
                    f"StreamResNet.pretrained: {pretrained} does not fit {self.arch.value} "
                    f"(mismatched: {mismatched[:5]}, missing: {sorted(set(own) - set(state))[:5]})"
                )
            backbone.load_state_dict(state)
        conv1 = backbone.conv1 if in_channels == 3 else cross_modality_conv(backbone.conv1, in_channels)
        self.stem = nn.Sequential(conv1, backbone.bn1, backbone.relu, backbone.maxpool)  # (B, 64, H/4, W/4)
        self.stages = nn.Sequential(backbone.layer1, backbone.layer2, backbone.layer3, backbone.layer4)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(backbone.fc.in_features, num_classes)
        self.num_features = backbone.fc.in_features

    def forward_features(self, x: Tensor) -> Tensor:
        """``(B, C, H, W) -> (B, F)`` pooled features."""
        return self.pool(self.stages(self.stem(x))).flatten(1)  # (B, F, h, w) -> (B, F)

    def forward_head(self, features: Tensor) -> Tensor:
        """``(B, F) -> (B, K)`` logits."""
        return self.classifier(self.dropout(features))

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() == 5:  # (B, K, C, H, W): TSN segments share the network, consensus = mean of logits
            b, k = x.shape[:2]
            logits = self.forward_head(self.forward_features(x.flatten(0, 1)))  # (B * K, K')
            return logits.view(b, k, -1).mean(dim=1)
        if x.dim() != 4 or x.shape[1] != self.in_channels:
            raise ValueError(
                f"StreamResNet expects (B, {self.in_channels}, H, W) or (B, K, {self.in_channels}, H, W), "
                f"got {tuple(x.shape)}"
            )
        return self.forward_head(self.forward_features(x))


def _spatial(arch: ResNetArch, num_classes: int, pretrained: str | None, dropout: float) -> StreamResNet:
    return StreamResNet(arch, num_classes=num_classes, in_channels=3, pretrained=pretrained, dropout=dropout)


def _temporal(
    arch: ResNetArch, num_classes: int, stack_length: int, pretrained: str | None, dropout: float
) -> StreamResNet:
    return StreamResNet(arch, num_classes, in_channels=2 * stack_length, pretrained=pretrained, dropout=dropout)


@register_model
def spatial_stream_resnet18(*, num_classes: int, pretrained: str | None = None, dropout: float = 0.5) -> StreamResNet:
    """Spatial stream: ResNet-18 on one RGB frame."""
    return _spatial(ResNetArch.RESNET18, num_classes, pretrained, dropout)


@register_model
def spatial_stream_resnet50(*, num_classes: int, pretrained: str | None = None, dropout: float = 0.5) -> StreamResNet:
    """Spatial stream: ResNet-50 on one RGB frame."""
    return _spatial(ResNetArch.RESNET50, num_classes, pretrained, dropout)


@register_model
def spatial_stream_resnet101(*, num_classes: int, pretrained: str | None = None, dropout: float = 0.5) -> StreamResNet:
    """Spatial stream: ResNet-101 on one RGB frame (the TS-LSTM baseline)."""
    return _spatial(ResNetArch.RESNET101, num_classes, pretrained, dropout)


@register_model
def temporal_stream_resnet18(
    *, num_classes: int, stack_length: int = 10, pretrained: str | None = None, dropout: float = 0.7
) -> StreamResNet:
    """Temporal stream: ResNet-18 on a stack of ``stack_length`` flow fields (cross-modality initialised)."""
    return _temporal(ResNetArch.RESNET18, num_classes, stack_length, pretrained, dropout)


@register_model
def temporal_stream_resnet50(
    *, num_classes: int, stack_length: int = 10, pretrained: str | None = None, dropout: float = 0.7
) -> StreamResNet:
    """Temporal stream: ResNet-50 on a stack of ``stack_length`` flow fields (cross-modality initialised)."""
    return _temporal(ResNetArch.RESNET50, num_classes, stack_length, pretrained, dropout)


@register_model
def temporal_stream_resnet101(
    *, num_classes: int, stack_length: int = 10, pretrained: str | None = None, dropout: float = 0.7
) -> StreamResNet:
    """Temporal stream: ResNet-101 on a stack of ``stack_length`` flow fields (the TS-LSTM baseline)."""
    return _temporal(ResNetArch.RESNET101, num_classes, stack_length, pretrained, dropout)


# --------------------------------------------------------------------------------------------------------------------
# Fusion


def _instantiate(spec: Any, where: str) -> Any:
    """Build ``{"class_path": ..., "init_args": {...}}`` (nested specs too), as the stored config describes it."""
    if isinstance(spec, Mapping) and "class_path" in spec:
        module_name, _, name = str(spec["class_path"]).rpartition(".")
        try:
            cls = getattr(importlib.import_module(module_name), name)
        except (ImportError, AttributeError) as error:
            raise ValueError(f"{where}: cannot import {spec['class_path']!r} ({error})") from None
        args = {k: _instantiate(v, where) for k, v in dict(spec.get("init_args") or {}).items()}
        return cls(**args)
    return spec


def load_stream_checkpoint(path: str | Path) -> tuple[nn.Module, list[str]]:
    """The network and class names of a ``vidrec fit`` checkpoint, rebuilt from the config stored in it.

    Raises:
        FileNotFoundError: no such file. ValueError: not a vidrec checkpoint, naming the file and the key.
    """
    file = Path(path)
    if not file.is_file():
        raise FileNotFoundError(f"TwoStreamFusion: checkpoint {file} does not exist")
    raw = torch.load(file, map_location="cpu", weights_only=False)
    spec = raw.get("hyper_parameters", {}).get("model") if isinstance(raw, dict) else None
    if spec is None or "state_dict" not in raw:
        raise ValueError(
            f"TwoStreamFusion: {file} has no 'hyper_parameters.model' / 'state_dict' (not from vidrec fit)"
        )
    spec = spec.as_dict() if hasattr(spec, "as_dict") else spec
    model = _instantiate(spec, f"{file} hyper_parameters.model")
    if not isinstance(model, nn.Module):
        raise ValueError(f"TwoStreamFusion: {file} hyper_parameters.model does not describe an nn.Module")
    state = {k.removeprefix("model."): v for k, v in raw["state_dict"].items() if k.startswith("model.")}
    model.load_state_dict(state)
    meta = raw.get("vidrec", {})
    names = list(meta.get("class_names") or [])
    return model.eval(), names


class TwoStreamFusion(nn.Module):
    """Late fusion of a spatial and a temporal stream: the weighted mean of their softmax scores.

    Input ``{"rgb": (B, 3, H, W), "flow": (B, 2L, H, W)}`` (the same view of the same video, from
    ``TwoStreamDataModule(input=both)``); output ``(B, K)``, the log of the fused scores.

    Args:
        rgb_checkpoint: ``vidrec fit`` checkpoint of the spatial stream.
        flow_checkpoint: ``vidrec fit`` checkpoint of the temporal stream.
        rgb_weight: weight of the RGB scores.
        flow_weight: weight of the flow scores (1.5 : 1 as in the TS-LSTM baseline).
        rgb: a spatial stream module instead of a checkpoint.
        flow: a temporal stream module instead of a checkpoint.
    """

    def __init__(
        self,
        rgb_checkpoint: str | None = None,
        flow_checkpoint: str | None = None,
        rgb_weight: float = 1.0,
        flow_weight: float = 1.5,
        rgb: nn.Module | None = None,
        flow: nn.Module | None = None,
    ) -> None:
        super().__init__()
        if (rgb is None) == (rgb_checkpoint is None) or (flow is None) == (flow_checkpoint is None):
            raise ValueError("TwoStreamFusion: give each stream either as a checkpoint path or as a module, not both")
        names: dict[str, list[str]] = {}
        if rgb is None:
            rgb, names["rgb"] = load_stream_checkpoint(str(rgb_checkpoint))
        if flow is None:
            flow, names["flow"] = load_stream_checkpoint(str(flow_checkpoint))
        if len(names) == 2 and names["rgb"] and names["flow"] and names["rgb"] != names["flow"]:
            raise ValueError(
                f"TwoStreamFusion: {rgb_checkpoint} and {flow_checkpoint} were trained on different class lists"
            )
        if rgb_weight < 0 or flow_weight < 0 or rgb_weight + flow_weight <= 0:
            raise ValueError(f"TwoStreamFusion: weights must be >= 0 and not both 0, got {rgb_weight}, {flow_weight}")
        self.rgb, self.flow = rgb, flow
        self.weights = {"rgb": float(rgb_weight), "flow": float(flow_weight)}

    def forward_streams(self, inputs: Mapping[str, Tensor]) -> dict[str, Tensor]:
        """``{"rgb": logits, "flow": logits, "fused": log fused scores}``, each ``(B, K)``."""
        for key in ("rgb", "flow"):
            if key not in inputs:
                raise KeyError(f"TwoStreamFusion: inputs lack {key!r} (use TwoStreamDataModule with input: both)")
        logits = {"rgb": self.rgb(inputs["rgb"]), "flow": self.flow(inputs["flow"])}
        total = sum(self.weights.values())
        fused = sum(self.weights[k] / total * logits[k].softmax(dim=1) for k in logits)  # (B, K), rows sum to 1
        return {**logits, "fused": torch.as_tensor(fused).clamp_min(1e-12).log()}

    def forward(self, inputs: Mapping[str, Tensor]) -> Tensor:
        return self.forward_streams(inputs)["fused"]


def fuse_scores_by_video(
    scores: Mapping[str, Mapping[str, np.ndarray]], weights: Mapping[str, float]
) -> dict[str, np.ndarray]:
    """Weighted mean of per-video scores of several streams, joined by video id.

    Args:
        scores: stream name -> {video id -> scores (K,)} (for example per-video mean softmax of each stream).
        weights: stream name -> weight.

    Raises:
        ValueError: the streams do not score the same videos (the ids that differ are named) or a weight is missing.
    """
    names = sorted(scores)
    if set(names) != set(weights):
        raise ValueError(f"fusion weights {sorted(weights)} do not match the streams {names}")
    ids = set(scores[names[0]])
    for name in names[1:]:
        if set(scores[name]) != ids:
            only = sorted(ids.symmetric_difference(scores[name]))[:5]
            raise ValueError(f"streams {names[0]!r} and {name!r} score different videos (e.g. {only})")
    total = sum(weights.values())
    fused: dict[str, np.ndarray] = {}
    for vid in ids:
        parts = [weights[n] / total * np.asarray(scores[n][vid], dtype=np.float64) for n in names]
        fused[vid] = np.sum(parts, axis=0)  # (K,)
    return fused


def fit_fusion_weight(
    rgb: Mapping[str, np.ndarray],
    flow: Mapping[str, np.ndarray],
    labels: Mapping[str, int],
    candidates: Sequence[float] = (0.5, 1.0, 1.5, 2.0, 3.0, 5.0),
) -> tuple[float, float]:
    """The flow weight (RGB weight 1) with the best video accuracy on validation scores, and that accuracy.

    Ties go to the candidate closest to 1.5 (the default), so an uninformative validation set keeps it.
    """
    best: tuple[float, float, float] | None = None
    for w in candidates:
        fused = fuse_scores_by_video({"rgb": rgb, "flow": flow}, {"rgb": 1.0, "flow": float(w)})
        acc = float(np.mean([int(np.argmax(fused[v])) == labels[v] for v in fused]))
        key = (acc, -abs(w - 1.5), w)
        if best is None or key > best:
            best = key
    assert best is not None
    return best[2], best[0]


@dataclass
class FusionFit:
    """Late-fusion weights fitted on validation scores (:func:`fit_fusion_weights`).

    Attributes:
        rgb_weight: Weight of the RGB scores (``1 - flow_weight``).
        flow_weight: Weight of the flow scores, in [0, 1].
        nll: Mean negative log-likelihood of the true class under the fused video scores, at the fitted weights.
        accuracy: Video top-1 of the fused scores at the fitted weights.
        grid: ``(flow_weight, nll, accuracy)`` of every candidate, for the report.
    """

    rgb_weight: float
    flow_weight: float
    nll: float
    accuracy: float
    grid: list[tuple[float, float, float]] = field(default_factory=list)


def fit_fusion_weights(
    rgb: Mapping[str, np.ndarray], flow: Mapping[str, np.ndarray], labels: Mapping[str, int], steps: int = 20
) -> FusionFit:
    """The weights ``(1 - w, w)`` of RGB and flow scores that maximise the validation likelihood of the true class.

    ``w`` runs over ``0, 1/steps, ..., 1`` (1: flow alone). The likelihood, unlike accuracy, does not tie on a small
    validation set and penalises a stream that is wrong and confident: the spatial stream of a set whose classes
    differ only in motion fits its training videos' appearance and is then confidently wrong on new ones, so at the
    default 1 : 1.5 it can outvote a right but less confident flow stream; fitted, its weight goes to about 0.
    Ties go to the weight closest to the default 0.6 (1 : 1.5).
    """
    grid: list[tuple[float, float, float]] = []
    best: tuple[float, float, float] | None = None
    for i in range(steps + 1):
        w = i / steps
        fused = fuse_scores_by_video({"rgb": rgb, "flow": flow}, {"rgb": 1.0 - w, "flow": w})
        nll = float(np.mean([-np.log(max(float(fused[v][labels[v]]), 1e-12)) for v in fused]))
        acc = float(np.mean([int(np.argmax(fused[v])) == labels[v] for v in fused]))
        grid.append((w, nll, acc))
        key = (-round(nll, 9), -abs(w - 0.6), w)
        if best is None or key > best:
            best = key
    assert best is not None
    w = best[2]
    _, nll, acc = next(g for g in grid if g[0] == w)
    return FusionFit(rgb_weight=1.0 - w, flow_weight=w, nll=nll, accuracy=acc, grid=grid)


def stream_scores_by_video(
    model: TwoStreamFusion, batches: Iterable[Mapping[str, Any]]
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray], dict[str, int]]:
    """Per-video mean softmax of each stream and the labels, over the views of a ``TwoStreamDataModule(input=both)``
    evaluation loader (items with ``inputs``, ``target`` and ``group``), for :func:`fit_fusion_weights`."""
    sums: dict[str, dict[str, np.ndarray]] = {"rgb": {}, "flow": {}}
    counts: dict[str, int] = {}
    labels: dict[str, int] = {}
    model.eval()
    with torch.no_grad():
        for batch in batches:
            out = model.forward_streams(batch["inputs"])
            groups = [str(int(g)) for g in batch["group"]]
            for name in ("rgb", "flow"):
                probs = out[name].softmax(dim=1).double().numpy()  # (B, K)
                for g, p in zip(groups, probs):
                    sums[name][g] = sums[name].get(g, 0.0) + p
            for g, y in zip(groups, batch["target"]):
                counts[g] = counts.get(g, 0) + 1
                labels[g] = int(y)
    means = {n: {g: v / counts[g] for g, v in sums[n].items()} for n in sums}
    return means["rgb"], means["flow"], labels


# --------------------------------------------------------------------------------------------------------------------
# Streams as streamable window classifiers over time steps


class FrameScores(TemporalModule):
    """A 2D stream applied at every position of a sequence: ``(B, C, T, H, W) -> (B, K, T - steps + 1)`` softmax
    scores.

    Position ``t`` stacks the time steps ``t .. t + steps - 1`` on the channel axis (step-major: x0 y0 x1 y1 ... for
    flow fields, as ``datamodules.flow.transforms.transform_flow`` interleaves a stack) and runs ``net`` on the
    ``(B, steps * C, H, W)`` result. RGB: ``steps = 1`` (one frame); flow: ``steps = L`` fields of 2 channels.
    Streaming keeps the last ``steps - 1`` time steps, so each new step costs one run of ``net``.

    Args:
        net: The 2D network (a :class:`StreamResNet`), ``(N, steps * C, H, W) -> (N, K)`` logits.
        steps: Time steps per position (the receptive field).
    """

    def __init__(self, net: nn.Module, steps: int = 1) -> None:
        super().__init__()
        if steps < 1:
            raise ValueError(f"FrameScores: steps must be >= 1, got {steps}")
        self.net = net
        self.receptive_field, self.stride = int(steps), 1

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() != 5:
            raise ValueError(f"FrameScores expects (B, C, T, H, W), got {tuple(x.shape)}")
        b, c, t, h, w = x.shape
        n = t - self.receptive_field + 1
        if n < 1:
            raise ValueError(f"FrameScores: {t} time steps, fewer than the {self.receptive_field} of one position")
        steps = x.permute(0, 2, 1, 3, 4)  # (B, T, C, H, W)
        stacks = steps.unfold(1, self.receptive_field, 1)  # (B, n, C, H, W, steps)
        stacks = stacks.permute(0, 1, 5, 2, 3, 4).reshape(b * n, self.receptive_field * c, h, w)  # step-major
        probs = self.net(stacks).softmax(dim=1)  # (B * n, K)
        return probs.view(b, n, -1).transpose(1, 2)  # (B, K, n)

    def stream_state(self, x: Tensor) -> list[Tensor]:
        b, c, _, h, w = x.shape
        return [x.new_zeros(b, c, self.receptive_field - 1, h, w)]

    def stream_step(self, x: Tensor, state: list[Tensor]) -> tuple[Tensor, list[Tensor]]:
        buf = torch.cat([state[0], x], dim=2)  # (B, C, steps - 1 + n, H, W)
        keep = buf[:, :, buf.shape[2] - (self.receptive_field - 1) :]
        return self.forward(buf), [keep]


class LogOf(nn.Module):
    """``log`` of probabilities (floored at 1e-12): logits whose softmax is the mean score."""

    def forward(self, x: Tensor) -> Tensor:
        return x.clamp_min(1e-12).log()


class WindowScores(StreamableClassifier):
    """A stream over a window: the mean of the softmax scores of its positions, returned as their log.

    ``(B, C, T, H, W) -> (B, K)``. A window of ``T`` steps has ``T - steps + 1`` positions; the streaming pool keeps
    their scores in a buffer, so a hop of one step runs the network once (``vidrec.models._base``).

    Args:
        net: The stream (:class:`StreamResNet`).
        steps: Time steps per position (1 for RGB frames, ``L`` for flow fields).
    """

    def __init__(self, net: nn.Module, steps: int = 1) -> None:
        super().__init__()
        self.features = FrameScores(net, steps)
        self.pool = TemporalAvgPoolHead()
        self.classifier = LogOf()
        self.in_channels = int(getattr(net, "in_channels", 3)) // steps
        self._init_geometry()


def two_stream_window(
    rgb: nn.Module,
    flow: nn.Module,
    stack_length: int,
    rgb_weight: float = 1.0,
    flow_weight: float = 1.5,
) -> NamedInputClassifiers:
    """The two streams as a named multi-input window model (``{"rgb": frames, "flow": fields}``).

    A window of ``W`` frames feeds ``(B, 3, W, H, W')`` frames and the ``(B, 2, W - 1, H, W')`` flow fields between
    them; the output is the log of ``(w_rgb * mean RGB score + w_flow * mean flow score) / (w_rgb + w_flow)``, the
    late fusion of :class:`TwoStreamFusion` over a sliding window; ``vidrec.streaming.multi`` streams it.
    """
    if rgb_weight < 0 or flow_weight < 0 or rgb_weight + flow_weight <= 0:
        raise ValueError(f"two_stream_window: weights must be >= 0 and not both 0, got {rgb_weight}, {flow_weight}")
    total = rgb_weight + flow_weight
    return NamedInputClassifiers(
        {"rgb": WindowScores(rgb, 1), "flow": WindowScores(flow, stack_length)},
        rule=FusionRule.MEAN_PROBABILITIES,
        weights=[rgb_weight / total, flow_weight / total],
    )
