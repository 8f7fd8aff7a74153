"""The ops and ring buffers of the compiled video engine (``vidrec.streaming.engines.video``).

Values are ``(n, B, H, W, C)`` tensors, time-first and channels-last, contiguous; ops read registers and write one
register, and never modify a value after it is written except one they own (a fresh tensor with a single reader).
Rings hold the input frames of each temporal window op (and the pool's per-frame features) as
``(keep + period * new, B, *frame)``: at phase ``p`` the window is rows ``[p new, p new + keep + new)``, the new rows
the last ``new`` of them, so a producer can write straight into them (``out=``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vidrec.layers.temporal import TemporalWindowOp
from vidrec.streaming.engines.base import logger

Regs = list[Tensor]


def _to_protocol(t: Tensor) -> Tensor:
    # (T, B, H, W, C) -> (B, C, T, H, W); (T, B, C) -> (B, C, T); (B, C) after a temporal head: as it is
    if t.dim() == 2:
        return t
    return t.permute(1, 4, 0, 2, 3) if t.dim() == 5 else t.permute(1, 2, 0)


def _from_protocol(t: Tensor) -> Tensor:
    # (B, C, T, H, W) -> (T, B, H, W, C) contiguous; (B, C, T) -> (T, B, C); (B, C) (a temporal head's) as it is
    if t.dim() == 2:
        return t
    return (t.permute(2, 0, 3, 4, 1) if t.dim() == 5 else t.permute(2, 0, 1)).contiguous()


# ---------------------------------------------------------------------------------------------------------------
# Ring buffers: one per temporal window op (its input frames) and one for the pool head (its per-frame features)


@dataclass
class _RingSpec:
    keep: int  # history rows (the layer protocol's state length)
    new: int  # rows written per step
    frame: tuple[int, ...]  # one row of one slot: (H, W, C), or (C,) for the pool


class _Rings:
    """What the ops of one step read and write their windows through (``slot``: the new rows, ``window``)."""

    def slot(self, r: int, shape: Sequence[int]) -> Tensor:
        raise NotImplementedError

    def window(self, r: int) -> Tensor:
        raise NotImplementedError


class _ProbeRings(_Rings):
    """Build time: records each ring's geometry from the first value written, on temporaries."""

    def __init__(self, keeps: list[int]) -> None:
        self.keeps = keeps
        self.specs: dict[int, _RingSpec] = {}
        self.buffers: dict[int, Tensor] = {}

    def slot(self, r: int, shape: Sequence[int]) -> Tensor:
        n, b, *frame = shape
        if r not in self.buffers:
            self.specs[r] = _RingSpec(self.keeps[r], int(n), tuple(int(v) for v in frame))
            self.buffers[r] = torch.zeros(self.keeps[r] + n, b, *frame, dtype=self.dtype, device=self.device)
        return self.buffers[r][self.keeps[r] :]

    def window(self, r: int) -> Tensor:
        return self.buffers[r]

    dtype: torch.dtype
    device: torch.device


class _FullRings(_Rings):
    """Rings of every slot, ``(keep + period * new, capacity, *frame)``, at a phase shared by all of them."""

    def __init__(self, specs: list[_RingSpec], capacity: int, period: int, dtype: torch.dtype, device: torch.device):
        self.specs, self.period, self.phase = specs, period, 0
        self.tensors = [
            torch.zeros(s.keep + period * s.new, capacity, *s.frame, dtype=dtype, device=device) for s in specs
        ]

    def slot(self, r: int, shape: Sequence[int]) -> Tensor:
        s = self.specs[r]
        start = self.phase * s.new + s.keep
        return self.tensors[r][start : start + s.new]

    def window(self, r: int) -> Tensor:
        s = self.specs[r]
        start = self.phase * s.new
        return self.tensors[r][start : start + s.keep + s.new]

    def history(self, r: int) -> Tensor:
        """``(keep, capacity, *frame)`` rows of ring ``r`` at the current phase (a view)."""
        s = self.specs[r]
        start = self.phase * s.new
        return self.tensors[r][start : start + s.keep]

    def advance(self) -> None:
        """Move to the next phase after a full step; at the end of the period copy the history to the front."""
        self.phase += 1
        if self.phase < self.period:
            return
        for s, t in zip(self.specs, self.tensors):
            end = self.period * s.new
            t[: s.keep].copy_(t[end : end + s.keep])  # rows do not overlap: period * new >= keep
        self.phase = 0


