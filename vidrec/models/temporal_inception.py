"""Temporal-Inception: parallel temporal convolutions over per-frame feature maps.

"TS-LSTM and Temporal-Inception: Exploiting Spatiotemporal Dynamics for Activity Recognition" (Ma, Chen, Kira,
AlRegib, 2017). Layer shapes as the authors' Torch7 ``Temporal-ConvNet/model-Conv-Inception-v1.lua`` and ``run.lua``:
the feature sequence is an image of one channel, feature rows by frames, and every convolution is ``1 x k`` along
time with its weights shared over the feature rows::

    (B, D, T) ─► (B, 1, T, D)                                        time on axis 2, feature rows last
      stage i (4 stages): ┌► conv k=5 (1 x 5 over time) ─► BN ─► ReLU ─► max pool p_i ─┐
                          └► conv k=7 (1 x 7 over time) ─► BN ─► ReLU ─► max pool p_i ─┴► concat channels
                          channels 1 -> 2 -> 4 -> 8 -> 16 (each branch doubles its input), pools 2, 2, 2, 3
      1x1 reductions 16 -> 4 -> 2 -> 1 (conv, BN, ReLU), spatial dropout
    ─► (B, D, T') ─► mean over the T' positions ─► Linear(D, 1024) ─► BN ─► ReLU ─► dropout ─► Linear(1024, K)

With 25 frames and "same" padding (``InceptionPadding.SAME``, the authors' form) time goes 25 -> 12 -> 6 -> 3 -> 1,
so the mean is over one position and the head is the authors' ``Reshape`` + MLP (4096 -> 1024 -> K for two-stream
ResNet features); ``approximate_model_streaming`` streams its valid twin (layer by layer, same weights), with a
deviation measured at chance level at this window (its twin's receptive field is 114 frames).
``InceptionPadding.VALID`` removes the zero padding and streams exactly through ``vidrec.streaming.to_streaming``.
No layer mixes feature rows, so its features are one 1D network of vidrec layers applied to every row on its own
(``RowwiseTemporalNet``, offline and streaming on the rows as a batch ``(B D, c, T)``, weights and batch-norm
statistics shared over rows as the authors' ``1 x k`` convolutions): per stage a ``TemporalConcat`` of the branches
(``temporal_conv1d`` -> BN -> ReLU -> ``TemporalMaxPool1d``, cropped on the left to a common length), then the 1x1
reductions. It needs ``receptive_field`` frames (114 with the default stages: every frame of ~4.6 s at 25 fps) and
hops that are multiples of its stride (24). Checkpoints of the earlier valid layout (``Conv2d (k x 1)`` over a
``(B, 1, T, D)`` image) load: same parameter names, their kernels' trailing 1 squeezed.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from vidrec.layers.lowering import (
    CompiledLoweringBuilder,
    register_batchnorm_fold,
    register_lowering,
    register_valid_twin,
)
from vidrec.layers.pooling import TemporalMaxPool1d
from vidrec.layers.stream_state import map_state
from vidrec.layers.temporal import (
    State,
    TemporalAvgPoolHead,
    TemporalConcat,
    TemporalModule,
    TemporalSequential,
    stream_state_of,
    stream_step_of,
    temporal_conv1d,
)
from vidrec.models._base import StreamableClassifier
from vidrec.models._registry import Modality, StreamMode, register_model

__all__ = [
    "InceptionPadding",
    "InceptionStageSettings",
    "TemporalConcat",
    "RowsImage",
    "RowwiseTemporalNet",
    "TemporalInception",
    "temporal_inception",
]


class InceptionPadding(enum.Enum):
    """Temporal padding of the convolutions."""

    SAME = "same"  # zero padding (k - 1) / 2, the authors' form; offline only
    VALID = "valid"  # no padding, right-aligned: streams exactly


@dataclass(frozen=True)
class InceptionStageSettings:
    """One Inception stage."""

    kernels: tuple[int, ...] = (5, 7)  # temporal kernel of each parallel branch
    pool: int = 2  # temporal max pool (kernel = stride) after each branch


PAPER_STAGES = (
    InceptionStageSettings((5, 7), 2),
    InceptionStageSettings((5, 7), 2),
    InceptionStageSettings((5, 7), 2),
    InceptionStageSettings((5, 7), 3),
)


class RowsImage(TemporalModule):
    """``(B, D, T) <-> (B, 1, T, D)``: features as an image of one channel (``to_image``) or back (time-pointwise)."""

    def __init__(self, to_image: bool) -> None:
        super().__init__()
        self.to_image = to_image

    def forward(self, x: Tensor) -> Tensor:
        if self.to_image:
            return x.transpose(1, 2).unsqueeze(1)  # (B, D, T) -> (B, 1, T, D)
        return x.squeeze(1).transpose(1, 2)  # (B, 1, T, D) -> (B, D, T)

    def stream_state(self, x: Tensor) -> State:
        return []

    def stream_step(self, x: Tensor, state: State) -> tuple[Tensor, State]:
        return self(x), state


def _branch(c_in: int, c_out: int, kernel: int, pool: int) -> nn.Module:
    """The "same" form's branch: conv ``k x 1`` over (time, rows) -> BN -> ReLU -> max pool ``p x 1``."""
    if kernel % 2 == 0:
        raise ValueError(f"InceptionPadding.SAME needs odd kernels, got {kernel}")
    conv = nn.Conv2d(c_in, c_out, (kernel, 1), padding=((kernel - 1) // 2, 0))
    return nn.Sequential(conv, nn.BatchNorm2d(c_out), nn.ReLU(inplace=True), nn.MaxPool2d((pool, 1), (pool, 1)))


def _valid_branch(c_in: int, c_out: int, kernel: int, pool: int) -> TemporalSequential:
    """The valid form's branch over one feature row ``(B D, c, T)``: conv k -> BN -> ReLU -> max pool p."""
    return TemporalSequential(
        temporal_conv1d(c_in, c_out, kernel, bias=True),
        nn.BatchNorm1d(c_out),
        nn.ReLU(inplace=True),
        TemporalMaxPool1d(pool),
    )


class _SameConcat(nn.Module):
    """Offline concatenation of "same"-padded branches (equal lengths)."""

    def __init__(self, branches: Sequence[nn.Module]) -> None:
        super().__init__()
        self.branches = nn.ModuleList(branches)

    def forward(self, x: Tensor) -> Tensor:
        return torch.cat([b(x) for b in self.branches], dim=1)


# the "same" form's approximate (valid) twin, layer by layer (vidrec.streaming.approximate): the concatenation becomes
# the right-aligned TemporalConcat of the branches' twins; the rows image is time-pointwise
@register_valid_twin(_SameConcat)
def _same_concat_twin(module: _SameConcat, twin: Callable[[nn.Module], nn.Module]) -> nn.Module:
    return TemporalConcat(*(twin(b) for b in module.branches))


@register_valid_twin(RowsImage)
def _rows_image_twin(module: RowsImage, twin: Callable[[nn.Module], nn.Module]) -> nn.Module:
    return module


def _squeeze_image_kernels(state_dict: dict[str, Tensor], prefix: str, *_: object) -> None:
    """The earlier valid layout's ``Conv2d`` kernels ``(O, C, k, 1)`` -> this layout's ``Conv1d`` ``(O, C, k)``."""
    for key in [k for k in state_dict if k.startswith(prefix) and k.endswith(".weight")]:
        value = state_dict[key]
        if value.dim() == 4 and value.shape[-1] == 1:
            state_dict[key] = value.squeeze(-1)


class RowwiseTemporalNet(TemporalModule):
    """A 1D network of vidrec temporal layers applied to each of ``rows`` feature rows on its own.

    ``(B, D, T) -> (B D, 1, T) -> layers -> (B D, 1, T') -> (B, D, T')``: every convolution is ``1 x k`` along time
    with its weights shared over the rows, and batch norm pools its statistics over batch, rows and time (the
    authors' ``Conv2d``/``BatchNorm2d`` over the ``(1, T, D)`` image). Then the authors' spatial dropout on the
    one-channel map (a whole sample's map at once).

    Streaming runs the layers' own streaming steps on the rows as a batch, ``(B D, c, n)``, so each hop costs the
    batched convolutions of its new positions (a grouped convolution over ``(B, D c, n)`` costs several times more
    on CPUs: ``groups=D`` with a few channels per group). The state is the layers' state of ``B D`` rows viewed
    ``(B, D c, ...)``, so streams stay on axis 0 for the engines' slots. The compiled engine lowers the layers once
    on the rows as a batch (``rows_as_batch``, ``_lower_rowwise`` below), inside its traced step.

    Args:
        rows: D, the feature rows.
        layers: The per-row network on ``(B D, 1, T)`` (vidrec temporal layers and time-pointwise modules); its last
            output has one channel.
        dropout: Probability of the spatial dropout.
    """

    def __init__(self, rows: int, layers: Sequence[nn.Module], dropout: float = 0.0) -> None:
        super().__init__()
        self.rows = int(rows)
        self.layers = nn.ModuleList(layers)
        self.dropout = nn.Dropout2d(dropout)
        geometry = TemporalSequential(*layers)  # the composed geometry (not kept: the layers live in self.layers)
        self.receptive_field, self.stride = geometry.receptive_field, geometry.stride
        self._register_load_state_dict_pre_hook(_squeeze_image_kernels)

    def __iter__(self) -> Iterator[nn.Module]:
        return iter(self.layers)

    def _check(self, x: Tensor) -> tuple[int, int, int]:
        if x.dim() != 3 or x.shape[1] != self.rows:
            raise ValueError(f"RowwiseTemporalNet: expected (B, D={self.rows}, T), got {tuple(x.shape)}")
        return int(x.shape[0]), int(x.shape[1]), int(x.shape[2])

    def forward(self, x: Tensor) -> Tensor:
        b, d, t = self._check(x)
        y = x.reshape(b * d, 1, t)
        for m in self.layers:
            y = m(y)  # (B D, c, T_i)
        if y.shape[1] != 1:
            raise ValueError(f"RowwiseTemporalNet: the per-row network must end with 1 channel, got {y.shape[1]}")
        return self.dropout(y.reshape(b, 1, d, -1)).reshape(b, d, -1)  # the dropout sees the (1, D, T') map

    def stream_state(self, x: Tensor) -> State:
        """One entry per layer: its state for ``B D`` rows, each tensor viewed ``(B, D c, ...)``."""
        b, d, n = self._check(x)
        y, states = x.reshape(b * d, 1, n), []
        with torch.no_grad():
            for m in self.layers:
                s = stream_state_of(m, y)
                states.append(s)
                y, _ = stream_step_of(m, y, s)
        return map_state(lambda t: _per_stream(t, b), states)

    def stream_step(self, x: Tensor, state: State) -> tuple[Tensor, State]:
        b, d, n = self._check(x)
        if isinstance(state, Tensor) or len(state) != len(self.layers):
            raise ValueError(f"RowwiseTemporalNet.stream_step expects one state entry per layer ({len(self.layers)})")
        rows = map_state(lambda t: t.reshape(b * d, t.shape[1] // d, *t.shape[2:]), state)
        y, new = x.reshape(b * d, 1, n), []
        for m, s in zip(self.layers, rows, strict=True):
            y, s = stream_step_of(m, y, s)
            new.append(s)
        return y.reshape(b, d, -1), map_state(lambda t: _per_stream(t, b), new)


def _per_stream(t: Tensor, streams: int) -> Tensor:
    """A state tensor of ``B D`` rows ``(B D, c, ...)`` viewed ``(B, D c, ...)`` (rows of a stream are adjacent)."""
    return t.reshape(streams, (t.shape[0] // streams) * t.shape[1], *t.shape[2:])


# batch-norm folding (vidrec.streaming.optimize): the per-row layers run in order
register_batchnorm_fold(RowwiseTemporalNet, sequence=lambda m: m.layers)


@register_lowering(RowwiseTemporalNet, target="compiled")
def _lower_rowwise(b: CompiledLoweringBuilder[Any], m: RowwiseTemporalNet, x: Any) -> Any:
    """The compiled engine: the per-row layers lowered once on the rows as a batch (``rows_as_batch``); the spatial
    dropout is the identity in eval mode."""
    if m.training:
        raise TypeError("RowwiseTemporalNet is lowered in eval mode only")
    return b.rows_as_batch(m, list(m.layers), x)


class TemporalInception(StreamableClassifier):
    """Temporal-Inception over per-frame features ``(B, D, T) -> (B, K)``.

    Args:
        feature_dim: D, the per-frame feature size.
        num_classes: K.
        stages: the Inception stages (None: the paper's four, kernels 5 and 7, pools 2, 2, 2, 3).
        reductions: channels of the 1x1 reductions after the stages (the authors': 4, 2, 1; the last must be 1).
        hidden: width of the MLP's hidden layer (1024).
        dropout: spatial dropout after the reductions (the authors' ``dropout1``).
        head_dropout: dropout before the last linear layer (``dropout2``).
        padding: ``SAME`` (the authors' form, offline only) or ``VALID`` (streamable).
    """

    def __init__(
        self,
        *,
        feature_dim: int,
        num_classes: int,
        stages: Sequence[InceptionStageSettings] | None = None,
        reductions: Sequence[int] = (4, 2, 1),
        hidden: int = 1024,
        dropout: float = 0.2,
        head_dropout: float = 0.2,
        padding: InceptionPadding = InceptionPadding.SAME,
    ) -> None:
        super().__init__()
        stages = PAPER_STAGES if stages is None else stages
        if not stages:
            raise ValueError("TemporalInception needs at least one stage")
        if not reductions or reductions[-1] != 1:
            raise ValueError(f"reductions must end with 1 channel (one map of D rows), got {list(reductions)}")
        self.feature_dim, self.padding = feature_dim, InceptionPadding(padding)
        if self.padding is InceptionPadding.VALID:
            self.features = self._valid_features(stages, reductions, dropout)
        else:
            self.features = self._same_features(stages, reductions, dropout)  # type: ignore[assignment]
        self.pool = TemporalAvgPoolHead()
        self.classifier = nn.Sequential(
            nn.Linear(feature_dim, hidden),
            nn.BatchNorm1d(hidden),
            nn.ReLU(inplace=True),
            nn.Dropout(head_dropout),
            nn.Linear(hidden, num_classes),
        )
        if self.padding is InceptionPadding.VALID:
            self._init_geometry()
        else:
            self.receptive_field, self.stride = 1, 1  # not meaningful: the SAME form does not stream

    def _valid_features(
        self, stages: Sequence[InceptionStageSettings], reductions: Sequence[int], dropout: float
    ) -> RowwiseTemporalNet:
        """The per-row network of vidrec layers (index 0 is the earlier layout's rows image: same parameter names)."""
        layers: list[nn.Module] = [nn.Identity()]
        channels = 1
        for stage in stages:
            layers.append(TemporalConcat(*(_valid_branch(channels, channels, k, stage.pool) for k in stage.kernels)))
            channels *= len(stage.kernels)  # (B D, c, T) -> (B D, c * branches, T / pool)
        for width in reductions:
            layers += [temporal_conv1d(channels, width, 1, bias=True), nn.BatchNorm1d(width), nn.ReLU(inplace=True)]
            channels = width
        return RowwiseTemporalNet(self.feature_dim, layers, dropout)

    def _same_features(
        self, stages: Sequence[InceptionStageSettings], reductions: Sequence[int], dropout: float
    ) -> nn.Sequential:
        """The authors' zero-padded form over the ``(B, 1, T, D)`` image."""
        layers: list[nn.Module] = [RowsImage(to_image=True)]
        channels = 1
        for stage in stages:
            layers.append(_SameConcat([_branch(channels, channels, k, stage.pool) for k in stage.kernels]))
            channels *= len(stage.kernels)  # (B, c, T, D) -> (B, c * branches, T / pool, D)
        for width in reductions:
            layers += [nn.Conv2d(channels, width, 1), nn.BatchNorm2d(width), nn.ReLU(inplace=True)]
            channels = width
        layers += [nn.Dropout2d(dropout), RowsImage(to_image=False)]  # (B, 1, T', D) -> (B, D, T')
        return nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() != 3 or x.shape[1] != self.feature_dim:
            raise ValueError(f"TemporalInception: expected (B, D={self.feature_dim}, T), got {tuple(x.shape)}")
        if self.padding is InceptionPadding.VALID and x.shape[2] < self.receptive_field:
            raise ValueError(
                f"TemporalInception (valid): {x.shape[2]} frames are fewer than its receptive field "
                f"({self.receptive_field}); extract every frame or use the SAME form"
            )
        return super().forward(x)

    def configure_stream(self, window: int, hop: int) -> None:
        if self.padding is not InceptionPadding.VALID:
            raise ValueError(
                "TemporalInception with InceptionPadding.SAME zero-pads in time and cannot stream exactly; "
                "build it with padding=InceptionPadding.VALID, or stream it approximately with "
                "vidrec.streaming.approximate.approximate_model_streaming (deviation measured)"
            )
        super().configure_stream(window, hop)


# The default (SAME) form zero-pads in time. approximate_model_streaming streams its valid twin (layer by layer, same
# weights), but measured on the ordered-events test set with a trained head (tools/bench_feature_heads.py
# approximate) the twin agrees with offline on 16.7% of windows, chance: its receptive field (114 frames) is far
# beyond the 24-25 frame window, so offline mostly reads zero padding. Registered as not streaming; the valid form
# (padding="valid") streams exactly.
@register_model(streams=StreamMode.NONE, modality=Modality.FEATURES)
def temporal_inception(
    *,
    feature_dim: int = 4096,
    num_classes: int = 101,
    padding: InceptionPadding | str = InceptionPadding.SAME,
    stages: Sequence[InceptionStageSettings] | None = None,
    dropout: float = 0.2,
    head_dropout: float = 0.2,
) -> TemporalInception:
    """The paper's Temporal-Inception (kernels 5 and 7, 4 stages, 1x1 reductions 16 -> 4 -> 2 -> 1, MLP 1024).

    Its default ``padding="same"`` form goes through ``approximate_model_streaming`` (the twin has valid layers and
    the same weights), but its measured deviation at the paper's window is at chance (see the comment above), so the
    registry says it does not stream; ``padding="valid"`` streams exactly (tests/models/test_feature_heads.py).
    """
    return TemporalInception(
        feature_dim=feature_dim,
        num_classes=num_classes,
        stages=PAPER_STAGES if stages is None else stages,  # None: the paper's four stages
        padding=InceptionPadding(padding),
        dropout=dropout,
        head_dropout=head_dropout,
    )
