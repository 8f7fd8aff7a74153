"""The compiled engine for video models: BN-folded convolutions on time-first, channels-last frames over ring buffers.

The eager video step calls every layer's ``stream_step``: each temporal conv joins its buffer of past frames and the
new ones with ``torch.cat``, every conv converts its input to ``channels_last_3d`` (a copy of each activation), and
PyTorch runs the ``1 x 1`` convolutions of a batch-1, one-thread step with its slow native kernel
(``tools/bench_video_models.py --profile``). This engine lowers the converted model (BatchNorm already folded into
the convolutions by ``vidrec.streaming.optimize``) once into a flat list of ops over values held **time-first and
channels-last**, ``(n, B, H, W, C)`` contiguous:

* a frame batch is a free ``(n B, C, H, W)`` ``channels_last`` view, so ``k x k`` spatial convs and spatial pools run
  through oneDNN without a layout copy; ``1 x 1`` convs are one ``addmm`` on the ``(n B H W, C)`` matrix;
* a temporal ``t x 1 x 1`` conv reads its window straight from a preallocated ring buffer of its input frames
  (``keep + period n`` rows, the layout of ``vidrec.streaming.rings``): tap ``j`` of all output frames is the
  contiguous slab ``ring[j : j + n]``, so the conv is ``t`` accumulating matmuls (``addmm`` then ``addmm_``), no
  concatenation and no im2col. The op producing the conv's input (a ReLU, a residual add, a ``1 x 1`` conv) writes its
  output directly into the ring's new rows (``out=``), so the only per-step copy is of rows nothing could write in
  place; every ``period`` steps the last ``keep`` rows are copied back to the front;
* residual sums and their ReLUs run in place on fresh tensors; the average-pool head keeps its per-frame features in a
  ring too.

Lowering: the engine walks the model through the shared registry (``lowering_for(module, "video")`` of
``vidrec.layers.lowering``), on the primitives of ``VideoLoweringBuilder``. The generic registrations (sequences,
residuals, parallel sums, concatenation, the temporal max pool) decompose the containers; the video layers register
their video lowerings beside the layer (``SpatialConv3d``, ``TemporalConv3d``, ``NamedTemporalSequential`` in
``vidrec.layers.conv2plus1d``; the P3D and R(2+1)D blocks are residuals of those); torch's own modules and the
generic ``TemporalWindowOp`` / ``TemporalAvgPoolHead`` are registered here: convs with temporal kernel 1 anywhere,
``t x 1 x 1`` convs and temporal max pools in a ``TemporalWindowOp``, spatial max/average pools, elementwise
activations, unfolded BatchNorm (a per-channel affine), ``nn.Linear``/``nn.Sequential`` heads. Any other temporal
window op (a full ``t x k x k`` conv) runs eagerly on the ring's window; a module with no video lowering (another
temporal head included) runs through its own ``stream_step`` with its own state, or, after the head, is called as it
is on ``(B, C)``. Each of those is a ``LoweringDecision`` naming the module and the reason, logged at INFO. A new
video layer needs one ``register_lowering(Layer, target="video")`` beside it (or a generic one when it is made of
existing layers).

The ops and ring buffers live in ``vidrec.streaming.engines.video_ops``. The engine is checked against the eager
step at build (three random chunks; a lowering bug shows as an O(1) difference, see ``_check_against_eager``). Steps
of all slots use the rings at a shared phase; steps of a subset of slots gather those slots' history into small
temporary rings, run the same ops and write the new history back, so results are the same either way. ``state()``
returns each leaf's state in the layer protocol's layout
(``(B, C, keep, H, W)`` per temporal window op, ``(B, C, positions)`` for the pool), in module order.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

import vidrec.layers.conv2plus1d  # noqa: F401  # registers the video layers' lowerings beside them
from vidrec.layers.lowering import VideoLoweringBuilder, batchnorm_affine, lowering_for, register_lowering
from vidrec.layers.stream_state import flatten_state
from vidrec.layers.temporal import TemporalAvgPoolHead, TemporalWindowOp, stream_state_of, stream_step_of
from vidrec.streaming.engines.base import (
    EngineUnavailable,
    LoweringDecision,
    State,
    logger,
    module_names,
    tf32_possible,
)
from vidrec.streaming.engines.video_ops import (
    Regs,
    _Add,
    _Call,
    _Concat,
    _EagerWindowOp,
    _FrameConv,
    _FrameOp,
    _from_protocol,
    _FullRings,
    _Head,
    _HeadModule,
    _Linear,
    _Op,
    _Opaque,
    _pad_hw,
    _pad_t,
    _PointwiseConv,
    _ProbeRings,
    _ReLU,
    _Rings,
    _SubsetRings,
    _TemporalConv,
    _to_protocol,
    _triple,
    _WindowMax,
)

__all__ = ["CompiledVideoEngine", "VideoProgram", "lower_video"]

_TARGET = "video"  # the target of vidrec.layers.lowering this engine's builder implements


# ---------------------------------------------------------------------------------------------------------------
# Lowering


@dataclass
class VideoProgram:
    """The lowered step: ops over registers, the rings they use and the modules run as they are.

    Attributes:
        ops: In execution order; register 0 is the input ``(hop, B, H, W, C)``, ``output`` the logits.
        output: Register of the logits.
        keeps: History rows of each ring (ring index -> keep).
        leaves: The state leaves in module order: ``("ring", r)``, ``("empty", register)`` (a window op with no
            history, and the register of its input) or ``("opaque", i)``.
        opaque: The modules stepped through their own ``stream_step``.
        decisions: Every part not lowered, with the reason.
    """

    ops: list[_Op]
    output: int
    num_regs: int
    keeps: list[int]
    leaves: list[tuple[str, Any]]
    opaque: list[nn.Module]
    decisions: list[LoweringDecision]

    def run(self, x: Tensor, rings: _Rings, opaque_state: list[Any]) -> Tensor:
        """One step of ``x`` ``(hop, B, H, W, C)``; returns ``(B, K)`` logits (``opaque_state`` is updated)."""
        regs: Regs = [x] * self.num_regs
        for op in self.ops:
            if isinstance(op, _Opaque):
                xin = _to_protocol(regs[op.inputs[0]])
                y, opaque_state[op.index] = stream_step_of(op.module, xin, opaque_state[op.index])
                regs[op.out] = _from_protocol(y)
            else:
                op.run(regs, rings)
        return regs[self.output]


class _VideoBuilder:
    """Implements ``vidrec.layers.lowering.VideoLoweringBuilder`` on registers of ``(n, B, H, W, C)`` values.

    Every module is lowered through the registry (``lowering_for(module, "video")``); one without a lowering runs
    through its own ``stream_step`` (or, after the temporal head, is called as it is on ``(B, C)``), a decision.
    """

    target = _TARGET

    def __init__(self, model: nn.Module) -> None:
        self.names = module_names(model)
        self.ops: list[_Op] = []
        self.keeps: list[int] = []
        self.leaves: list[tuple[str, Any]] = []
        self.opaque: list[nn.Module] = []
        self.decisions: list[LoweringDecision] = []
        self.count = 1  # register 0: the input
        self.in_head = False  # after the temporal head: values are (B, C) rows

    # -- LoweringBuilder ------------------------------------------------------------------------------------------
    def lower(self, module: nn.Module, x: int) -> int:
        lowering = lowering_for(module, _TARGET)
        if lowering is not None:
            return int(lowering(self, module, x))
        return self.eager(module, x, f"no video lowering of {type(module).__name__}")

    def shared(self, x: int) -> int:
        return x  # values are immutable once written (in-place ops only on values with one reader, see finalize)

    def add(self, a: int, b: int) -> int:
        return self._emit(_Add(a, b, self._reg()))

    def concat(self, values: Sequence[int]) -> int:
        return self._emit(_Concat(tuple(values), self._reg()))

    def window_max(self, module: nn.Module, x: int, kernel: int, stride: int) -> int:
        if not isinstance(module, TemporalWindowOp) or self.in_head:
            return self.eager(module, x, "window_max outside a TemporalWindowOp")
        if (module.receptive_field, module.stride) != (kernel, stride):
            return self.window_eager(module, x, "its declared geometry differs from its pool's")
        return self._emit(_WindowMax(kernel, stride, self._ring_of(module, x), x, self._reg()))

    # -- VideoLoweringBuilder -------------------------------------------------------------------------------------
    def frame_conv(self, conv: nn.Conv3d, x: int) -> int:
        if self.in_head:
            return self.eager(conv, x, "a convolution after the temporal head")
        if conv.kernel_size[0] != 1 or conv.stride[0] != 1 or _pad_t(conv.padding) != 0:
            return self.eager(conv, x, "a conv with a temporal extent outside a TemporalWindowOp")
        w, b = conv.weight.detach(), None if conv.bias is None else conv.bias.detach()
        kh, kw = conv.kernel_size[1:]
        sh, sw = conv.stride[1:]
        pointwise = (kh, kw) == (1, 1) and sh == sw and _pad_hw(conv.padding) == (0, 0)
        if pointwise and conv.groups == 1 and conv.dilation[1:] == (1, 1):
            return self._emit(_PointwiseConv(w, b, sh, x, self._reg()))
        if isinstance(conv.padding, str) or conv.padding_mode != "zeros":
            return self.eager(conv, x, f"padding={conv.padding!r}, padding_mode={conv.padding_mode!r}")
        return self._emit(_FrameConv(conv, x, self._reg()))

    def temporal_conv(self, window: nn.Module, conv: nn.Conv3d, x: int) -> int:
        if not isinstance(window, TemporalWindowOp) or self.in_head:
            return self.eager(window, x, "a temporal conv outside a TemporalWindowOp")
        if getattr(window, "_gather_taps", False):
            return self.window_eager(window, x, f"no video lowering of a temporal {type(conv).__name__}")
        t, kh, kw = conv.kernel_size
        if (window.receptive_field, window.stride) != (conv.dilation[0] * (t - 1) + 1, conv.stride[0]):
            return self.window_eager(window, x, "its declared geometry differs from its conv's")
        if t == 1 and conv.stride[0] == 1 and _pad_t(conv.padding) == 0:  # pointwise in time: no history
            self.leaves.append(("empty", x))
            return self.frame_conv(conv, x)
        spatial_1x1 = (kh, kw) == (1, 1) and conv.stride[1:] == (1, 1) and _pad_hw(conv.padding) == (0, 0)
        if not spatial_1x1 or conv.groups != 1 or _pad_t(conv.padding) != 0 or conv.padding_mode != "zeros":
            return self.window_eager(window, x, "only t x 1 x 1 temporal convs are lowered to matmuls")
        w, b = conv.weight.detach(), None if conv.bias is None else conv.bias.detach()
        r = self._ring_of(window, x)
        return self._emit(_TemporalConv(w, b, conv.stride[0], conv.dilation[0], r, x, self._reg()))

    def window_eager(self, window: nn.Module, x: int, reason: str) -> int:
        if not isinstance(window, TemporalWindowOp) or self.in_head:
            return self.eager(window, x, reason)
        self._decide(window, "eager", f"{reason} (on the ring buffer's window, no concatenation)")
        return self._emit(_EagerWindowOp(window, self._ring_of(window, x), x, self._reg()))

    def frame_map(self, fn: Callable[[Tensor], Tensor], x: int) -> int:
        return self._emit(_FrameOp(fn, x, self._reg()))

    def elementwise(self, fn: Callable[[Tensor], Tensor], x: int) -> int:
        return self._emit(_Call(fn, x, self._reg()))

    def select_channels(self, x: int, channels: Sequence[int]) -> int:
        index = torch.tensor([int(c) for c in channels])
        return self.elementwise(lambda t: t.index_select(-1, index.to(t.device)), x)  # channels-last values

    def relu(self, x: int) -> int:
        return self._emit(_ReLU(x, self._reg()))

    def temporal_mean(self, head: nn.Module, positions: int, x: int) -> int:
        if self.in_head:
            return self.eager(head, x, "a temporal head after the temporal head")
        return self._emit(_Head(self._new_ring(positions), positions, x, self._reg()))

    def linear(self, layer: nn.Linear, x: int) -> int:
        return self._emit(_Linear(layer, x, self._reg()))

    def eager(self, module: nn.Module, x: int, reason: str) -> int:
        if self.in_head:
            self._decide(module, "eager", f"{reason}: called as it is on (B, C)")
            return self._emit(_HeadModule(module, x, self._reg()))
        self._decide(module, "eager", f"{reason}: stepped through its own stream_step")
        self.leaves.append(("opaque", len(self.opaque)))
        self.opaque.append(module)
        return self._emit(_Opaque(module, len(self.opaque) - 1, x, self._reg()))

    # -- bookkeeping ----------------------------------------------------------------------------------------------
    def _reg(self) -> int:
        self.count += 1
        return self.count - 1

    def _emit(self, op: _Op) -> int:
        self.ops.append(op)
        return op.out

    def _decide(self, module: nn.Module, engine: str, reason: str) -> None:
        decision = LoweringDecision(self.names.get(id(module), "?"), type(module).__name__, engine, reason)
        logger.info("compiled video engine: %s", decision)
        self.decisions.append(decision)

    def _new_ring(self, keep: int) -> int:
        self.keeps.append(keep)
        self.leaves.append(("ring", len(self.keeps) - 1))
        return len(self.keeps) - 1

    def _ring_of(self, window: TemporalWindowOp, x: int) -> int | None:
        """The ring of ``window``'s input frames (its state leaf), or None when it keeps no history."""
        keep = max(window.receptive_field - window.stride, 0)
        if keep:
            return self._new_ring(keep)
        self.leaves.append(("empty", x))
        return None

    def finalize(self, output: int) -> VideoProgram:
        readers: dict[int, int] = {}
        producer: dict[int, _Op] = {}
        for op in self.ops:
            for i in op.inputs:
                readers[i] = readers.get(i, 0) + 1
            producer[op.out] = op
        readers[output] = readers.get(output, 0) + 1
        for op in self.ops:  # conv + ReLU: one oneDNN call
            src = producer.get(op.inputs[0]) if op.inputs else None
            if isinstance(op, _ReLU) and isinstance(src, _FrameConv) and readers.get(op.inputs[0], 0) == 1:
                src.relu, op.applied = True, True
        for op in self.ops:
            src = producer.get(op.inputs[0]) if op.inputs else None
            fresh = isinstance(src, (_Add, _PointwiseConv, _FrameOp, _TemporalConv))
            if isinstance(op, _ReLU) and not op.applied and fresh and src is not None:
                # a fresh tensor read by this ReLU only, and not a ring's rows: ReLU in place
                op.inplace = readers.get(op.inputs[0], 0) == 1 and src.ring is None
            if isinstance(op, _TemporalConv) and op.r is not None and isinstance(src, (_ReLU, _Add, _PointwiseConv)):
                if src.ring is None and op.inputs[0] != 0:  # the producer writes straight into the ring's new rows
                    src.ring, op.input_in_ring = op.r, True
                    if isinstance(src, _ReLU):
                        src.inplace = False
        # a ReLU that writes into a ring must not have made its producer's tensor the ring (in place): settled above
        return VideoProgram(self.ops, output, self.count, self.keeps, self.leaves, self.opaque, self.decisions)


