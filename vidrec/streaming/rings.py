"""Ring-buffer streaming step: every slot steps without moving its history.

The compiled step of ``vidrec.streaming.fastpath`` joins each layer's buffer of past inputs and the new rows with one
``torch.cat`` per layer and step, so every step copies the whole history of every layer: at a hop of one sample that
copy is about 40% of the step (``tools/bench_streaming.py``). ``RingStep`` keeps each of those buffers in a ring of
``keep + period * n`` rows (``n`` new rows per step at that layer). At phase ``t`` the history is rows
``[t n, t n + keep)``; the step writes the ``n`` new rows right after it and reads its window as one contiguous slab, so
only the new rows are written. Every ``period`` steps the last ``keep`` rows are copied back to the front. The step is
generated once per phase (straight-line code with constant slices, run as TorchScript traces), so the phase costs
nothing at run time.

Rings serve steps of *all* slots at once. Steps of a subset of slots (streams that are not in lockstep) run the
concatenating ``CompiledStep`` on the history rows of those slots (``history()``: views of the rings at the current
phase, in the compiled step's ``(keep, B, C)`` layout) and write the new history back in place; the phase is shared by
all slots and moves only with full steps. Results are identical either way: the same matmuls on the same rows.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor, nn

from vidrec.layers.stream_state import flatten_state
from vidrec.streaming.fastpath import CompiledStep, generate_step, trace_step

__all__ = ["RingStep", "default_period"]

State = list[Tensor]
StepFn = Callable[[Tensor, State, State], tuple[Tensor, State]]


def default_period(hop: int) -> int:
    """Phases per wrap-around: about 16 rows of new samples between wraps, between 2 and 8 phases."""
    return max(2, min(8, math.ceil(16 / hop)))


class RingStep:
    """Full-batch streaming step over ring buffers, for a model whose every module the fast path lowers.

    Args:
        model: The configured, BatchNorm-folded eval model (as for ``compile_stream_step``).
        compiled: Its concatenating compiled step (defines the state layout that ``history`` returns).
        chunk: An example chunk ``(B, C, hop)``.
        period: Steps between wrap-arounds (``default_period(hop)`` when None).
        trace: Run each phase's function as a TorchScript trace.

    Raises:
        TypeError: the compiled step calls modules it did not lower (their state cannot live in rings).
    """

    def __init__(
        self,
        model: nn.Module,
        compiled: CompiledStep,
        chunk: Tensor,
        period: int | None = None,
        *,
        trace: bool = True,
    ) -> None:
        if compiled.num_opaque:
            raise TypeError(f"ring buffers need every module lowered; {compiled.num_opaque} run as they are")
        self.period = int(period) if period is not None else default_period(chunk.shape[2])
        if self.period < 1:
            raise ValueError(f"ring period must be >= 1, got {self.period}")
        self.compiled = compiled
        self._dtype = chunk.dtype
        self._device = chunk.device  # the step's device: buffers go there even for a model without state
        self._chunk_shape = tuple(chunk.shape[1:])  # (C, hop)
        fns: list[StepFn] = []
        rings: dict[int, tuple[int, int]] = {}
        self._buffer_shapes: list[tuple[int, ...]] = []
        for phase in range(self.period):
            fn, _, program = generate_step(model, chunk, ring_phase=phase, ring_period=self.period)
            fns.append(fn)
            rings, self._buffer_shapes = program.rings, program.buffers
        # per state tensor: (history rows, new rows per step), (0, 0) where it is not a ring
        self.geometry = [rings.get(i, (0, 0)) for i in range(len(compiled.time_first))]
        self._fns = fns
        self.phase = 0
        self.rings: State = []
        self._bufs: State = []
        self.traced = False
        if trace:
            self._trace_all(model, chunk)

    @property
    def capacity(self) -> int:
        """Slots held by the rings (0 before ``load``)."""
        return int(self.rings[0].shape[self.compiled.batch_axes[0]]) if self.rings else 0

    def load(self, state: State) -> None:
        """Take over ``state`` (compiled layout, ``(keep, B, C)`` per ring): rings are allocated, phase reset to 0.

        Traced phases are first run twice each on the new rings (TorchScript profiles a graph on its first call and
        optimises it on the second), so no step after ``load`` pays for that.
        """
        rings = []
        for t, (keep, n) in zip(state, self.geometry, strict=True):
            if n and t.shape[0] != keep:
                raise ValueError(f"state tensor of {t.shape[0]} rows where the ring keeps {keep}")
            # (keep + period n, B, C) rings; other state tensors as they are
            ring = torch.zeros((keep + self.period * n, *t.shape[1:]), dtype=t.dtype, device=t.device) if n else t
            rings.append(ring)
        self.rings = rings
        batch = self.capacity
        shapes = [tuple(batch if v == -1 else v for v in shape) for shape in self._buffer_shapes]
        device = self._device
        self._bufs = [torch.empty(shape, dtype=self._dtype, device=device) for shape in shapes]
        if self.traced:
            x = torch.zeros((batch, *self._chunk_shape), dtype=self._dtype, device=device)
            for fn in self._fns:
                for _ in range(2):
                    fn(x, self.rings, self._bufs)
        for ring, t, (keep, n) in zip(self.rings, state, self.geometry):
            if n:
                ring[:keep].copy_(t)
        self.phase = 0

    def history(self) -> State:
        """Views of the rings at the current phase in the compiled step's layout (writes go to the rings)."""
        t = self.phase
        return [ring[t * n : t * n + keep] if n else ring for ring, (keep, n) in zip(self.rings, self.geometry)]

    def __call__(self, x: Tensor) -> Tensor:
        """One step of every slot: ``x`` is ``(capacity, C, hop)``; returns ``(capacity, K)`` logits (the features'
        new steps when the compiled step leaves the head to the engine, ``CompiledStep.head_eager``)."""
        phase = self.phase
        logits, _ = self._fns[phase](x, self.rings, self._bufs)
        self.phase = (phase + 1) % self.period
        return logits

    def _trace_all(self, model: nn.Module, chunk: Tensor) -> None:
        """Replace every phase's function by its TorchScript trace, traced on batch-1 rings (any batch runs)."""
        target = getattr(model, "features") if self.compiled.head_eager else model  # noqa: B009
        with torch.inference_mode():
            state = self.compiled.to_compiled(flatten_state(target.stream_state(chunk)))  # type: ignore[operator]
        self.load(state)  # batch-1 rings to trace on (not warmed: self.traced is still False)
        self._fns = [trace_step(fn, chunk, self.rings, self._bufs) for fn in self._fns]
        self.rings, self._bufs, self.traced = [], [], True
