"""Ensemble of one-dimensional residual CNNs for skeleton action recognition.

"Ensemble One-dimensional Convolution Neural Networks for Skeleton-based Action Recognition" (Xu & Wang, IEEE
Signal Processing Letters 2018; the authors' Keras code is cnnlstm/Ensem-NN): a residual 1D CNN over time reads the
joint coordinates of every frame as channels, and four variants of it are fused by their scores (85.1% NTU RGB+D
cross-subject). Inputs are ``(B, M * V * C, L)``: M bodies, V joints, C coordinates per frame (channel
``m * V * C + v * C + c``), L frames, as ``datamodules.skeleton`` writes them.

The base network (``SkeletonResNet1D``)::

    x (B, MVC, L) ─► conv k (64) ─► [3 x conv k-BN-ReLU (64)] ⊕ ─► [conv k /2, 2 x conv k (128), BN-ReLU] ⊕ ─►
                     [conv k /2, 2 x conv k (256), BN-ReLU] ⊕ ─► BN ─► ReLU ─► average over time ─► linear ─► (B, K)

with ⊕ a residual addition over each group of three convolutions (a strided 1-step projection where the width or
the stride changes). The four subnets:

* ``TwoStreamNet``: the temporal network above, times a *spatial* network that convolves along the coordinate axis
  with the L frames as channels; the two softmax outputs are multiplied (product fusion, renormalised).
* ``BodyPartNet``: one base network per body part (left arm, right arm, left leg, right leg, torso; both bodies'
  joints of that part), their pooled features concatenated into one linear classifier.
* ``AttentionNet``: learned per-frame channel weights (a softmax over the MVC channels of each frame, scaled to mean
  one) before the base network, and temporal attention pooling (a softmax over the window's time positions) in
  place of the average. The authors' code applies its temporal softmax over an axis of size one, which makes every
  weight 1: a no-op; here the softmax runs over time, and a test checks that the weights change the output.
* ``FrameDifferenceNet``: the base network on ``x_t - x_{t-1}`` (motion instead of pose).

``SkeletonEnsemble`` averages the four subnets' class probabilities (late fusion) and exposes each subnet's logits
(``subnet_logits``) so the test report scores every subnet beside the ensemble.

vidrec differs from the paper in one way by design: every temporal convolution is *valid* and right-aligned (no
zero padding in time, see ``vidrec.layers.temporal``), so the temporal subnets (base, body part, attention, frame
difference) stream exactly: ``vidrec.streaming.to_streaming`` returns, at every hop, the logits of the window ending
there. The spatial stream sees the whole window at once (its channels are the frames), so it streams by keeping the
last ``window`` frames and recomputing its forward at each hop (exact, at the cost of one spatial forward per hop;
``tools/bench_skeleton_streaming.py`` measures it). ``TwoStreamNet`` and ``SkeletonEnsemble`` are
``ParallelClassifiers`` (product and mean-of-probabilities fusion), so ``to_streaming(ensemble, window, hop)``
streams the whole ensemble as one model: every subnet on its own compiled step (the spatial stream eager, a logged
decision), fused at every hop, equal to the offline ensemble on the same window.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vidrec.layers.lowering import LoweringBuilder, register_lowering
from vidrec.layers.residual1d import conv_bn_relu_1d
from vidrec.layers.stream_state import StreamState
from vidrec.layers.temporal import (
    TemporalAvgPoolHead,
    TemporalModule,
    TemporalResidual,
    TemporalSequential,
    TemporalWindowOp,
    stream_state_of,
    stream_step_of,
    temporal_conv1d,
)
from vidrec.models._base import FusionRule, ParallelClassifiers, StreamableClassifier, check_stream_geometry
from vidrec.models._registry import register_model

__all__ = [
    "NTU25_BODY_PARTS",
    "ResidualStage",
    "SkeletonResNet1D",
    "FrameDifference",
    "ChannelAttention",
    "TemporalAttentionPool",
    "FrameDifferenceNet",
    "AttentionNet",
    "BodyPartNet",
    "SpatialStream",
    "TwoStreamNet",
    "SkeletonEnsemble",
    "skeleton_resnet1d",
    "skeleton_frame_difference",
    "skeleton_attention",
    "skeleton_body_part",
    "skeleton_two_stream",
    "skeleton_ensemble",
]

# NTU / Kinect v2 joints (0-based) of the five parts of the body-part subnet
NTU25_BODY_PARTS: dict[str, tuple[int, ...]] = {
    "left_arm": (4, 5, 6, 7, 21, 22),
    "right_arm": (8, 9, 10, 11, 23, 24),
    "left_leg": (12, 13, 14, 15),
    "right_leg": (16, 17, 18, 19),
    "torso": (0, 1, 2, 3, 20),
}


@dataclass(frozen=True)
class ResidualStage:
    """One residual group of the base network: ``convs`` convolutions, the first with ``stride``, one addition."""

    width: int  # output channels of every convolution in the group
    stride: int = 1  # temporal stride of the group's first convolution
    convs: int = 3  # convolutions between two residual additions


def _paper_stages(width: int) -> list[ResidualStage]:
    """The paper's nine convolutions: 64, 64, 64 | 128 /2, 128, 128 | 256 /2, 256, 256 (``width`` = 64)."""
    return [ResidualStage(width), ResidualStage(2 * width, 2), ResidualStage(4 * width, 2)]