# The video lowerings of torch's own modules and of the generic TemporalWindowOp / TemporalAvgPoolHead (the video
# layers of vidrec register theirs beside the layer: vidrec.layers.conv2plus1d).
_ELEMENTWISE = (nn.ReLU6, nn.LeakyReLU, nn.GELU, nn.SiLU, nn.Hardswish, nn.Sigmoid, nn.Tanh)
_SKIP = (nn.Identity, nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d)
_BN = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)


def _register(types: Sequence[type[nn.Module]], fn: Callable[[Any, Any, int], int]) -> None:
    for t in types:
        register_lowering(t, target=_TARGET)(fn)


_register(_SKIP, lambda b, m, x: x)
_register([nn.ReLU], lambda b, m, x: b.relu(x))
_register(_ELEMENTWISE, lambda b, m, x: b.elementwise(m, x))  # elementwise: the layout does not matter
_register(_BN, lambda b, m, x: b.elementwise(_channel_affine(m), x))  # unfolded BatchNorm: a per-channel affine
_register([nn.Conv3d], lambda b, m, x: b.frame_conv(m, x))
_register([nn.Linear], lambda b, m, x: b.linear(m, x))


@register_lowering(nn.Sequential, target=_TARGET)
def _lower_sequential(b: VideoLoweringBuilder[int], m: nn.Sequential, x: int) -> int:
    for child in m:
        x = b.lower(child, x)
    return x


