"""Factorised (2+1)D convolution and the video conv building blocks it needs, all streamable.

Paper: Du Tran, Heng Wang, Lorenzo Torresani, Jamie Ray, Yann LeCun, Manohar Paluri, "A Closer Look at
Spatiotemporal Convolutions for Action Recognition", CVPR 2018.

A ``t x d x d`` 3D convolution is replaced by a ``1 x d x d`` spatial conv to ``M`` channels, batch norm, ReLU and a
``t x 1 x 1`` temporal conv, with ``M = floor(t d^2 N_in N_out / (d^2 N_in + t N_out))`` so that the parameter count
matches the 3D conv (:func:`r2plus1d_mid_channels`).

Time handling follows ``vidrec.layers.temporal``: with :attr:`TemporalPadding.VALID` (the default) a temporal conv
is a :class:`~vidrec.layers.TemporalWindowOp` (no padding in time, right-aligned, streamable exactly); with
:attr:`TemporalPadding.SAME` it pads zeros in time like torchvision's ``r2plus1d_18`` (offline only, needed to use its
Kinetics-400 weights) and refuses to stream.

Speed: every conv here keeps activations in ``channels_last_3d`` memory order (time before space, channels last).
Spatial ``1 x d x d`` convs run as 2D convs over the ``B * T`` frames of that layout (a free view), which oneDNN does
faster than a 3D conv; temporal ``t x 1 x 1`` convs run as ``channels_last_3d`` 3D convs, which avoids PyTorch's slow
native kernel for small batches. Outputs equal the plain ``nn.Conv3d`` ones up to float rounding.

Lowerings (``vidrec.layers.lowering``), registered at the end of this file: ``NamedTemporalSequential`` decomposes
into its children on every target; on the compiled video engine (target ``"video"``) a ``SpatialConv3d`` (and a
``TemporalConv3d`` with temporal kernel 1) is a convolution on every frame, and the temporal conv of
:func:`temporal_conv` is the ``TemporalWindowOp``'s (``t`` matmuls on its ring buffer).
"""

from __future__ import annotations

import enum
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vidrec.layers.lowering import LoweringBuilder, VideoLoweringBuilder, register_lowering
from vidrec.layers.temporal import (
    State,
    TemporalModule,
    TemporalWindowOp,
    stream_state_of,
    stream_step_of,
    temporal_geometry,
)

__all__ = [
    "TemporalPadding",
    "r2plus1d_mid_channels",
    "SpatialConv3d",
    "TemporalConv3d",
    "SameTemporalConv",
    "NamedTemporalSequential",
    "temporal_conv",
    "Conv2Plus1d",
]


class TemporalPadding(enum.Enum):
    """How temporal convolutions treat the clip boundaries."""

    VALID = "valid"
    """No padding in time: streamable exactly, each ``t``-tap conv consumes ``t - 1`` frames (vidrec's default)."""
    SAME = "same"
    """Zero padding of ``(t - 1) / 2`` frames on both sides, as torchvision's video ResNets; offline only."""


def r2plus1d_mid_channels(in_channels: int, out_channels: int, temporal_kernel: int, spatial_kernel: int = 3) -> int:
    """Intermediate width ``M`` of a (2+1)D conv that matches the parameters of a ``t x d x d`` 3D conv.

    ``M = floor(t d^2 N_in N_out / (d^2 N_in + t N_out))`` (Tran et al. 2018, section 3.5).
    """
    t, d2 = temporal_kernel, spatial_kernel * spatial_kernel
    return (t * d2 * in_channels * out_channels) // (d2 * in_channels + t * out_channels)


def _channels_last(x: Tensor) -> Tensor:
    return x.contiguous(memory_format=torch.channels_last_3d)


def _frame_conv2d(
    x: Tensor, weight: Tensor, bias: Tensor | None, stride: tuple[int, ...], padding: tuple[int, ...] | str
) -> Tensor:
    """A 2D conv applied to every frame of ``x`` (B, C, T, H, W), in channels-last order."""
    b, c, t, h, w = x.shape
    # (B, C, T, H, W) -> (B*T, C, H, W): a view when x is channels_last_3d
    frames = _channels_last(x).transpose(1, 2).reshape(b * t, c, h, w)
    y = F.conv2d(frames, weight, bias, stride, padding)
    # (B*T, C', H', W') -> (B, C', T, H', W'), channels_last_3d
    return y.reshape(b, t, *y.shape[1:]).transpose(1, 2)


def _channels_last_weight(conv: nn.Conv3d) -> None:
    # a channels_last_3d weight makes the 2D views used in forward channels_last, so oneDNN needs no input reorder
    conv.weight.data = conv.weight.data.contiguous(memory_format=torch.channels_last_3d)