class _SubsetRings(_Rings):
    """Temporary rings ``(keep + new, n, *frame)`` holding the history of a subset of slots for one step."""

    def __init__(self, full: _FullRings, idx: Tensor) -> None:
        self.specs = full.specs
        self.tensors = []
        for r, s in enumerate(full.specs):
            t = full.tensors[r].new_empty(s.keep + s.new, len(idx), *s.frame)
            t[: s.keep] = full.history(r).index_select(1, idx)
            self.tensors.append(t)

    def slot(self, r: int, shape: Sequence[int]) -> Tensor:
        return self.tensors[r][self.specs[r].keep :]

    def window(self, r: int) -> Tensor:
        return self.tensors[r]

    def write_back(self, full: _FullRings, idx: Tensor) -> None:
        """The new history of the subset into the full rings at the current phase (which does not move)."""
        for r, s in enumerate(self.specs):
            full.history(r).index_copy_(1, idx, self.tensors[r][s.new : s.new + s.keep])


# ---------------------------------------------------------------------------------------------------------------
# Ops: each reads registers, writes one register; values are never modified after they are written, except by an
# op that owns its (fresh) input


class _Op:
    inputs: tuple[int, ...] = ()
    out: int = -1
    ring: int | None = None  # write the output into this ring's new rows (set by the temporal conv that reads it)
    writes_in_place: bool = False  # may write over its input when nothing else reads it

    def run(self, regs: Regs, rings: _Rings) -> None:
        raise NotImplementedError

    def _dest(self, rings: _Rings, shape: Sequence[int]) -> Tensor | None:
        return None if self.ring is None else rings.slot(self.ring, shape)


class _ReLU(_Op):
    def __init__(self, x: int, out: int) -> None:
        self.inputs, self.out, self.inplace = (x,), out, False
        self.applied = False  # fused into the conv that produces its input (the op only forwards or copies)

    def run(self, regs: Regs, rings: _Rings) -> None:
        x = regs[self.inputs[0]]
        dest = self._dest(rings, x.shape)
        if self.applied:
            regs[self.out] = x if dest is None else dest.copy_(x)
        elif dest is not None:
            regs[self.out] = torch.clamp_min(x, 0, out=dest)
        else:
            regs[self.out] = x.relu_() if self.inplace else torch.relu(x)


class _Add(_Op):
    def __init__(self, a: int, b: int, out: int) -> None:
        self.inputs, self.out = (a, b), out

    def run(self, regs: Regs, rings: _Rings) -> None:
        a, b = regs[self.inputs[0]], regs[self.inputs[1]]
        dest = self._dest(rings, a.shape)
        regs[self.out] = torch.add(a, b, out=dest) if dest is not None else a + b


class _Call(_Op):
    """An elementwise or per-channel function of one value (activations, unfolded BatchNorm)."""

    def __init__(self, fn: Callable[[Tensor], Tensor], x: int, out: int) -> None:
        self.fn, self.inputs, self.out = fn, (x,), out

    def run(self, regs: Regs, rings: _Rings) -> None:
        regs[self.out] = self.fn(regs[self.inputs[0]])


class _Concat(_Op):
    """Channel concatenation (the last axis) of values with the same new frames."""

    def __init__(self, xs: tuple[int, ...], out: int) -> None:
        self.inputs, self.out = xs, out

    def run(self, regs: Regs, rings: _Rings) -> None:
        regs[self.out] = torch.cat([regs[i] for i in self.inputs], dim=-1)


class _PointwiseConv(_Op):
    """A ``1 x 1`` conv (optionally strided in space): one matmul on the ``(n B H W, C)`` rows."""

    def __init__(self, weight: Tensor, bias: Tensor | None, stride: int, x: int, out: int) -> None:
        self.wt = weight.reshape(weight.shape[0], -1).t().contiguous()  # (C_in, C_out)
        self.bias, self.stride, self.inputs, self.out = bias, stride, (x,), out

    def run(self, regs: Regs, rings: _Rings) -> None:
        x = regs[self.inputs[0]]
        if self.stride > 1:
            x = x[:, :, :: self.stride, :: self.stride]
        shape = (*x.shape[:-1], self.wt.shape[1])
        rows = x.reshape(-1, x.shape[-1])  # (n B H W, C_in); a copy only when strided
        dest = self._dest(rings, shape)
        out = None if dest is None else dest.view(-1, self.wt.shape[1])
        if out is None:
            y = torch.mm(rows, self.wt) if self.bias is None else torch.addmm(self.bias, rows, self.wt)
        else:
            y = (
                torch.mm(rows, self.wt, out=out)
                if self.bias is None
                else torch.addmm(self.bias, rows, self.wt, out=out)
            )  # noqa: E501
        regs[self.out] = y.view(shape)