def _residual_group(c_in: int, stage: ResidualStage, kernel_size: int) -> TemporalResidual:
    """``convs`` valid conv-BN-ReLU layers plus a shortcut (identity, or a strided 1-step projection)."""
    layers = [
        conv_bn_relu_1d(c_in if i == 0 else stage.width, stage.width, kernel_size, stride=stage.stride if i == 0 else 1)
        for i in range(stage.convs)
    ]
    shortcut = None
    if c_in != stage.width or stage.stride != 1:
        # (B, C_in, T) -> (B, C_out, T / s), right-aligned; the branch's output length is cropped to by the residual
        proj = nn.Conv1d(c_in, stage.width, 1, stride=stage.stride, bias=True)
        shortcut = TemporalWindowOp(proj, 1, stage.stride)
    return TemporalResidual(TemporalSequential(*layers), shortcut)


class _OutputBatchNorm(nn.BatchNorm1d):
    """The batch norm after the last residual addition (an ``nn.BatchNorm1d``: same parameters and checkpoint names).

    It follows an addition, not a convolution, so batch-norm folding leaves it; the compiled engine lowers it as any
    eval ``BatchNorm1d``, a per-channel affine map inside the generated, traced step (``vidrec.streaming.fastpath``).
    """


def _base_features(
    in_channels: int, stages: Sequence[ResidualStage], kernel_size: int, stem_width: int
) -> tuple[TemporalSequential, int]:
    """Stem conv -> residual groups -> BN -> ReLU; returns the features module and its output width."""
    if not stages:
        raise ValueError("the skeleton base network needs at least one residual stage")
    layers: list[nn.Module] = [temporal_conv1d(in_channels, stem_width, kernel_size, bias=True)]
    width = stem_width
    for stage in stages:
        layers.append(_residual_group(width, stage, kernel_size))
        width = stage.width
    layers += [_OutputBatchNorm(width), nn.ReLU(inplace=True)]
    return TemporalSequential(*layers), width


class SkeletonResNet1D(StreamableClassifier):
    """The base network of the paper on ``(B, C, L)``: valid residual 1D convolutions over time (see module doc)."""

    def __init__(
        self,
        *,
        in_channels: int,
        num_classes: int,
        stages: Sequence[ResidualStage],
        kernel_size: int = 8,
        stem_width: int = 64,
        dropout: float = 0.2,
    ) -> None:
        super().__init__()
        self.features, self.num_features = _base_features(in_channels, stages, kernel_size, stem_width)
        self.pool = TemporalAvgPoolHead()
        self.classifier = nn.Sequential(nn.Dropout(dropout), nn.Linear(self.num_features, num_classes))
        self._init_geometry()


