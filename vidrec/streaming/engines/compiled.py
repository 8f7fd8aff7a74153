"""The compiled engine: the generated flat step of ``vidrec.streaming.fastpath`` over ring buffers.

The converted model is lowered once into straight-line tensor code (``compile_stream_step``: one matmul per
convolution tap, preallocated outputs, a TorchScript trace), checked against the eager step when built. Steps of all
slots keep every layer's history in ring buffers (``vidrec.streaming.rings``) when every module was lowered and the
step has layer histories at all (a stateless step, or TS-LSTM's own segment state, has none to ring); steps of a
subset of slots run the concatenating step on those slots' history. Modules the fast path has no lowering for
are called through their own ``stream_step`` inside the compiled step: each is a ``LoweringDecision`` naming the
module and the reason. A temporal head other than the average pool (an attention pool, a recurrent head over
segment summaries) does not make the model eager: the compiled step (with its ring buffers) covers the features, and
the head and classifier run eagerly on the features' new steps, a decision naming them. A model the fast path cannot
take at all raises ``EngineUnavailable`` (the runtime then runs it eagerly and says so).
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from vidrec.layers.stream_state import StateLayout, flatten_state
from vidrec.streaming.engines.base import (
    EngineUnavailable,
    LoweringDecision,
    State,
    TensorStateEngine,
    logger,
    tf32_possible,
)
from vidrec.streaming.fastpath import CompiledStep, compile_stream_step
from vidrec.streaming.rings import RingStep

__all__ = ["CompiledEngine", "CompiledParallelEngine"]


class CompiledEngine(TensorStateEngine):
    """The compiled flat step (time series ``(B, C, T)`` models).

    Args:
        model: The converted, configured model (a ``StreamableClassifier`` with the stock ``stream_step``).
        chunk_shape: ``(C, hop)``.
        dtype: Step dtype (16-bit steps are checked against eager with a loose tolerance: both round differently).
        device: Step device.
        ring_buffers: Keep layer histories in ring buffers for full steps (when every module is lowered).

    Raises:
        EngineUnavailable: the model or its input layout is not one the fast path lowers.
    """

    name = "compiled"

    def __init__(
        self,
        model: nn.Module,
        chunk_shape: tuple[int, ...],
        dtype: torch.dtype,
        device: torch.device,
        *,
        ring_buffers: bool = True,
    ) -> None:
        super().__init__(model, chunk_shape, dtype, device)
        if len(chunk_shape) != 2:
            raise EngineUnavailable(
                f"the compiled engine lowers time series chunks (C, hop); got frames of shape {chunk_shape[2:]}"
            )
        chunk = torch.zeros((1, *chunk_shape), dtype=dtype, device=device)
        atol = 1e-4 if dtype in (torch.float32, torch.float64) else 1.0
        if tf32_possible(device, dtype):  # the eager reference rounds its convolutions to TF32
            atol = 5e-2
        try:
            self.compiled: CompiledStep = compile_stream_step(model, chunk, atol=atol)
        except TypeError as err:  # not a model the fast path takes: the caller decides what runs instead
            raise EngineUnavailable(str(err)) from err
        self.decisions = list(self.compiled.decisions)
        for d in self.decisions:
            logger.info("compiled engine: %s", d)
        self._n_compiled = len(self.compiled.time_first)  # state tensors of the compiled step; the head's follow
        self._head_layout: StateLayout | None = None
        self._head_state: State = []
        if self.compiled.head_eager:
            assert self.layout.children is not None  # StreamableClassifier: [features state, head state]
            self._head_layout = self.layout.children[1]
            self._step_fn = self._split_step
        else:
            self._step_fn = self.compiled
        self.rings: RingStep | None = None
        if ring_buffers and self.compiled.num_opaque == 0 and self.compiled.num_histories:
            self.rings = RingStep(model, self.compiled, chunk)  # no histories (a stateless step): nothing to ring

    @property
    def uses_rings(self) -> bool:
        """True when full steps keep layer histories in ring buffers."""
        return self.rings is not None

    def _head_step(self, features: Tensor, head_state: State) -> tuple[Tensor, State]:
        """The eager head and classifier on the compiled features' new steps ``(B, C', n)``."""
        assert self._head_layout is not None
        head, classifier = getattr(self.model, "pool"), getattr(self.model, "classifier")  # noqa: B009
        pooled, new = head.stream_step(features, self._head_layout.unflatten(head_state))
        return classifier(pooled), flatten_state(new)

    def _split_step(self, x: Tensor, state: State) -> tuple[Tensor, State]:
        n = self._n_compiled
        features, compiled_state = self.compiled(x, state[:n])
        logits, head_state = self._head_step(features, state[n:])
        return logits, compiled_state + head_state

    def _to_engine(self, state: State) -> State:
        n = self._n_compiled
        return self.compiled.to_compiled(state[:n]) + list(state[n:])

    def _to_protocol(self, state: State) -> State:
        n = self._n_compiled
        return self.compiled.to_protocol(state[:n]) + list(state[n:])

    def _batch_axes(self) -> list[int]:
        return self.compiled.batch_axes + [0] * (self.layout.num_tensors - self._n_compiled)

    def _history(self) -> State:
        return self.rings.history() + self._head_state if self.rings is not None else self._state

    def _load(self, state: State) -> None:
        if self.rings is not None:
            self.rings.load(state[: self._n_compiled])
            self._head_state = list(state[self._n_compiled :])
        else:
            self._state = state

    def _full_step(self, x: Tensor) -> Tensor:
        if self.rings is None:
            return super()._full_step(x)
        out = self.rings(x)
        if self._head_layout is None:
            return out
        logits, self._head_state = self._head_step(out, self._head_state)
        return logits


class CompiledParallelEngine:
    """The compiled engine of a ``ParallelClassifiers``: one engine per member (compiled where it lowers), then fuse.

    Each member gets the compiled engine of its input: the generated time-series step for ``(C, hop)`` chunks
    (``CompiledEngine``), the compiled video engine for ``(C, hop, H, W)`` frames
    (``vidrec.streaming.engines.video.CompiledVideoEngine``); a nested ``ParallelClassifiers`` gets one of these.
    A member an engine cannot take runs in an eager engine of its own, recorded as a ``LoweringDecision`` with the
    member's name. State, slots and resets are each member's; ``state()`` concatenates them in member order, the
    layout of ``ParallelClassifiers.stream_state``. The fusion rule (``model.fuse``) runs on the members' logits.

    Args:
        model: The converted, configured ``ParallelClassifiers``.
        chunk_shape: ``(C, hop)`` or ``(C, hop, H, W)``.
        dtype: Step dtype.
        device: Step device.
        ring_buffers: Ring buffers for the full steps of each compiled time-series member.
    """

    name = "compiled"

    def __init__(
        self,
        model: nn.Module,
        chunk_shape: tuple[int, ...],
        dtype: torch.dtype,
        device: torch.device,
        *,
        ring_buffers: bool = True,
    ) -> None:
        from vidrec.models._base import ParallelClassifiers
        from vidrec.streaming.engines.eager import EagerEngine

        if not isinstance(model, ParallelClassifiers):
            raise EngineUnavailable(f"{type(model).__name__} is not a ParallelClassifiers")
        self.model = model
        self.capacity = 0
        self.decisions: list[LoweringDecision] = []
        self.members: list[Any] = []  # one engine per member (StepEngine protocol)
        for name, member in zip(model.member_names, model.members()):
            try:
                engine: Any
                if isinstance(member, ParallelClassifiers):  # nested (the skeleton ensemble's two-stream subnet)
                    engine = CompiledParallelEngine(member, chunk_shape, dtype, device, ring_buffers=ring_buffers)
                elif len(chunk_shape) > 2:  # video frames
                    from vidrec.streaming.engines.video import CompiledVideoEngine

                    engine = CompiledVideoEngine(member, chunk_shape, dtype, device)
                else:
                    engine = CompiledEngine(member, chunk_shape, dtype, device, ring_buffers=ring_buffers)
                self.decisions += [replace(d, part=f"{name}.{d.part}" if d.part else name) for d in engine.decisions]
            except EngineUnavailable as err:
                decision = LoweringDecision(name, type(member).__name__, "eager", f"not lowered: {err}")
                logger.info("compiled engine: %s", decision)
                self.decisions.append(decision)
                engine = EagerEngine(member, chunk_shape, dtype, device)
            self.members.append(engine)

    @property
    def uses_rings(self) -> bool:
        """True when every member steps over ring buffers."""
        return all(getattr(e, "uses_rings", False) for e in self.members)

    @property
    def num_state_tensors(self) -> int:
        """State tensors of all members."""
        return sum(e.num_state_tensors for e in self.members)

    def state(self) -> State:
        """The members' protocol state, concatenated in member order."""
        return [t for e in self.members for t in e.state()]

    def grow(self, capacity: int) -> None:
        """Grow every member's slots."""
        for e in self.members:
            e.grow(capacity)
        self.capacity = max(self.capacity, capacity)

    def reset(self, slots: np.ndarray | None) -> None:
        """Reset ``slots`` in every member."""
        for e in self.members:
            e.reset(slots)

    def step(self, x: Tensor, slots: np.ndarray | None) -> Tensor:
        """Step every member on ``x`` and fuse their logits by the model's rule."""
        outs = [e.step(x, slots) for e in self.members]
        with torch.inference_mode():
            return self.model.fuse(outs)  # type: ignore[operator,no-any-return]