class _FrameOp(_Op):
    """A 2D op (spatial pool) on every frame: ``(n, B, H, W, C)`` is a channels-last ``(n B, C, H, W)``."""

    def __init__(self, fn: Callable[[Tensor], Tensor], x: int, out: int) -> None:
        self.fn, self.inputs, self.out = fn, (x,), out

    def frames(self, f: Tensor) -> Tensor:
        return self.fn(f)

    def run(self, regs: Regs, rings: _Rings) -> None:
        x = regs[self.inputs[0]]
        n, b, h, w, c = x.shape
        y = self.frames(x.view(n * b, h, w, c).permute(0, 3, 1, 2))  # (n B, C', H', W'), channels_last
        y = y.permute(0, 2, 3, 1)
        if not y.is_contiguous():
            y = y.contiguous()
        regs[self.out] = y.view(n, b, *y.shape[1:])


class _FrameConv(_FrameOp):
    """A ``k x k`` conv on every frame; on the CPU through oneDNN with its weight packed once and the ReLU fused."""

    def __init__(self, conv: nn.Conv3d, x: int, out: int) -> None:
        self.weight = conv.weight.detach()[:, :, 0].contiguous(memory_format=torch.channels_last)  # (C', C/g, kh, kw)
        self.bias = None if conv.bias is None else conv.bias.detach()
        self.stride, self.dilation, self.groups = list(conv.stride[1:]), list(conv.dilation[1:]), conv.groups
        self.padding = list(_pad_hw(conv.padding))
        self.inputs, self.out = (x,), out
        self.relu = False  # the ReLU that reads only this conv's output is applied here
        w = self.weight
        self.packable = w.device.type == "cpu" and w.dtype in (torch.float32, torch.bfloat16) and _has_mkldnn_conv()
        self.packed: Tensor | None = None

    def frames(self, f: Tensor) -> Tensor:
        if self.packable and self.packed is None:  # packed for the first input's shape (others still work)
            try:
                self.packed = torch._C._nn.mkldnn_reorder_conv2d_weight(  # type: ignore[call-arg]
                    self.weight.to_mkldnn(), self.padding, self.stride, self.dilation, self.groups, list(f.shape)
                )
                return self._packed_conv(f)
            except RuntimeError as err:  # e.g. a CPU without bf16 kernels: the plain conv computes the same
                logger.info("compiled video engine: oneDNN packed conv unavailable (%s); using F.conv2d", err)
                self.packable = False
        if self.packable:
            return self._packed_conv(f)
        y = F.conv2d(f, self.weight, self.bias, self.stride, self.padding, self.dilation, self.groups)
        return y.relu_() if self.relu else y

    def _packed_conv(self, f: Tensor) -> Tensor:
        attr = "relu" if self.relu else "none"
        return torch.ops.mkldnn._convolution_pointwise(  # type: ignore[no-any-return]
            f.contiguous(memory_format=torch.channels_last),
            self.packed,
            self.bias,
            self.padding,
            self.stride,
            self.dilation,
            self.groups,
            attr,
            [],
            "",
        )


def _has_mkldnn_conv() -> bool:
    """True when oneDNN's fused convolution (the op PyTorch's inductor uses on CPUs) is in this build."""
    return bool(torch.backends.mkldnn.is_available()) and hasattr(torch.ops.mkldnn, "_convolution_pointwise")


class _TemporalConv(_Op):
    """A ``t x 1 x 1`` conv (stride ``s``, dilation ``d``) on its ring's window: ``t`` accumulating matmuls."""

    def __init__(
        self, weight: Tensor, bias: Tensor | None, stride: int, dilation: int, r: int | None, x: int, out: int
    ) -> None:
        # (C_out, C_in, t, 1, 1) -> t matrices (C_in, C_out)
        self.taps = [weight[:, :, j, 0, 0].t().contiguous() for j in range(weight.shape[2])]
        self.bias, self.stride, self.dilation = bias, stride, dilation
        self.rf = dilation * (len(self.taps) - 1) + 1
        self.r, self.inputs, self.out = r, (x,), out
        self.input_in_ring = False  # the producer of the input writes it into the ring itself

    def run(self, regs: Regs, rings: _Rings) -> None:
        x = regs[self.inputs[0]]
        if self.r is None:  # no history (receptive field <= stride): the window is the new frames
            win = x
        else:
            if not self.input_in_ring:
                rings.slot(self.r, x.shape).copy_(x)
            win = rings.window(self.r)
        s, d = self.stride, self.dilation
        n_out = (win.shape[0] - self.rf) // s + 1
        first = win.shape[0] - ((n_out - 1) * s + self.rf)  # right alignment: the surplus is dropped on the left
        c_in, c_out = self.taps[0].shape
        y: Tensor | None = None
        for j, wt in enumerate(self.taps):
            start = first + j * d
            rows = win[start : start + (n_out - 1) * s + 1 : s].reshape(-1, c_in)  # contiguous unless s > 1
            if y is None:
                y = torch.addmm(self.bias, rows, wt) if self.bias is not None else torch.mm(rows, wt)
            else:
                y.addmm_(rows, wt)
        assert y is not None
        regs[self.out] = y.view(n_out, *win.shape[1:-1], c_out)


