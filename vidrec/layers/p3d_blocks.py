"""Pseudo-3D bottleneck blocks A, B and C, streamable.

Paper: Zhaofan Qiu, Ting Yao, Tao Mei, "Learning Spatio-Temporal Representation with Pseudo-3D Residual
Networks", ICCV 2017.

Every block is the ResNet bottleneck ``1x1x1 -> (S / T) -> 1x1x1`` with a residual connection, where the middle
3x3 conv is replaced by a spatial ``1 x 3 x 3`` conv ``S`` and a temporal ``t x 1 x 1`` conv ``T`` (each followed by
BN and ReLU) combined in one of three ways, following the paper's formulation (A: ``T(S(x))``, B: ``S(x) + T(x)``,
C: ``S(x) + T(S(x))``, each inside the residual ``x + ...``). The authors' released Caffe models differ in two
details that vidrec does not copy: in B and C the ReLU comes after the sum rather than on each path, and C weights its
two paths by 0.5. Weights converted from that release therefore need those two changes.

* A: ``S`` then ``T`` (serial),
* B: ``S`` and ``T`` in parallel on the same input, summed,
* C: ``S`` then ``T``, with a shortcut from ``S``'s output to after ``T``.

:class:`Bottleneck2d` is the same bottleneck with only ``S`` (the plain 2D ResNet block, used where a P3D network has
no temporal conv). The spatial stride sits on the first ``1x1x1`` conv and the shortcut, as in the authors' release.
Temporal convs follow :class:`~vidrec.layers.TemporalPadding` (``VALID``: streamable exactly; ``SAME``: zero padding
in time, offline only); composition uses ``TemporalResidual`` / ``TemporalParallelSum`` so every block streams.

Lowering: the blocks are ``ResidualReLU``s of ``TemporalResidual`` / ``TemporalParallelSum`` over
``NamedTemporalSequential``s of ``SpatialConv3d``, temporal convs, BatchNorm and ReLU, so the generic registrations of
those containers (``vidrec.layers.temporal``) and the video lowerings of ``vidrec.layers.conv2plus1d`` lower every
block on the compiled video engine; a block needs no registration of its own.
"""

from __future__ import annotations

import enum

from torch import nn

from vidrec.layers.conv2plus1d import NamedTemporalSequential, SpatialConv3d, TemporalPadding, temporal_conv
from vidrec.layers.temporal import ResidualReLU, TemporalParallelSum, TemporalResidual

__all__ = ["P3DBlockType", "P3DBottleneck", "P3DBlockA", "P3DBlockB", "P3DBlockC", "Bottleneck2d", "p3d_block"]

EXPANSION = 4


class P3DBlockType(enum.Enum):
    """How a P3D block combines its spatial and temporal convs."""

    A = "A"
    B = "B"
    C = "C"


def _spatial(width: int) -> NamedTemporalSequential:
    # S: (B, w, T, H, W) -> (B, w, T, H, W), time-pointwise
    return NamedTemporalSequential(
        {"conv": SpatialConv3d(width, width, 3), "bn": nn.BatchNorm3d(width), "relu": nn.ReLU(inplace=True)}
    )


def _temporal(width: int, kernel: int, padding: TemporalPadding) -> NamedTemporalSequential:
    # T: (B, w, T, H, W) -> (B, w, T', H, W); VALID: T' = T - kernel + 1
    return NamedTemporalSequential(
        {
            "conv": temporal_conv(width, width, kernel, padding=padding),
            "bn": nn.BatchNorm3d(width),
            "relu": nn.ReLU(inplace=True),
        }
    )


