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

Module support (the lowering walk goes through the shared registry of ``vidrec.layers.lowering`` for containers):
``SpatialConv3d``/``TemporalConv3d``/``nn.Conv3d`` with temporal kernel 1 anywhere, temporal convs ``t x 1 x 1``
in a ``TemporalWindowOp``, spatial max/average pools, elementwise activations, unfolded BatchNorm (as a per-channel
affine), ``TemporalAvgPoolHead`` and ``nn.Linear`` heads. Any other temporal window op (a full ``t x k x k`` conv, a
temporal max pool) runs eagerly on the ring's window; any other module runs through its own ``stream_step`` with
its own state. Each of those is a ``LoweringDecision`` naming the module and the reason, logged at INFO.

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

from vidrec.layers.conv2plus1d import NamedTemporalSequential
from vidrec.layers.lowering import lowering_for
from vidrec.layers.temporal import TemporalAvgPoolHead, TemporalModule, TemporalWindowOp, stream_state_of
from vidrec.streaming.engines.base import EngineUnavailable, LoweringDecision, State, logger, module_names
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
)

__all__ = ["CompiledVideoEngine", "VideoProgram", "lower_video"]

_ELEMENTWISE = (nn.ReLU6, nn.LeakyReLU, nn.GELU, nn.SiLU, nn.Hardswish, nn.Sigmoid, nn.Tanh)
_SKIP = (nn.Identity, nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d)
_BN = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)
_TARGET = "video"  # generic registrations only (vidrec.layers.lowering), none specific to the 1D code generators


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
                y, opaque_state[op.index] = op.module.stream_step(xin, opaque_state[op.index])  # type: ignore[operator]
                regs[op.out] = _from_protocol(y)
            else:
                op.run(regs, rings)
        return regs[self.output]


class _VideoBuilder:
    """Implements ``vidrec.layers.lowering.LoweringBuilder`` on registers of ``(n, B, H, W, C)`` values."""

    target = _TARGET

    def __init__(self, model: nn.Module) -> None:
        self.names = module_names(model)
        self.ops: list[_Op] = []
        self.keeps: list[int] = []
        self.leaves: list[tuple[str, Any]] = []
        self.opaque: list[nn.Module] = []
        self.decisions: list[LoweringDecision] = []
        self.count = 1  # register 0: the input

    # -- LoweringBuilder ------------------------------------------------------------------------------------------
    def lower(self, module: nn.Module, x: int) -> int:
        if isinstance(module, NamedTemporalSequential):
            for child in module.children():
                x = self.lower(child, x)
            return x
        lowering = lowering_for(module, _TARGET)
        if lowering is not None:
            return int(lowering(self, module, x))
        return self._leaf(module, x)

    def shared(self, x: int) -> int:
        return x  # values are immutable once written (in-place ops only on values with one reader, see finalize)

    def add(self, a: int, b: int) -> int:
        return self._emit(_Add(a, b, self._reg()))

    def concat(self, values: Sequence[int]) -> int:
        return self._emit(_Concat(tuple(values), self._reg()))

    def window_max(self, module: nn.Module, x: int, kernel: int, stride: int) -> int:
        if not isinstance(module, TemporalWindowOp):
            return self._opaque(module, x, "window_max outside a TemporalWindowOp")
        return self._window_eager(module, x, "temporal max pool runs eagerly on its ring's window")

    # -- leaves ---------------------------------------------------------------------------------------------------
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

    def _leaf(self, module: nn.Module, x: int) -> int:
        if isinstance(module, _SKIP):
            return x
        if isinstance(module, nn.ReLU):
            return self._emit(_ReLU(x, self._reg()))
        if isinstance(module, _ELEMENTWISE):
            return self._emit(_Call(module, x, self._reg()))
        if isinstance(module, _BN):
            return self._emit(_Call(_channel_affine(module), x, self._reg()))
        if isinstance(module, nn.Conv3d) and not isinstance(module, TemporalModule):
            if module.kernel_size[0] != 1 or module.stride[0] != 1 or _pad_t(module.padding) != 0:
                return self._opaque(module, x, "a conv with a temporal extent outside a TemporalWindowOp")
            return self._frame_conv(module, x)
        if isinstance(module, (nn.MaxPool3d, nn.AvgPool3d)):
            return self._frame_pool(module, x)
        if isinstance(module, TemporalWindowOp):
            return self._window_op(module, x)
        return self._opaque(module, x, "no video lowering")

    def _frame_conv(self, conv: nn.Conv3d, x: int) -> int:
        w, b = conv.weight.detach(), None if conv.bias is None else conv.bias.detach()
        kh, kw = conv.kernel_size[1:]
        sh, sw = conv.stride[1:]
        pointwise = (kh, kw) == (1, 1) and sh == sw and _pad_hw(conv.padding) == (0, 0)
        if pointwise and conv.groups == 1 and conv.dilation[1:] == (1, 1):
            return self._emit(_PointwiseConv(w, b, sh, x, self._reg()))
        if isinstance(conv.padding, str) or conv.padding_mode != "zeros":
            return self._opaque(conv, x, f"padding={conv.padding!r}, padding_mode={conv.padding_mode!r}")
        return self._emit(_FrameConv(conv, x, self._reg()))

    def _frame_pool(self, pool: nn.MaxPool3d | nn.AvgPool3d, x: int) -> int:
        k, s, p = (_triple(v) for v in (pool.kernel_size, pool.stride, pool.padding))
        if (k[0], s[0], p[0]) != (1, 1, 0):
            return self._opaque(pool, x, "a pool with a temporal extent outside a TemporalWindowOp")
        if isinstance(pool, nn.MaxPool3d):
            d = _triple(pool.dilation)
            fn: Callable[[Tensor], Tensor] = (
                lambda f: F.max_pool2d(  # noqa: E731
                    f, k[1:], s[1:], p[1:], d[1:], ceil_mode=pool.ceil_mode
                )
            )
        else:
            fn = (
                lambda f: F.avg_pool2d(  # noqa: E731
                    f, k[1:], s[1:], p[1:], pool.ceil_mode, pool.count_include_pad, pool.divisor_override
                )
            )
        return self._emit(_FrameOp(fn, x, self._reg()))

    def _window_op(self, module: TemporalWindowOp, x: int) -> int:
        op = module.op
        if not isinstance(op, nn.Conv3d) or getattr(module, "_gather_taps", False):
            return self._window_eager(module, x, f"no video lowering of a temporal {type(op).__name__}")
        t, kh, kw = op.kernel_size
        if (module.receptive_field, module.stride) != (op.dilation[0] * (t - 1) + 1, op.stride[0]):
            return self._window_eager(module, x, "its declared geometry differs from its conv's")
        if t == 1 and op.stride[0] == 1 and _pad_t(op.padding) == 0:  # pointwise in time: no history
            self.leaves.append(("empty", x))
            return self._frame_conv(op, x)
        spatial_1x1 = (kh, kw) == (1, 1) and op.stride[1:] == (1, 1) and _pad_hw(op.padding) == (0, 0)
        if not spatial_1x1 or op.groups != 1 or _pad_t(op.padding) != 0 or op.padding_mode != "zeros":
            return self._window_eager(module, x, "only t x 1 x 1 temporal convs are lowered to matmuls")
        keep = max(module.receptive_field - module.stride, 0)
        w, b = op.weight.detach(), None if op.bias is None else op.bias.detach()
        r = self._new_ring(keep) if keep else None
        if r is None:
            self.leaves.append(("empty", x))
        return self._emit(_TemporalConv(w, b, op.stride[0], op.dilation[0], r, x, self._reg()))

    def _window_eager(self, module: TemporalWindowOp, x: int, reason: str) -> int:
        keep = max(module.receptive_field - module.stride, 0)
        self._decide(module, "eager", f"{reason} (on the ring buffer's window, no concatenation)")
        r = self._new_ring(keep) if keep else None
        if r is None:
            self.leaves.append(("empty", x))
        return self._emit(_EagerWindowOp(module, r, x, self._reg()))

    def _opaque(self, module: nn.Module, x: int, reason: str) -> int:
        self._decide(module, "eager", f"{reason}: stepped through its own stream_step")
        self.leaves.append(("opaque", len(self.opaque)))
        self.opaque.append(module)
        return self._emit(_Opaque(module, len(self.opaque) - 1, x, self._reg()))

    def head(self, pool: TemporalAvgPoolHead, classifier: nn.Module, x: int) -> int:
        if pool.positions is None:
            raise EngineUnavailable("TemporalAvgPoolHead.positions is not set (configure_stream was not called)")
        x = self._emit(_Head(self._new_ring(pool.positions), pool.positions, x, self._reg()))
        parts = list(classifier) if isinstance(classifier, nn.Sequential) else [classifier]
        for m in parts:
            if isinstance(m, _SKIP):
                continue
            if isinstance(m, nn.Linear):
                x = self._emit(_Linear(m, x, self._reg()))
            else:
                self._decide(m, "eager", "classifier module called as it is on (B, C)")
                x = self._emit(_HeadModule(m, x, self._reg()))
        return x

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


