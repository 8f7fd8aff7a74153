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
``InceptionPadding.VALID`` removes the zero padding: every layer is a valid, right-aligned vidrec temporal layer
(``TemporalWindowOp``), branches are cropped on the left to a common length before concatenation, and the whole
model is a ``StreamableClassifier`` that streams exactly through ``vidrec.streaming.to_streaming``. The valid form
needs ``receptive_field`` frames (114 with the default stages: feed every frame of ~4.6 s at 25 fps) and hops that
are multiples of its stride (24).
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from vidrec.layers.lowering import register_valid_twin
from vidrec.layers.temporal import (
    TemporalAvgPoolHead,
    TemporalModule,
    TemporalSequential,
    TemporalWindowOp,
    crop_left_to,
    stream_state_of,
    stream_step_of,
    temporal_geometry,
)
from vidrec.models._base import StreamableClassifier
from vidrec.models._registry import Modality, StreamMode, register_model

__all__ = [
    "InceptionPadding",
    "InceptionStageSettings",
    "TemporalConcat",
    "RowsImage",
    "TemporalInception",
    "temporal_inception",
]

State = list[Tensor]


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


class TemporalConcat(TemporalModule):
    """Parallel branches concatenated on channels, each cropped on the left to the shortest (right alignment).

    ::

        x ─┬► branch 0 ─► crop ─┐
           └► branch 1 ─► crop ─┴► cat(dim=1)

    Branches must share the temporal stride; in streaming every branch returns the same new positions per hop.
    """

    def __init__(self, branches: Sequence[nn.Module]) -> None:
        super().__init__()
        self.branches = nn.ModuleList(branches)
        geometry = [temporal_geometry(b) for b in branches]
        strides = {s for _, s in geometry}
        if len(strides) != 1:
            raise ValueError(f"TemporalConcat: branches have different temporal strides {sorted(strides)}")
        self.receptive_field, self.stride = max(r for r, _ in geometry), strides.pop()

    def forward(self, x: Tensor) -> Tensor:
        ys = [b(x) for b in self.branches]
        n = min(y.shape[2] for y in ys)
        return torch.cat([crop_left_to(y, n) for y in ys], dim=1)

    def stream_state(self, x: Tensor) -> State:
        state: State = []
        self._sizes = []
        for b in self.branches:
            s = stream_state_of(b, x)
            self._sizes.append(len(s))
            state.extend(s)
        return state

    def stream_step(self, x: Tensor, state: State) -> tuple[Tensor, State]:
        ys, new, i = [], [], 0
        for b, n in zip(self.branches, self._sizes):
            y, s = stream_step_of(b, x, state[i : i + n])
            ys.append(y)
            new.extend(s)
            i += n
        return torch.cat(ys, dim=1), new


def _branch(c_in: int, c_out: int, kernel: int, pool: int, padding: InceptionPadding) -> nn.Module:
    """conv ``k x 1`` over (time, rows) -> BN -> ReLU -> max pool ``p x 1``."""
    pad = (kernel - 1) // 2 if padding is InceptionPadding.SAME else 0
    if padding is InceptionPadding.SAME and kernel % 2 == 0:
        raise ValueError(f"InceptionPadding.SAME needs odd kernels, got {kernel}")
    conv = nn.Conv2d(c_in, c_out, (kernel, 1), padding=(pad, 0))
    pooling = nn.MaxPool2d((pool, 1), (pool, 1))
    if padding is InceptionPadding.SAME:
        return nn.Sequential(conv, nn.BatchNorm2d(c_out), nn.ReLU(inplace=True), pooling)
    return TemporalSequential(
        TemporalWindowOp(conv, kernel),
        nn.BatchNorm2d(c_out),
        nn.ReLU(inplace=True),
        TemporalWindowOp(pooling, pool, pool),
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
    return TemporalConcat([twin(b) for b in module.branches])


@register_valid_twin(RowsImage)
def _rows_image_twin(module: RowsImage, twin: Callable[[nn.Module], nn.Module]) -> nn.Module:
    return module


def _pointwise(module: nn.Module, padding: InceptionPadding) -> nn.Module:
    """A 1x1 conv as a streamable op (valid form) or as it is."""
    return TemporalWindowOp(module, 1) if padding is InceptionPadding.VALID else module


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
        layers: list[nn.Module] = [RowsImage(to_image=True)]
        channels = 1
        for stage in stages:
            branches = [_branch(channels, channels, k, stage.pool, self.padding) for k in stage.kernels]
            layers.append(TemporalConcat(branches) if self.padding is InceptionPadding.VALID else _SameConcat(branches))
            channels *= len(stage.kernels)  # (B, c, T, D) -> (B, c * branches, T / pool, D)
        for width in reductions:
            layers += [
                _pointwise(nn.Conv2d(channels, width, 1), self.padding),
                nn.BatchNorm2d(width),
                nn.ReLU(inplace=True),
            ]
            channels = width
        layers += [nn.Dropout2d(dropout), RowsImage(to_image=False)]  # (B, 1, T', D) -> (B, D, T')
        if self.padding is InceptionPadding.VALID:
            self.features = TemporalSequential(*layers)
        else:
            self.features = nn.Sequential(*layers)  # type: ignore[assignment]
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