class FrameDifference(TemporalModule):
    """``y_t = x_t - x_{t-1}`` on ``(B, C, T)`` -> ``(B, C, T - 1)``; streams with one frame of state."""

    receptive_field, stride = 2, 1

    def __init__(self, channels: int | None = None) -> None:
        super().__init__()
        self.channels = channels  # C, for the engines' lowering (the eager layer takes any C)

    def forward(self, x: Tensor) -> Tensor:
        if x.shape[2] < 2:
            raise ValueError(f"FrameDifference needs at least 2 time steps, got {x.shape[2]}")
        return x[:, :, 1:] - x[:, :, :-1]

    def stream_state(self, x: Tensor) -> list[Tensor]:
        return [x.new_zeros(x.shape[0], x.shape[1], 1)]

    def stream_step(self, x: Tensor, state: list[Tensor]) -> tuple[Tensor, list[Tensor]]:
        buf = torch.cat([state[0], x], dim=2)  # (B, C, 1 + n)
        return buf[:, :, 1:] - buf[:, :, :-1], [buf[:, :, -1:]]


@register_lowering(FrameDifference)
def _lower_frame_difference(b: LoweringBuilder[Any], m: FrameDifference, x: Any) -> Any:
    """Every target: ``x_t - x_{t-1}`` as a 2-step convolution with weights ``-I, I`` (one frame of history, the same
    state as the layer's own step; exact for finite inputs)."""
    channels = m.channels
    if channels is None:
        raise TypeError("FrameDifference is lowered for a known channel count: build it with channels=C")
    conv = nn.Conv1d(channels, channels, 2, bias=False)
    with torch.no_grad():
        conv.weight.zero_()
        eye = torch.arange(channels)
        conv.weight[eye, eye, 0], conv.weight[eye, eye, 1] = -1.0, 1.0
    return b.lower(TemporalWindowOp(conv.requires_grad_(False).eval(), 2, 1), x)


class ChannelAttention(TemporalModule):
    """Per-frame channel weights: ``y_t = x_t * C softmax_c(W2 tanh(W1 x_t))`` (pointwise in time, no state).

    The authors' input attention (two dense layers and a softmax over the channels of each frame), scaled by the
    number of channels so that uniform weights leave the input unchanged.
    """

    receptive_field, stride = 1, 1

    def __init__(self, channels: int, hidden: int) -> None:
        super().__init__()
        self.score = nn.Sequential(nn.Conv1d(channels, hidden, 1), nn.Tanh(), nn.Conv1d(hidden, channels, 1))

    def weights(self, x: Tensor) -> Tensor:
        """``(B, C, T)`` weights, mean one over the channels of each frame."""
        return self.score(x).softmax(dim=1) * x.shape[1]

    def forward(self, x: Tensor) -> Tensor:
        return x * self.weights(x)

    def stream_state(self, x: Tensor) -> list[Tensor]:
        return []

    def stream_step(self, x: Tensor, state: list[Tensor]) -> tuple[Tensor, list[Tensor]]:
        return self(x), state


class TemporalAttentionPool(TemporalModule):
    """Attention pooling over time: ``sum_t softmax_t(v . tanh(W f_t)) f_t``, ``(B, C, T) -> (B, C)``.

    Streaming keeps the last ``positions`` feature vectors (set by ``configure_stream`` from the window, like
    ``TemporalAvgPoolHead``) and pools them at each hop, which equals the offline pooling of the window.
    """

    def __init__(self, channels: int, hidden: int = 64) -> None:
        super().__init__()
        self.score = nn.Sequential(nn.Conv1d(channels, hidden, 1), nn.Tanh(), nn.Conv1d(hidden, 1, 1))
        self.positions: int | None = None

    def weights(self, x: Tensor) -> Tensor:
        """``(B, 1, T)`` attention weights, summing to one over time."""
        return self.score(x).softmax(dim=2)

    def forward(self, x: Tensor) -> Tensor:
        return (x * self.weights(x)).sum(dim=2)

    def stream_state(self, x: Tensor) -> list[Tensor]:
        if self.positions is None:
            raise RuntimeError("TemporalAttentionPool.positions must be set (configure_stream) before streaming")
        return [x.new_zeros(x.shape[0], x.shape[1], self.positions)]

    def stream_step(self, x: Tensor, state: list[Tensor]) -> tuple[Tensor, list[Tensor]]:
        buf = torch.cat([state[0], x], dim=2)[:, :, -state[0].shape[2] :]  # (B, C, positions)
        return self(buf), [buf]