class SpatialConv3d(nn.Conv3d):
    """A ``1 x k x k`` (or ``1 x 1 x 1``) ``nn.Conv3d`` computed as a 2D conv over the frames; pointwise in time.

    The weight keeps ``nn.Conv3d``'s shape ``(C_out, C_in, 1, k, k)`` so state dicts stay compatible.
    """

    def __init__(
        self, in_channels: int, out_channels: int, kernel_size: int, *, stride: int = 1, bias: bool = False
    ) -> None:
        super().__init__(
            in_channels,
            out_channels,
            (1, kernel_size, kernel_size),
            stride=(1, stride, stride),
            padding=(0, kernel_size // 2, kernel_size // 2),
            bias=bias,
        )
        _channels_last_weight(self)

    def forward(self, x: Tensor) -> Tensor:
        return _frame_conv2d(x, self.weight.squeeze(2), self.bias, self.stride[1:], self.padding[1:])


class TemporalConv3d(nn.Conv3d):
    """A ``t x 1 x 1`` ``nn.Conv3d`` (optionally strided in space too) run in ``channels_last_3d`` memory order."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        *,
        stride: int = 1,
        spatial_stride: int = 1,
        padding: int = 0,
        bias: bool = False,
    ) -> None:
        super().__init__(
            in_channels,
            out_channels,
            (kernel_size, 1, 1),
            stride=(stride, spatial_stride, spatial_stride),
            padding=(padding, 0, 0),
            bias=bias,
        )
        _channels_last_weight(self)

    def forward(self, x: Tensor) -> Tensor:
        k, st = self.kernel_size[0], self.stride[0]
        if k == 1:
            # pointwise in time: keep every st-th frame, then a 1x1 conv over the frames
            x = x[:, :, ::st] if st > 1 else x
            return _frame_conv2d(x, self.weight.squeeze(2), self.bias, self.stride[1:], (0, 0))
        if self.stride[1] != 1 or self.stride[2] != 1:
            return super().forward(x)  # not used by vidrec's models
        b, _, _, h, w = x.shape
        pad_t = int(self.padding[0])  # an int: set by __init__
        # (B, C, T, H, W) -> (B, C, T, H*W) channels_last (a view of channels_last_3d): a 2D conv with a (t, 1) kernel
        y = F.conv2d(_channels_last(x).flatten(3), self.weight.squeeze(-1), self.bias, (st, 1), (pad_t, 0))
        # (B, C', T', H*W) -> (B, C', T', H, W)
        return y.unflatten(3, (h, w))


class SameTemporalConv(TemporalModule):
    """A zero-padded ("same") temporal conv, offline only: torchvision's alignment, not right-aligned.

    ``T`` input steps give ``ceil(T / stride)`` outputs, output ``i`` centred on input ``i * stride``. Its
    geometry is declared as ``receptive_field = 1`` so that ``output_length`` is right; streaming is refused because
    the zeros inside the window make the output depend on where the clip starts.
    """

    def __init__(self, op: TemporalConv3d) -> None:
        super().__init__()
        k, p = op.kernel_size[0], op.padding[0]
        if not isinstance(p, int) or 2 * p != k - 1:
            raise ValueError(f"SameTemporalConv needs temporal padding (k - 1) / 2 = {(k - 1) / 2}, got {p}")
        self.op = op
        self.receptive_field = 1
        self.stride = op.stride[0]

    def forward(self, x: Tensor) -> Tensor:
        return self.op(x)

    def stream_state(self, x: Tensor) -> State:
        raise ValueError(
            "a temporal conv with TemporalPadding.SAME (zero padding in time, torchvision-compatible) cannot stream "
            "exactly; build the model with temporal_padding=TemporalPadding.VALID to stream"
        )

    def stream_step(self, x: Tensor, state: State) -> tuple[Tensor, State]:
        raise ValueError("TemporalPadding.SAME convs cannot stream; see SameTemporalConv.stream_state")


def temporal_conv(
    in_channels: int,
    out_channels: int,
    kernel_size: int,
    *,
    stride: int = 1,
    spatial_stride: int = 1,
    padding: TemporalPadding = TemporalPadding.VALID,
) -> TemporalModule:
    """A ``t x 1 x 1`` conv without bias, valid and streamable (``VALID``) or zero-padded in time (``SAME``).

    Either way the conv itself is reachable as ``.op`` (same state-dict keys in both modes).
    """
    if padding is TemporalPadding.SAME:
        if kernel_size % 2 == 0:
            raise ValueError(f"TemporalPadding.SAME needs an odd temporal kernel, got {kernel_size}")
        op = TemporalConv3d(
            in_channels,
            out_channels,
            kernel_size,
            stride=stride,
            spatial_stride=spatial_stride,
            padding=(kernel_size - 1) // 2,
        )
        return SameTemporalConv(op)
    op = TemporalConv3d(in_channels, out_channels, kernel_size, stride=stride, spatial_stride=spatial_stride)
    return TemporalWindowOp(op, receptive_field=kernel_size, stride=stride)


class NamedTemporalSequential(TemporalModule):
    """:class:`~vidrec.layers.TemporalSequential` with named children (readable state-dict keys).

    Children are given as a dict ``{name: module}`` and run in insertion order; geometry composes as in
    ``TemporalSequential`` (``r = r + (r_i - 1) * s``, ``s = s * s_i``). Subclasses may pass their own children.
    """

    def __init__(self, modules: dict[str, nn.Module]) -> None:
        super().__init__()
        r, s = 1, 1
        for name, m in modules.items():
            self.add_module(name, m)
            mr, ms = temporal_geometry(m)
            r, s = r + (mr - 1) * s, s * ms
        self.receptive_field, self.stride = r, s
        self._sizes: list[int] | None = None

    def forward(self, x: Tensor) -> Tensor:
        for m in self.children():
            x = m(x)
        return x

    def stream_state(self, x: Tensor) -> State:
        state: State = []
        sizes: list[int] = []
        with torch.no_grad():
            for m in self.children():
                s = stream_state_of(m, x)
                sizes.append(len(s))
                state.extend(s)
                x, _ = stream_step_of(m, x, s)
        self._sizes = sizes
        return state

    def stream_step(self, x: Tensor, state: State) -> tuple[Tensor, State]:
        if self._sizes is None:
            raise RuntimeError(f"{type(self).__name__}: call stream_state() before stream_step()")
        new_state: State = []
        i = 0
        for m, n in zip(self.children(), self._sizes):
            x, s = stream_step_of(m, x, state[i : i + n])
            new_state.extend(s)
            i += n
        return x, new_state


class Conv2Plus1d(NamedTemporalSequential):
    """(2+1)D convolution: spatial ``1 x d x d`` conv, BN, ReLU, temporal ``t x 1 x 1`` conv (Tran et al. 2018).

    ::

        x (B, C_in, T, H, W)
          -> spatial 1 x d x d, stride (1, s, s)  -> (B, M, T, H/s, W/s)     time-pointwise
          -> BatchNorm3d(M) -> ReLU
          -> temporal t x 1 x 1, stride (s_t, 1, 1) -> (B, C_out, T', H/s, W/s)
             VALID: T' = (T - t) // s_t + 1 (right-aligned, streamable); SAME: T' = ceil(T / s_t)

    No BN/ReLU after the temporal conv: the caller adds them (as in torchvision's ``Conv2Plus1D``).

    Args:
        in_channels: ``N_in``.
        out_channels: ``N_out``.
        spatial_kernel: ``d``.
        spatial_stride: spatial stride of the spatial conv.
        temporal_kernel: ``t``.
        temporal_stride: temporal stride of the temporal conv.
        mid_channels: ``M``; ``None`` uses :func:`r2plus1d_mid_channels` of this conv's own widths.
        padding: temporal padding mode.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        *,
        spatial_kernel: int = 3,
        spatial_stride: int = 1,
        temporal_kernel: int = 3,
        temporal_stride: int = 1,
        mid_channels: int | None = None,
        padding: TemporalPadding = TemporalPadding.VALID,
    ) -> None:
        if mid_channels is None:
            mid_channels = r2plus1d_mid_channels(in_channels, out_channels, temporal_kernel, spatial_kernel)
        super().__init__(
            {
                "spatial": SpatialConv3d(in_channels, mid_channels, spatial_kernel, stride=spatial_stride),
                "bn": nn.BatchNorm3d(mid_channels),
                "relu": nn.ReLU(inplace=True),
                "temporal": temporal_conv(
                    mid_channels, out_channels, temporal_kernel, stride=temporal_stride, padding=padding
                ),
            }
        )
        self.mid_channels = mid_channels


# Lowerings for the code generators of the streaming engines (vidrec.layers.lowering)
@register_lowering(NamedTemporalSequential)
def _lower_named_sequential(b: LoweringBuilder[Any], m: NamedTemporalSequential, x: Any) -> Any:
    for child in m.children():
        x = b.lower(child, x)
    return x


@register_lowering(SpatialConv3d, target="video")
def _lower_spatial_conv(b: VideoLoweringBuilder[Any], m: SpatialConv3d, x: Any) -> Any:
    return b.frame_conv(m, x)  # 1 x k x k: a 2D conv on every frame (1 x 1: one matmul)


@register_lowering(TemporalConv3d, target="video")
def _lower_temporal_conv(b: VideoLoweringBuilder[Any], m: TemporalConv3d, x: Any) -> Any:
    # outside a TemporalWindowOp only temporal kernel and stride 1 are pointwise in time; frame_conv refuses others
    return b.frame_conv(m, x)
