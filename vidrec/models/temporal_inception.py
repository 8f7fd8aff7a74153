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
(``RowwiseTemporalNet``): ``TemporalConcat`` of the branches (``temporal_conv1d`` -> BN -> ReLU ->
``TemporalMaxPool1d``, cropped on the left to a common length), then the 1x1 reductions, offline on ``(B D, 1, T)``
(weights and batch-norm statistics shared over rows as the authors' ``1 x k`` convolutions). Streaming runs the same
computation in the rows-major layout ``(B, D c, T)``, where a shared convolution is one grouped ``Conv1d`` (D groups)
and a stage's branches merge into one grouped convolution; the compiled engine lowers all of it (ring buffers, traced
step). It needs ``receptive_field`` frames (114 with the default stages: every frame of ~4.6 s at 25 fps) and hops
that are multiples of its stride (24). Checkpoints of the earlier valid layout (``Conv2d (k x 1)`` over a
``(B, 1, T, D)`` image) load: same parameter names, their kernels' trailing 1 squeezed.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vidrec.layers.lowering import LoweringBuilder, register_lowering, register_valid_twin
from vidrec.layers.pooling import TemporalMaxPool1d
from vidrec.layers.temporal import (
    State,
    TemporalAvgPoolHead,
    TemporalConcat,
    TemporalModule,
    TemporalSequential,
    TemporalWindowOp,
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


class RowwiseTemporalNet(TemporalSequential):
    """A 1D temporal network applied to each of ``rows`` feature rows on its own: ``(B, D, T) -> (B, D, T')``.

    Offline (training): ``(B, D, T) -> (B D, 1, T) -> layers -> (B D, 1, T') -> (B, D, T')``, so every convolution
    is ``1 x k`` along time with its weights shared over the rows and batch norm pools its statistics over batch,
    rows and time (the authors' ``Conv2d``/``BatchNorm2d`` over the ``(1, T, D)`` image). Then the authors' spatial
    dropout on the one-channel map (a whole sample's map at once).

    Streaming: the same computation in the rows-major layout ``(B, D c, T)`` (channel ``d c + i`` is channel ``i``
    of row ``d``; with ``c = 1`` that is the input itself). There a shared convolution is one grouped ``Conv1d``
    (``D`` groups, its kernel repeated), and the parallel branches of a stage, which differ only in their kernel,
    merge into one grouped convolution whose shorter kernels are zero-padded on the left (right alignment): its
    output is each row's branch channels in branch order, the offline concatenation. ``stream_twin()`` builds that
    ``TemporalSequential`` of vidrec layers from the current weights (eval-mode batch norm folded in);
    ``stream_state`` / ``stream_step`` are the twin's (built by ``stream_state``), and the streaming engines lower
    the twin (``TemporalWindowOp`` over ``Conv1d``, ReLU, ``TemporalMaxPool1d``).

    Args:
        rows: D, the feature rows.
        layers: The per-row network on ``(B D, 1, T)``: time-pointwise modules, ``TemporalWindowOp`` over
            ``Conv1d``, ``TemporalMaxPool1d``, and ``TemporalConcat`` of branches ``conv -> BN -> ReLU -> max pool``
            with the same pool (the Temporal-Inception stages); the last output has one channel.
        dropout: Probability of the spatial dropout.
    """

    def __init__(self, rows: int, layers: Sequence[nn.Module], dropout: float = 0.0) -> None:
        super().__init__(*layers)
        self.rows = int(rows)
        self.dropout = nn.Dropout2d(dropout)
        self._twin: list[TemporalSequential] = []  # the streaming twin, held outside the module tree (no state_dict)
        self._register_load_state_dict_pre_hook(_squeeze_image_kernels)

    def forward(self, x: Tensor) -> Tensor:
        b, d, t = x.shape
        if d != self.rows:
            raise ValueError(f"RowwiseTemporalNet: expected (B, D={self.rows}, T), got {tuple(x.shape)}")
        y = super().forward(x.reshape(b * d, 1, t))  # (B D, 1, T')
        if y.shape[1] != 1:
            raise ValueError(f"RowwiseTemporalNet: the per-row network must end with 1 channel, got {y.shape[1]}")
        return self.dropout(y.reshape(b, 1, d, -1)).reshape(b, d, -1)  # the dropout sees the (1, D, T') map

    def stream_twin(self) -> TemporalSequential:
        """The rows-major streaming form of the current weights (eval mode; see the class docstring)."""
        from vidrec.streaming.optimize import fold_batchnorm  # lazy: vidrec.streaming imports the models

        folded = cast(TemporalSequential, fold_batchnorm(TemporalSequential(*self.layers)))
        grouped = [_rows_major(m, self.rows) for m in folded.layers]
        return TemporalSequential(*(m for m in grouped if m is not None)).eval()

    def stream_state(self, x: Tensor) -> State:
        """The twin's state (the twin is rebuilt from the current weights here)."""
        self._twin[:] = [self.stream_twin().to(device=x.device, dtype=x.dtype)]
        return self._twin[0].stream_state(x)

    def stream_step(self, x: Tensor, state: State) -> tuple[Tensor, State]:
        if not self._twin:
            raise RuntimeError("RowwiseTemporalNet: call stream_state(x) before stream_step (it builds the twin)")
        return self._twin[0].stream_step(x, state)


def _grouped_conv(weight: Tensor, bias: Tensor | None, rows: int) -> TemporalWindowOp:
    """``(O, C, k)`` shared over ``rows`` -> a valid grouped ``Conv1d(rows C, rows O, k, groups=rows)``."""
    c_out, c_in, k = weight.shape
    conv = nn.Conv1d(rows * c_in, rows * c_out, k, groups=rows, bias=bias is not None)
    conv = conv.to(device=weight.device, dtype=weight.dtype)
    with torch.no_grad():
        conv.weight.copy_(weight.repeat(rows, 1, 1))
        if bias is not None and conv.bias is not None:
            conv.bias.copy_(bias.repeat(rows))
    return TemporalWindowOp(conv, receptive_field=k)


def _plain_conv(m: nn.Module) -> nn.Conv1d:
    op = m.op if isinstance(m, TemporalWindowOp) else None
    if not isinstance(op, nn.Conv1d) or op.groups != 1 or op.stride[0] != 1 or op.dilation[0] != 1:
        raise TypeError(f"RowwiseTemporalNet streams convolutions of stride and dilation 1, got {m}")
    return op


def _merged_branches(concat: TemporalConcat, rows: int) -> TemporalSequential:
    """Branches ``conv k_b -> ReLU -> max pool p`` (batch norm folded) -> one grouped conv of ``max k_b`` taps."""
    convs, tails = [], []
    for branch in concat.branches:
        parts = [m for m in cast(TemporalSequential, branch).layers if not isinstance(m, (nn.Identity, nn.Dropout))]
        if len(parts) != 3 or not isinstance(parts[1], nn.ReLU) or not isinstance(parts[2], TemporalMaxPool1d):
            raise TypeError(f"RowwiseTemporalNet merges branches of conv -> BN -> ReLU -> max pool, got {branch}")
        convs.append(_plain_conv(parts[0]))
        tails.append((parts[2].kernel_size, parts[2].stride))
    if len(set(tails)) != 1:
        raise TypeError(f"RowwiseTemporalNet merges branches with the same max pool, got {tails}")
    k = max(c.kernel_size[0] for c in convs)
    # right alignment: branch b's output at t reads [t - k_b + 1, t], the last k_b of the merged kernel's k taps
    weight = torch.cat([F.pad(c.weight.detach(), (k - c.kernel_size[0], 0)) for c in convs])
    biases = [c.bias.detach() if c.bias is not None else c.weight.new_zeros(c.out_channels) for c in convs]
    kernel, stride = tails[0]
    return TemporalSequential(
        _grouped_conv(weight, torch.cat(biases), rows), nn.ReLU(), TemporalMaxPool1d(kernel, stride)
    )


def _rows_major(m: nn.Module, rows: int) -> nn.Module | None:
    """A per-row layer (batch norm folded) -> its rows-major streaming form; None for the identity and dropout."""
    if isinstance(m, (nn.Identity, nn.Dropout, nn.Dropout1d, nn.Dropout2d)):
        return None
    if isinstance(m, nn.ReLU):
        return nn.ReLU()
    if isinstance(m, TemporalMaxPool1d):
        return TemporalMaxPool1d(m.kernel_size, m.stride)
    if isinstance(m, TemporalConcat):
        return _merged_branches(m, rows)
    if isinstance(m, TemporalWindowOp):
        conv = _plain_conv(m)
        return _grouped_conv(conv.weight.detach(), None if conv.bias is None else conv.bias.detach(), rows)
    raise TypeError(f"RowwiseTemporalNet has no rows-major form of {type(m).__name__} (a batch norm not after a conv?)")


# the engines lower the rows-major twin (vidrec.layers.lowering): grouped Conv1d, ReLU and max pool of vidrec layers
@register_lowering(RowwiseTemporalNet)
def _lower_rowwise(b: LoweringBuilder[Any], m: RowwiseTemporalNet, x: Any) -> Any:
    return b.lower(m._twin[0] if m._twin else m.stream_twin(), x)


class _HeadBatchNorm(nn.BatchNorm1d, TemporalModule):
    """The MLP head's ``BatchNorm1d`` (same parameters, statistics and behaviour), which the streaming engines lower
    as the per-channel affine map it is in eval mode (a diagonal linear layer) instead of calling it eagerly."""


@register_lowering(_HeadBatchNorm)
def _lower_head_batchnorm(b: LoweringBuilder[Any], m: _HeadBatchNorm, x: Any) -> Any:
    mean, var = cast(Tensor, m.running_mean), cast(Tensor, m.running_var)
    scale = torch.rsqrt(var + m.eps) * (m.weight if m.weight is not None else 1.0)
    shift = (m.bias if m.bias is not None else 0.0) - mean * scale
    affine = nn.Linear(m.num_features, m.num_features).to(device=mean.device, dtype=mean.dtype)
    with torch.no_grad():
        affine.weight.copy_(torch.diag(scale.detach()))
        affine.bias.copy_(shift.detach())
    return b.lower(affine, x)


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
            _HeadBatchNorm(hidden),
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