class FrameDifferenceNet(StreamableClassifier):
    """The base network on frame differences ``x_t - x_{t-1}``."""

    def __init__(
        self,
        *,
        in_channels: int,
        num_classes: int,
        stages: Sequence[ResidualStage],
        kernel_size: int = 8,
        stem_width: int = 64,
        dropout: float = 0.2,
    ) -> None:
        super().__init__()
        base, self.num_features = _base_features(in_channels, stages, kernel_size, stem_width)
        self.features = TemporalSequential(FrameDifference(in_channels), base)
        self.pool = TemporalAvgPoolHead()
        self.classifier = nn.Sequential(nn.Dropout(dropout), nn.Linear(self.num_features, num_classes))
        self._init_geometry()


class AttentionNet(StreamableClassifier):
    """Channel attention -> base network -> temporal attention pooling -> linear."""

    pool: TemporalAttentionPool  # type: ignore[assignment]

    def __init__(
        self,
        *,
        in_channels: int,
        num_classes: int,
        stages: Sequence[ResidualStage],
        kernel_size: int = 8,
        stem_width: int = 64,
        dropout: float = 0.2,
        attention_hidden: int = 128,
    ) -> None:
        super().__init__()
        base, self.num_features = _base_features(in_channels, stages, kernel_size, stem_width)
        self.channel_attention = ChannelAttention(in_channels, attention_hidden)
        self.features = TemporalSequential(self.channel_attention, base)
        self.pool = TemporalAttentionPool(self.num_features, attention_hidden)
        self.classifier = nn.Sequential(nn.Dropout(dropout), nn.Linear(self.num_features, num_classes))
        self._init_geometry()


class _PartFeatures(TemporalModule):
    """Each part's network on its own channels; outputs concatenated: ``(B, C, T) -> (B, P * C', T')``.

    The streaming engines lower it (``_lower_part_features`` below): each part's channels are picked by the
    builders' ``select_channels`` primitive and each part network is lowered as it is.
    """

    index: Tensor

    def __init__(
        self, channel_groups: Sequence[Sequence[int]], nets: Sequence[TemporalSequential], in_channels: int
    ) -> None:
        super().__init__()
        if any(not 0 <= c < in_channels for g in channel_groups for c in g):
            raise ValueError(
                f"body-part channels must lie in [0, {in_channels}), got {list(map(list, channel_groups))}"
            )
        self.nets = nn.ModuleList(nets)
        self.in_channels = in_channels
        self.groups = [tuple(int(c) for c in g) for g in channel_groups]
        self.sizes = [len(g) for g in channel_groups]
        self.register_buffer("index", torch.tensor([c for g in channel_groups for c in g]), persistent=False)
        geometries = {(n.receptive_field, n.stride) for n in nets}
        if len(geometries) != 1:
            raise ValueError(f"body-part networks must share one temporal geometry, got {sorted(geometries)}")
        self.receptive_field, self.stride = geometries.pop()

    def _split(self, x: Tensor) -> list[Tensor]:
        return list(x.index_select(1, self.index).split(self.sizes, dim=1))  # P x (B, C_p, T)

    def forward(self, x: Tensor) -> Tensor:
        return torch.cat([net(part) for net, part in zip(self.nets, self._split(x))], dim=1)

    def stream_state(self, x: Tensor) -> StreamState:
        """One entry per part: its network's state."""
        return [stream_state_of(net, part) for net, part in zip(self.nets, self._split(x))]

    def stream_step(self, x: Tensor, state: StreamState) -> tuple[Tensor, StreamState]:
        if isinstance(state, Tensor) or len(state) != len(self.nets):
            raise ValueError(f"_PartFeatures.stream_step expects one state entry per part ({len(self.nets)})")
        outs, new = [], []
        for net, part, entry in zip(self.nets, self._split(x), state):
            y, s = stream_step_of(net, part, entry)
            outs.append(y)
            new.append(s)
        return torch.cat(outs, dim=1), new


@register_lowering(_PartFeatures)
def _lower_part_features(b: LoweringBuilder[Any], m: _PartFeatures, x: Any) -> Any:
    """Every target: per part, its channels (``select_channels``) through its network; concatenated."""
    shared = b.shared(x)  # read by every part
    return b.concat([b.lower(net, b.select_channels(shared, group)) for net, group in zip(m.nets, m.groups)])


