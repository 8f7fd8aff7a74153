"""1D residual blocks for time series ``(B, C, T)``, valid and right-aligned in time, so they stream exactly.

* ``ResidualBlock1d``: the basic block of "Deep Residual Learning for Image Recognition" (He et al., CVPR 2016)
  with 1D convolutions, as used by 1D-CNN HAR models.
* ``InvertedResidual1d``: the inverted residual of "MobileNetV2: Inverted Residuals and Linear Bottlenecks"
  (Sandler et al., CVPR 2018) with a depthwise temporal convolution; FusionActNet's guidance network uses it.
"""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn

from vidrec.layers.lowering import LoweringBuilder, register_lowering
from vidrec.layers.temporal import (
    ResidualReLU,
    State,
    TemporalModule,
    TemporalResidual,
    TemporalSequential,
    TemporalWindowOp,
    stream_state_of,
    stream_step_of,
    temporal_conv1d,
)

__all__ = ["ResidualBlock1d", "InvertedResidual1d", "conv_bn_relu_1d"]


def conv_bn_relu_1d(
    in_channels: int, out_channels: int, kernel_size: int, *, stride: int = 1, dilation: int = 1
) -> TemporalSequential:
    """Valid temporal conv -> BatchNorm -> ReLU on ``(B, C, T)``."""
    return TemporalSequential(
        temporal_conv1d(in_channels, out_channels, kernel_size, stride=stride, dilation=dilation),
        nn.BatchNorm1d(out_channels),
        nn.ReLU(inplace=True),
    )


def _projection_shortcut(in_channels: int, out_channels: int, stride: int) -> nn.Module | None:
    if in_channels == out_channels and stride == 1:
        return None
    # (B, C_in, T) -> (B, C_out, ceil-aligned T / s): a strided 1-step conv keeps right alignment
    conv = nn.Conv1d(in_channels, out_channels, 1, stride=stride, bias=False)
    return TemporalSequential(TemporalWindowOp(conv, 1, stride), nn.BatchNorm1d(out_channels))


class ResidualBlock1d(ResidualReLU):
    """Basic residual block with two valid temporal convolutions.

    ::

        x ─► conv k (stride s, dilation d) ─► BN ─► ReLU ─► conv k (dilation d) ─► BN ─┐
        │                                                                             (+) ─► ReLU
        └───────────── identity, or 1-step conv (stride s) ─► BN ─► crop left ──────────┘

    Each conv consumes ``d * (k - 1)`` steps, so the block maps T steps to ``T - 2 d (k - 1)`` (stride 1).
    """

    def __init__(
        self, in_channels: int, out_channels: int, kernel_size: int = 5, *, stride: int = 1, dilation: int = 1
    ) -> None:
        branch = TemporalSequential(
            conv_bn_relu_1d(in_channels, out_channels, kernel_size, stride=stride, dilation=dilation),
            temporal_conv1d(out_channels, out_channels, kernel_size, dilation=dilation),
            nn.BatchNorm1d(out_channels),
        )
        super().__init__(TemporalResidual(branch, _projection_shortcut(in_channels, out_channels, stride)))


class InvertedResidual1d(TemporalModule):
    """MobileNetV2 inverted residual on ``(B, C, T)`` with a valid depthwise temporal convolution.

    ::

        x ─► 1x conv (C -> eC) ─► BN ─► ReLU6 ─► depthwise conv k ─► BN ─► ReLU6 ─► 1x conv (eC -> C') ─► BN ─┐
        │                                                                                                    (+)
        └────────────────────── identity (only when C == C' and stride 1) ─► crop left ──────────────────────┘
    """

    def __init__(
        self, in_channels: int, out_channels: int, kernel_size: int = 5, *, expansion: int = 4, stride: int = 1
    ) -> None:
        super().__init__()
        hidden = in_channels * expansion
        branch = TemporalSequential(
            nn.Conv1d(in_channels, hidden, 1, bias=False),
            nn.BatchNorm1d(hidden),
            nn.ReLU6(inplace=True),
            temporal_conv1d(hidden, hidden, kernel_size, stride=stride, groups=hidden),
            nn.BatchNorm1d(hidden),
            nn.ReLU6(inplace=True),
            nn.Conv1d(hidden, out_channels, 1, bias=False),
            nn.BatchNorm1d(out_channels),
        )
        self.body: nn.Module = TemporalResidual(branch) if in_channels == out_channels and stride == 1 else branch
        self.receptive_field, self.stride = branch.receptive_field, branch.stride

    def forward(self, x: Tensor) -> Tensor:
        return self.body(x)

    def stream_state(self, x: Tensor) -> State:
        return stream_state_of(self.body, x)

    def stream_step(self, x: Tensor, state: State) -> tuple[Tensor, State]:
        return stream_step_of(self.body, x, state)


@register_lowering(InvertedResidual1d)
def _lower_inverted_residual(b: LoweringBuilder[Any], m: InvertedResidual1d, x: Any) -> Any:
    """Every engine's code generator lowers the block as its body (vidrec.layers.lowering)."""
    return b.lower(m.body, x)