def _channel_affine(bn: nn.Module) -> Callable[[Tensor], Tensor]:
    assert isinstance(bn, _BN)
    if bn.running_var is None or bn.running_mean is None:
        raise EngineUnavailable(f"{type(bn).__name__} without running statistics cannot run in eval mode")
    scale = (bn.weight if bn.weight is not None else 1.0) / torch.sqrt(bn.running_var + bn.eps)
    shift = (bn.bias if bn.bias is not None else 0.0) - bn.running_mean * scale
    scale, shift = scale.detach(), shift.detach()
    return lambda x: torch.addcmul(shift, x, scale)  # channels last: broadcasts over (..., C)


def lower_video(model: nn.Module) -> VideoProgram:
    """Lower a converted, configured video ``StreamableClassifier`` (see the module docstring).

    Raises:
        EngineUnavailable: not a ``features -> TemporalAvgPoolHead -> classifier`` model with the stock step.
    """
    from vidrec.models._base import StreamableClassifier

    if not isinstance(model, StreamableClassifier):
        raise EngineUnavailable(f"{type(model).__name__} is not a StreamableClassifier")
    if type(model).stream_step is not StreamableClassifier.stream_step:
        raise EngineUnavailable(f"{type(model).__name__} overrides stream_step")
    if not isinstance(model.pool, TemporalAvgPoolHead):
        raise EngineUnavailable(f"its pool is a {type(model.pool).__name__}, not a TemporalAvgPoolHead")
    builder = _VideoBuilder(model)
    y = builder.lower(model.features, 0)
    out = builder.head(model.pool, model.classifier, y)
    return builder.finalize(out)


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
                y, _ = op.module.stream_step(xin, stream_state_of(op.module, xin))  # type: ignore[operator]
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
                st = self.opaque_state[ref]
                out.extend(st if isinstance(st, list) else [st])
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
        tol = (1e-3 if self.dtype in (torch.float32, torch.float64) else 5e-2) * max(1.0, scale)
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