class P3DBottleneck(ResidualReLU):
    """Shared bottleneck of all P3D blocks; subclasses build the middle part in :meth:`make_core`.

    ::

        x ─► 1x1x1 (stride 1,s,s) ─► BN ─► ReLU ─► core ─► 1x1x1 ─► BN ─┐
        │                                                               (+) ─► ReLU ─► y
        └──────────► shortcut (identity, or 1x1x1 stride 1,s,s + BN) ─► crop ┘

    Args:
        in_channels: input channels.
        width: bottleneck width; the block outputs ``4 * width`` channels.
        spatial_stride: spatial stride of the block.
        temporal_kernel: ``t`` of the temporal conv (ignored by :class:`Bottleneck2d`).
        padding: temporal padding mode.
    """

    def __init__(
        self,
        in_channels: int,
        width: int,
        *,
        spatial_stride: int = 1,
        temporal_kernel: int = 3,
        padding: TemporalPadding = TemporalPadding.VALID,
    ) -> None:
        out_channels = width * EXPANSION
        branch = NamedTemporalSequential(
            {
                "conv1": SpatialConv3d(in_channels, width, 1, stride=spatial_stride),
                "bn1": nn.BatchNorm3d(width),
                "relu1": nn.ReLU(inplace=True),
                "core": self.make_core(width, temporal_kernel, padding),
                "conv3": SpatialConv3d(width, out_channels, 1),
                "bn3": nn.BatchNorm3d(out_channels),
            }
        )
        shortcut = None
        if spatial_stride != 1 or in_channels != out_channels:
            shortcut = NamedTemporalSequential(
                {
                    "conv": SpatialConv3d(in_channels, out_channels, 1, stride=spatial_stride),
                    "bn": nn.BatchNorm3d(out_channels),
                }
            )
        super().__init__(TemporalResidual(branch, shortcut))

    def make_core(self, width: int, temporal_kernel: int, padding: TemporalPadding) -> nn.Module:
        """The spatio-temporal middle of the bottleneck: ``(B, w, T, H, W) -> (B, w, T', H, W)``."""
        raise NotImplementedError


class P3DBlockA(P3DBottleneck):
    """P3D-A: spatial then temporal, in series.

    ::

        x ─► S (1x3x3, BN, ReLU) ─► T (tx1x1, BN, ReLU) ─► y
    """

    def make_core(self, width: int, temporal_kernel: int, padding: TemporalPadding) -> nn.Module:
        return NamedTemporalSequential({"s": _spatial(width), "t": _temporal(width, temporal_kernel, padding)})


class P3DBlockB(P3DBottleneck):
    """P3D-B: spatial and temporal in parallel on the same input, summed (the longer output cropped on the left).

    ::

        x ─┬─► S (1x3x3, BN, ReLU) ─► crop ─┐
           │                               (+) ─► y
           └─► T (tx1x1, BN, ReLU) ────────┘
    """

    def make_core(self, width: int, temporal_kernel: int, padding: TemporalPadding) -> nn.Module:
        return TemporalParallelSum(_spatial(width), _temporal(width, temporal_kernel, padding))


class P3DBlockC(P3DBottleneck):
    """P3D-C: spatial, then temporal, with a shortcut from the spatial output to after the temporal conv.

    ::

        x ─► S (1x3x3, BN, ReLU) ─┬─► T (tx1x1, BN, ReLU) ─┐
                                  │                        (+) ─► y
                                  └────────► crop ─────────┘
    """

    def make_core(self, width: int, temporal_kernel: int, padding: TemporalPadding) -> nn.Module:
        return NamedTemporalSequential(
            {"s": _spatial(width), "t": TemporalResidual(_temporal(width, temporal_kernel, padding))}
        )


class Bottleneck2d(P3DBottleneck):
    """The plain (2D) ResNet bottleneck on video, pointwise in time.

    ::

        x ─► S (1x3x3, BN, ReLU) ─► y
    """

    def make_core(self, width: int, temporal_kernel: int, padding: TemporalPadding) -> nn.Module:
        return _spatial(width)


_BLOCKS: dict[P3DBlockType | None, type[P3DBottleneck]] = {
    P3DBlockType.A: P3DBlockA,
    P3DBlockType.B: P3DBlockB,
    P3DBlockType.C: P3DBlockC,
    None: Bottleneck2d,
}


def p3d_block(
    block_type: P3DBlockType | None,
    in_channels: int,
    width: int,
    *,
    spatial_stride: int = 1,
    temporal_kernel: int = 3,
    padding: TemporalPadding = TemporalPadding.VALID,
) -> P3DBottleneck:
    """Build a P3D block of ``block_type`` (``None``: a 2D :class:`Bottleneck2d`)."""
    return _BLOCKS[block_type](
        in_channels, width, spatial_stride=spatial_stride, temporal_kernel=temporal_kernel, padding=padding
    )