class BodyPartNet(StreamableClassifier):
    """One base network per body part; pooled features concatenated into one linear classifier."""

    def __init__(
        self,
        *,
        in_channels: int,
        num_classes: int,
        stages: Sequence[ResidualStage],
        parts: dict[str, Sequence[int]],
        num_joints: int = 25,
        num_coords: int = 3,
        kernel_size: int = 8,
        stem_width: int = 64,
        dropout: float = 0.2,
    ) -> None:
        super().__init__()
        per_body = num_joints * num_coords
        if in_channels % per_body:
            raise ValueError(f"in_channels={in_channels} is not bodies x {num_joints} joints x {num_coords} coords")
        bodies = in_channels // per_body
        self.in_channels = in_channels  # the first convolution sees one part's channels, not the model's input
        groups, nets = [], []
        for name, joints in parts.items():
            if not joints or any(not 0 <= j < num_joints for j in joints):
                raise ValueError(f"body part {name!r}: joints {list(joints)} must be in [0, {num_joints})")
            groups.append(
                [m * per_body + j * num_coords + c for m in range(bodies) for j in joints for c in range(num_coords)]
            )
            net, width = _base_features(len(groups[-1]), stages, kernel_size, stem_width)
            nets.append(net)
        self.part_names = list(parts)
        self.features = _PartFeatures(groups, nets, in_channels)
        self.num_features = width * len(nets)
        self.pool = TemporalAvgPoolHead()
        self.classifier = nn.Sequential(nn.Dropout(dropout), nn.Linear(self.num_features, num_classes))
        self._init_geometry()


class SpatialStream(SkeletonResNet1D):
    """The spatial stream of ``TwoStreamNet``: the base network over the coordinate axis, the frames as channels.

    Reads a window ``(B, MVC, L)`` transposed to ``(B, L, MVC)``, so it needs windows of exactly ``window`` frames
    and has no temporal structure to stream: it keeps the last ``window`` frames and recomputes its whole forward at
    every hop (exact; one spatial forward per hop, which the compiled engine leaves eager and logs as a decision).
    """

    def __init__(self, *, window: int, **kwargs: object) -> None:
        super().__init__(in_channels=window, **kwargs)  # type: ignore[arg-type]
        self.window = window
        self.coordinate_field = self.receptive_field  # along the coordinates, not time
        self.receptive_field, self.stride = window, 1  # in time: the whole window, any hop

    def forward(self, x: Tensor) -> Tensor:
        if x.shape[2] != self.window:
            raise ValueError(f"the spatial stream was built for windows of {self.window} frames, got {x.shape[2]}")
        return super().forward(x.transpose(1, 2))  # (B, MVC, L) -> (B, L, MVC): frames as channels

    def configure_stream(self, window: int, hop: int) -> None:
        if window != self.window:
            raise ValueError(f"the spatial stream recomputes windows of {self.window} frames (built so), got {window}")
        check_stream_geometry(type(self).__name__, self.receptive_field, self.stride, window, hop)

    def stream_state(self, x: Tensor) -> list[Tensor]:
        return [x.new_zeros(x.shape[0], x.shape[1], self.window)]

    def stream_step(self, x: Tensor, state: list[Tensor]) -> tuple[Tensor, list[Tensor]]:
        frames = torch.cat([state[0], x], dim=2)[:, :, -self.window :]  # (B, MVC, window): the last window
        return self(frames), [frames]