@register_lowering(nn.MaxPool3d, target=_TARGET)
@register_lowering(nn.AvgPool3d, target=_TARGET)
def _lower_frame_pool(b: VideoLoweringBuilder[int], pool: nn.MaxPool3d | nn.AvgPool3d, x: int) -> int:
    k, s, p = (_triple(v) for v in (pool.kernel_size, pool.stride, pool.padding))
    if (k[0], s[0], p[0]) != (1, 1, 0):
        return b.eager(pool, x, "a pool with a temporal extent outside a TemporalWindowOp")
    if isinstance(pool, nn.MaxPool3d):
        d = _triple(pool.dilation)
        return b.frame_map(lambda f: F.max_pool2d(f, k[1:], s[1:], p[1:], d[1:], ceil_mode=pool.ceil_mode), x)
    avg = pool
    return b.frame_map(
        lambda f: F.avg_pool2d(f, k[1:], s[1:], p[1:], avg.ceil_mode, avg.count_include_pad, avg.divisor_override),
        x,
    )


@register_lowering(TemporalWindowOp, target=_TARGET)
def _lower_window_op(b: VideoLoweringBuilder[int], m: TemporalWindowOp, x: int) -> int:
    op = m.op
    if isinstance(op, nn.Conv3d):
        return b.temporal_conv(m, op, x)
    if isinstance(op, nn.MaxPool3d):
        k, s, p, d = (_triple(v) for v in (op.kernel_size, op.stride, op.padding, op.dilation))
        if (k[1:], s[1:], p, d, op.ceil_mode) == ((1, 1), (1, 1), (0, 0, 0), (1, 1, 1), False):
            return b.window_max(m, x, k[0], s[0])  # a max over time only: over the ring's rows
    return b.window_eager(m, x, f"no video lowering of a temporal {type(op).__name__}")