def _ring_window(x: Tensor, r: int | None, rings: _Rings) -> Tensor:
    """The window a window op reads: ``x`` appended to ring ``r`` (``x`` itself when the op keeps no ring)."""
    if r is None:
        return x
    rings.slot(r, x.shape).copy_(x)
    return rings.window(r)


class _WindowMax(_Op):
    """Maximum over the last ``kernel`` frames every ``stride`` frames, on the ring's window (a temporal max pool)."""

    def __init__(self, kernel: int, stride: int, r: int | None, x: int, out: int) -> None:
        self.kernel, self.stride, self.r, self.inputs, self.out = kernel, stride, r, (x,), out

    def run(self, regs: Regs, rings: _Rings) -> None:
        win = _ring_window(regs[self.inputs[0]], self.r, rings)
        surplus = (win.shape[0] - self.kernel) % self.stride  # right alignment: the surplus is dropped on the left
        # (L, B, H, W, C) -> (n_out, B, H, W, C, kernel) windows -> max over the window
        regs[self.out] = win[surplus:].unfold(0, self.kernel, self.stride).amax(-1)


class _EagerWindowOp(_Op):
    """A temporal window op with no lowering (a full ``t x k x k`` conv, a temporal pool), run on its ring's window."""

    def __init__(self, module: TemporalWindowOp, r: int | None, x: int, out: int) -> None:
        self.module, self.r, self.inputs, self.out = module, r, (x,), out

    def run(self, regs: Regs, rings: _Rings) -> None:
        win = _ring_window(regs[self.inputs[0]], self.r, rings)
        regs[self.out] = _from_protocol(self.module(_to_protocol(win)))  # forward right-aligns the window


class _Opaque(_Op):
    """A module with no lowering, stepped through its own ``stream_step`` on its own protocol-layout state."""

    def __init__(self, module: nn.Module, index: int, x: int, out: int) -> None:
        self.module, self.index, self.inputs, self.out = module, index, (x,), out

    def run(self, regs: Regs, rings: _Rings) -> None:
        raise RuntimeError("opaque ops run through VideoProgram.run")  # they need the opaque state


class _Head(_Op):
    """``TemporalAvgPoolHead``: spatial mean of each new frame into the pool's ring, mean over the last positions."""

    def __init__(self, r: int, positions: int, x: int, out: int) -> None:
        self.r, self.positions, self.inputs, self.out = r, positions, (x,), out

    def run(self, regs: Regs, rings: _Rings) -> None:
        x = regs[self.inputs[0]]  # (n, B, H, W, C), or (n, B, C) per-step features (e.g. from an opaque module)
        slot = rings.slot(self.r, (x.shape[0], x.shape[1], x.shape[-1]))
        if x.dim() == 3:
            slot.copy_(x)
        else:
            torch.mean(x, dim=(2, 3), out=slot)  # (n, B, C)
        win = rings.window(self.r)
        regs[self.out] = win[win.shape[0] - self.positions :].mean(dim=0)  # (B, C)


class _Linear(_Op):
    def __init__(self, linear: nn.Linear, x: int, out: int) -> None:
        self.wt, self.bias = linear.weight.t().contiguous(), linear.bias
        self.inputs, self.out = (x,), out

    def run(self, regs: Regs, rings: _Rings) -> None:
        x = regs[self.inputs[0]]
        regs[self.out] = torch.addmm(self.bias, x, self.wt) if self.bias is not None else x @ self.wt


class _HeadModule(_Op):
    """A module of the classifier with no lowering, called on ``(B, C)`` as it is."""

    def __init__(self, module: nn.Module, x: int, out: int) -> None:
        self.module, self.inputs, self.out = module, (x,), out

    def run(self, regs: Regs, rings: _Rings) -> None:
        regs[self.out] = self.module(regs[self.inputs[0]])


def _triple(v: int | Sequence[int]) -> tuple[int, int, int]:
    return (v, v, v) if isinstance(v, int) else (int(v[0]), int(v[1]), int(v[2]))


def _pad_t(padding: str | int | Sequence[int]) -> int:
    if isinstance(padding, str):
        return 0 if padding == "valid" else -1
    return _triple(padding)[0]


def _pad_hw(padding: str | int | Sequence[int]) -> tuple[int, int]:
    if isinstance(padding, str):
        return (0, 0) if padding == "valid" else (-1, -1)
    p = _triple(padding)
    return p[1], p[2]