class TwoStreamNet(ParallelClassifiers):
    """Temporal and spatial base networks with product fusion (``FusionRule.PRODUCT_PROBABILITIES``).

    ``temporal`` is the base network over time (streams exactly); ``spatial`` is a ``SpatialStream`` (frames as
    channels, recomputed per hop). The output is ``log_softmax(log_softmax(a) + log_softmax(b))``: the log of the
    authors' L1-normalised product of the two streams' probabilities. Windows must have exactly ``window`` frames.
    """

    def __init__(
        self,
        *,
        in_channels: int,
        num_classes: int,
        window: int,
        stages: Sequence[ResidualStage],
        spatial_stages: Sequence[ResidualStage] | None = None,
        kernel_size: int = 8,
        stem_width: int = 64,
        dropout: float = 0.2,
    ) -> None:
        common = dict(num_classes=num_classes, kernel_size=kernel_size, stem_width=stem_width, dropout=dropout)
        temporal = SkeletonResNet1D(in_channels=in_channels, stages=stages, **common)  # type: ignore[arg-type]
        spatial = SpatialStream(window=window, stages=spatial_stages or stages, **common)
        if spatial.coordinate_field > in_channels:
            raise ValueError(
                f"the spatial stream's receptive field ({spatial.coordinate_field}) exceeds the {in_channels} "
                "coordinates it convolves over; use a smaller kernel or fewer spatial stages"
            )
        super().__init__({"temporal": temporal, "spatial": spatial}, FusionRule.PRODUCT_PROBABILITIES)
        self.temporal, self.spatial = temporal, spatial
        self.window, self.in_channels = window, in_channels

    def forward(self, x: Tensor) -> Tensor:
        if x.shape[2] != self.window:
            raise ValueError(f"TwoStreamNet was built for windows of {self.window} frames, got {x.shape[2]}")
        return super().forward(x)

    def configure_stream(self, window: int, hop: int) -> None:
        """Stream windows of ``self.window`` frames: the temporal stream streams, the spatial one is recomputed."""
        if window != self.window:
            raise ValueError(f"TwoStreamNet streams windows of {self.window} frames (built so), got window={window}")
        super().configure_stream(window, hop)


class SkeletonEnsemble(ParallelClassifiers):
    """Late fusion of the subnets: the log of their mean class probabilities, ``(B, MVC, L) -> (B, K)``.

    A ``ParallelClassifiers`` with ``FusionRule.MEAN_PROBABILITIES`` whose members live in the ``subnets``
    ``ModuleDict`` (parameter names ``subnets.<name>.*``, as checkpoints store them), so ``to_streaming`` streams the
    whole ensemble as one model: each subnet on its own engine (compiled where it lowers), fused at every hop.
    Training (``training_loss``) adds each subnet's own cross-entropy, so every subnet learns as if trained alone (the
    parameters are disjoint) and the fusion rule has no parameters, as in the paper.
    """

    def __init__(self, subnets: dict[str, nn.Module]) -> None:
        if not subnets:
            raise ValueError("SkeletonEnsemble needs at least one subnet")
        if len(subnets) == 1:  # ParallelClassifiers needs two members; one subnet fuses to its own log-softmax
            raise ValueError(f"SkeletonEnsemble needs at least two subnets, got {list(subnets)}")
        super().__init__(dict(subnets), FusionRule.MEAN_PROBABILITIES)
        for name in subnets:  # keep the members under ``subnets.`` only (checkpoint names)
            delattr(self, name)
        self.subnets = nn.ModuleDict(subnets)
        channels = {getattr(n, "in_channels", None) for n in subnets.values()} - {None}
        if len(channels) == 1:
            self.in_channels = int(channels.pop())  # type: ignore[arg-type]

    def members(self) -> list[nn.Module]:
        """The subnets in fusion order."""
        return [self.subnets[n] for n in self.member_names]

    def subnet_logits(self, x: Tensor) -> dict[str, Tensor]:
        """Each subnet's scores ``(B, K)`` (logits, or normalised log-probability products for the two-stream one)."""
        return {name: net(x) for name, net in self.subnets.items()}

    def fuse(self, outputs: list[Tensor] | dict[str, Tensor]) -> Tensor:  # type: ignore[override]
        """``log(mean_s softmax(logits_s))``: (B, K) log-probabilities, from a list or a ``subnet_logits`` dict."""
        return super().fuse(list(outputs.values()) if isinstance(outputs, dict) else outputs)

    def forward(self, x: Tensor) -> Tensor:
        return self.fuse(self.subnet_logits(x))

    def training_loss(self, x: Tensor, target: Tensor) -> tuple[Tensor, Tensor]:
        """Sum of the subnets' cross-entropies, and the fused log-probabilities."""
        logits = self.subnet_logits(x)
        loss = sum((F.cross_entropy(v, target) for v in logits.values()), torch.zeros((), device=x.device))
        return loss, self.fuse(logits).detach()


# ------------------------------------------------------------------------------------------------------ builders
def _check_width(name: str, width: int, kernel_size: int) -> None:
    if width < 1 or kernel_size < 1:
        raise ValueError(f"{name}: width and kernel_size must be >= 1, got {width}, {kernel_size}")