@register_lowering(TemporalAvgPoolHead, target=_TARGET)
def _lower_average_pool(b: VideoLoweringBuilder[int], m: TemporalAvgPoolHead, x: int) -> int:
    if m.positions is None:
        raise EngineUnavailable("TemporalAvgPoolHead.positions is not set (configure_stream was not called)")
    return b.temporal_mean(m, m.positions, x)


def _channel_affine(bn: nn.Module) -> Callable[[Tensor], Tensor]:
    assert isinstance(bn, _BN)
    try:
        scale, shift = batchnorm_affine(bn)
    except ValueError as error:
        raise EngineUnavailable(str(error)) from None
    return lambda x: torch.addcmul(shift, x, scale)  # channels last: broadcasts over (..., C)


def lower_video(model: nn.Module) -> VideoProgram:
    """Lower a converted, configured video ``StreamableClassifier`` (see the module docstring).

    Raises:
        EngineUnavailable: not a ``features -> pool -> classifier`` model with the stock step.
    """
    from vidrec.models._base import StreamableClassifier

    if not isinstance(model, StreamableClassifier):
        raise EngineUnavailable(f"{type(model).__name__} is not a StreamableClassifier")
    if type(model).stream_step is not StreamableClassifier.stream_step:
        raise EngineUnavailable(f"{type(model).__name__} overrides stream_step")
    builder = _VideoBuilder(model)
    y = builder.lower(model.features, 0)
    y = builder.lower(model.pool, y)  # (n, B, H, W, C) -> (B, C)
    builder.in_head = True
    y = builder.lower(model.classifier, y)
    return builder.finalize(y)