@register_model
def skeleton_resnet1d(
    *, in_channels: int = 150, num_classes: int = 60, width: int = 64, kernel_size: int = 8, dropout: float = 0.2
) -> SkeletonResNet1D:
    """The paper's base network (``width`` 64: convolutions of 64, 128 and 256 channels, kernel 8)."""
    _check_width("skeleton_resnet1d", width, kernel_size)
    return SkeletonResNet1D(
        in_channels=in_channels,
        num_classes=num_classes,
        stages=_paper_stages(width),
        kernel_size=kernel_size,
        stem_width=width,
        dropout=dropout,
    )


@register_model
def skeleton_frame_difference(
    *, in_channels: int = 150, num_classes: int = 60, width: int = 64, kernel_size: int = 8, dropout: float = 0.2
) -> FrameDifferenceNet:
    """The frame-difference subnet (base network on ``x_t - x_{t-1}``)."""
    _check_width("skeleton_frame_difference", width, kernel_size)
    return FrameDifferenceNet(
        in_channels=in_channels,
        num_classes=num_classes,
        stages=_paper_stages(width),
        kernel_size=kernel_size,
        stem_width=width,
        dropout=dropout,
    )


@register_model
def skeleton_attention(
    *, in_channels: int = 150, num_classes: int = 60, width: int = 64, kernel_size: int = 8, dropout: float = 0.2
) -> AttentionNet:
    """The attention subnet (per-frame channel attention, temporal attention pooling)."""
    _check_width("skeleton_attention", width, kernel_size)
    return AttentionNet(
        in_channels=in_channels,
        num_classes=num_classes,
        stages=_paper_stages(width),
        kernel_size=kernel_size,
        stem_width=width,
        dropout=dropout,
        attention_hidden=2 * width,
    )


@register_model
def skeleton_body_part(
    *,
    in_channels: int = 150,
    num_classes: int = 60,
    width: int = 64,
    kernel_size: int = 8,
    dropout: float = 0.2,
    num_joints: int = 25,
    num_coords: int = 3,
) -> BodyPartNet:
    """The body-part subnet on NTU's 25 joints (five parts; each part network at ``width // 2``)."""
    _check_width("skeleton_body_part", width, kernel_size)
    if num_joints != 25:
        raise ValueError(
            f"skeleton_body_part: the body parts are defined on NTU's 25 joints, got num_joints={num_joints}"
        )
    part_width = max(width // 2, 1)
    return BodyPartNet(
        in_channels=in_channels,
        num_classes=num_classes,
        stages=_paper_stages(part_width),
        parts=dict(NTU25_BODY_PARTS),
        num_joints=num_joints,
        num_coords=num_coords,
        kernel_size=kernel_size,
        stem_width=part_width,
        dropout=dropout,
    )


@register_model
def skeleton_two_stream(
    *,
    in_channels: int = 150,
    num_classes: int = 60,
    window: int = 300,
    width: int = 64,
    kernel_size: int = 8,
    dropout: float = 0.2,
) -> TwoStreamNet:
    """The two-stream subnet for windows of ``window`` frames (the paper pads NTU clips to 300)."""
    _check_width("skeleton_two_stream", width, kernel_size)
    return TwoStreamNet(
        in_channels=in_channels,
        num_classes=num_classes,
        window=window,
        stages=_paper_stages(width),
        kernel_size=kernel_size,
        stem_width=width,
        dropout=dropout,
    )


@register_model
def skeleton_ensemble(
    *,
    in_channels: int = 150,
    num_classes: int = 60,
    window: int = 300,
    width: int = 64,
    kernel_size: int = 8,
    dropout: float = 0.2,
) -> SkeletonEnsemble:
    """The paper's ensemble: two-stream, body-part, attention and frame-difference subnets, late fusion."""
    common = dict(
        in_channels=in_channels, num_classes=num_classes, width=width, kernel_size=kernel_size, dropout=dropout
    )
    return SkeletonEnsemble(
        {
            "two_stream": skeleton_two_stream(window=window, **common),  # type: ignore[arg-type]
            "body_part": skeleton_body_part(**common),  # type: ignore[arg-type]
            "attention": skeleton_attention(**common),  # type: ignore[arg-type]
            "frame_difference": skeleton_frame_difference(**common),  # type: ignore[arg-type]
        }
    )