# ---------------------------------------------------------------------------------------------------------------
# The engine


class CompiledVideoEngine:
    """The compiled engine for video models (``(C, hop, H, W)`` chunks); see the module docstring.

    Args:
        model: The converted, configured model (BatchNorm folded by the runtime, eval, ``configure_stream`` called).
        chunk_shape: ``(C, hop, H, W)`` of one slot's chunk.
        dtype: Step dtype.
        device: Step device (CPU or CUDA; every op is a plain tensor op).
        period: Steps between the wrap-around copies of the rings (more: fewer copies, larger rings).
        check: Check the step against the eager one at build.

    Raises:
        EngineUnavailable: the model is not one this engine lowers (the runtime then runs it eagerly).
        RuntimeError: the lowered step disagrees with the eager step (a lowering bug).
    """

    name = "compiled"
    uses_rings = True

    def __init__(
        self,
        model: nn.Module,
        chunk_shape: tuple[int, ...],
        dtype: torch.dtype,
        device: torch.device,
        *,
        period: int = 8,
        check: bool = True,
    ) -> None:
        if len(chunk_shape) != 4:
            raise EngineUnavailable(f"the compiled video engine steps (C, hop, H, W) chunks; got {chunk_shape}")
        self.model, self.chunk_shape, self.dtype, self.device = model, tuple(chunk_shape), dtype, device
        with torch.inference_mode():
            self.program = lower_video(model)
            self.decisions: list[LoweringDecision] = list(self.program.decisions)
            example = torch.zeros((1, *chunk_shape), dtype=dtype, device=device)
            self._opaque_example = self._probe(example)
        hop = chunk_shape[1]
        keeps = [s.keep for s in self.specs]
        news = [s.new for s in self.specs]
        # every ring wraps after `period` steps; its last `keep` rows must not overlap the front ones
        self.period = max([int(period), 1] + [math.ceil(k / n) for k, n in zip(keeps, news)])
        self.hop = hop
        self.capacity = 0
        self.rings = _FullRings(self.specs, 0, self.period, dtype, device)
        self.opaque_state: list[Any] = []  # per opaque module, its protocol state (allocated by grow)
        if check:
            self._check_against_eager()

    def _probe(self, example: Tensor) -> list[Tensor]:
        """Run the program once on a batch-1 zero chunk: every ring's geometry, every value's shape, opaque inputs."""
        probe = _ProbeRings(self.program.keeps)
        probe.dtype, probe.device = self.dtype, self.device
        inputs: list[Tensor] = []
        regs: Regs = [_from_protocol(example)] * self.program.num_regs
        for op in self.program.ops:
            if isinstance(op, _Opaque):  # its state comes from its own stream_state on its input
                xin = _to_protocol(regs[op.inputs[0]])
                inputs.append(xin)
                y, _ = stream_step_of(op.module, xin, stream_state_of(op.module, xin))
                regs[op.out] = _from_protocol(y)
            else:
                op.run(regs, probe)
        missing = [r for r in range(len(self.program.keeps)) if r not in probe.specs]
        if missing:
            raise EngineUnavailable(f"rings {missing} were never written while probing the step")
        self.specs = [probe.specs[r] for r in range(len(self.program.keeps))]
        # (n, 1, H, W, C) of each value -> (C, H, W): the protocol shape of a window op's empty history
        self._frames = {i: (int(t.shape[-1]), *(int(v) for v in t.shape[2:-1])) for i, t in enumerate(regs)}
        return inputs

    def _zero_opaque(self, i: int, capacity: int) -> Any:
        example = self._opaque_example[i]
        zeros = example.new_zeros((capacity, *example.shape[1:]))
        return stream_state_of(self.program.opaque[i], zeros)

    @property
    def num_state_tensors(self) -> int:
        """Number of state leaves (``state()``)."""
        return len(self.state())

    def state(self) -> State:
        """Each leaf's state in the layer protocol's layout, ``(capacity, ...)``, in module order (views)."""
        out: State = []
        for kind, ref in self.program.leaves:
            if kind == "ring":
                out.append(_to_protocol(self.rings.history(ref)))
            elif kind == "empty":
                c, *frame = self._frames[ref]
                out.append(torch.zeros(self.capacity, c, 0, *frame, device=self.device, dtype=self.dtype))
            else:
                out.extend(flatten_state(self.opaque_state[ref]))
        return out

    def grow(self, capacity: int) -> None:
        """Raise the number of slots to ``capacity``; new slots start zeroed, existing ones keep their history."""
        if capacity <= self.capacity:
            return
        with torch.inference_mode():
            new = _FullRings(self.specs, capacity, self.period, self.dtype, self.device)
            new.phase = self.rings.phase
            for old_t, new_t in zip(self.rings.tensors, new.tensors):
                new_t.narrow(1, 0, self.capacity).copy_(old_t)
            self.rings = new
            for i in range(len(self.program.opaque)):
                fresh = self._zero_opaque(i, capacity)
                if i < len(self.opaque_state):
                    for f, o in zip(_leaves(fresh), _leaves(self.opaque_state[i])):
                        f.narrow(0, 0, self.capacity).copy_(o)
                    self.opaque_state[i] = fresh
                else:
                    self.opaque_state.append(fresh)
        self.capacity = capacity

    def reset(self, slots: np.ndarray | None) -> None:
        """Zero the history of ``slots`` (all when None)."""
        with torch.inference_mode():
            if slots is None:
                for t in self.rings.tensors:
                    t.zero_()
                for st in self.opaque_state:
                    for t in _leaves(st):
                        t.zero_()
                return
            idx = torch.as_tensor(np.asarray(slots, dtype=np.int64), device=self.device)
            for t in self.rings.tensors:
                t.index_fill_(1, idx, 0.0)
            for st in self.opaque_state:
                for t in _leaves(st):
                    t.index_fill_(0, idx, 0.0)

    def step(self, x: Tensor, slots: np.ndarray | None) -> Tensor:
        """One hop of ``x`` ``(n, C, hop, H, W)`` for all slots (``slots`` None) or the given distinct slots."""
        with torch.inference_mode():
            frames = x.permute(2, 0, 3, 4, 1).contiguous()  # (n, C, hop, H, W) -> (hop, n, H, W, C)
            if slots is None:
                logits = self.program.run(frames, self.rings, self.opaque_state)
                self.rings.advance()
                return logits
            idx = torch.as_tensor(np.asarray(slots, dtype=np.int64), device=self.device)
            sub = _SubsetRings(self.rings, idx)
            sub_opaque = [_index_select(st, idx) for st in self.opaque_state]
            logits = self.program.run(frames, sub, sub_opaque)
            sub.write_back(self.rings, idx)
            for st, new in zip(self.opaque_state, sub_opaque):
                for t, u in zip(_leaves(st), _leaves(new)):
                    t.index_copy_(0, idx, u)
            return logits

    def _check_against_eager(self, steps: int = 3) -> None:
        """Step the eager model and this engine on the same random chunks from zero state; compare the logits.

        The tolerance is relative to the logits' scale: float32 rounding through a deep untrained network differs
        between any two summation orders by ~1e-6 of the largest activation, while a misaligned frame or a wrong
        tap gives differences of the order of the logits themselves.
        """
        gen = torch.Generator().manual_seed(0)
        self.grow(1)
        with torch.inference_mode():
            example = torch.zeros((1, *self.chunk_shape), dtype=self.dtype, device=self.device)
            state = self.model.stream_state(example)  # type: ignore[operator]
            worst, scale = 0.0, 0.0
            for _ in range(steps):
                x = torch.randn((1, *self.chunk_shape), generator=gen).to(self.dtype).to(self.device)
                ref, state = self.model.stream_step(x, state)  # type: ignore[operator]
                got = self.step(x, None)
                worst = max(worst, float((ref.float() - got.float()).abs().max()))
                scale = max(scale, float(ref.float().abs().max()))
        self.reset(None)
        exact = self.dtype in (torch.float32, torch.float64) and not tf32_possible(self.device, self.dtype)
        tol = (1e-3 if exact else 5e-2) * max(1.0, scale)  # TF32 or 16-bit: the eager reference rounds more
        if not worst <= tol:
            raise RuntimeError(
                f"compiled video step of {type(self.model).__name__} disagrees with the eager step: "
                f"max |difference| {worst:.3g} > {tol:.3g} (logits up to {scale:.3g}); this is a lowering bug"
            )


def _leaves(state: Any) -> list[Tensor]:
    if isinstance(state, Tensor):
        return [state]
    if isinstance(state, (list, tuple)):
        return [t for s in state for t in _leaves(s)]
    if isinstance(state, dict):
        return [t for s in state.values() for t in _leaves(s)]
    return []


def _index_select(state: Any, idx: Tensor) -> Any:
    if isinstance(state, Tensor):
        return state.index_select(0, idx)
    if isinstance(state, (list, tuple)):
        return type(state)(_index_select(s, idx) for s in state)
    if isinstance(state, dict):
        return {k: _index_select(v, idx) for k, v in state.items()}
    return state
