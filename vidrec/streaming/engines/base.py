"""The engine protocol shared by every executor of the streaming step, and the bookkeeping of tensor state.

An engine executes the streaming step of one converted, configured model (``vidrec.streaming.runtime`` prepares it:
BatchNorm folded, eval mode, ``configure_stream`` called) over ``capacity`` slots. Every engine implements the same
small protocol, so the runtime keeps only what all share (normalisation, warm-up and lead-in, sample counters, ready
flags) and calls:

* ``grow(capacity)``: allocate slots (new ones start reset; existing ones keep their state);
* ``step(x, slots)``: one hop of the normalised ``(n, C, hop, ...)`` chunk for all slots (``slots`` None) or for
  the given distinct slots; returns ``(n, K)`` logits;
* ``reset(slots)``: zero the state of those slots (all when None);
* ``state()``: the state tensors in the layer protocol's layout, ``(capacity, ...)`` each, flattened in
  ``flatten_state`` order (``StreamingClassifier.state()`` rebuilds the model's state tree from them).

Engines batch slots over the flat list of state tensors: the model's structured state
(``vidrec.layers.stream_state``) is flattened once when the engine is built (its ``StateLayout`` is kept) and rebuilt
only where a module's own ``stream_step`` is called.

An engine that cannot run a part of the model does not hide it: it records a ``LoweringDecision`` naming the module
and the reason (logged on the ``vidrec.streaming`` logger), and ``StreamingClassifier.describe()`` lists them.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from typing import Protocol

import numpy as np
import torch
from torch import Tensor, nn

from vidrec.layers.stream_state import StateLayout, flatten_state, state_layout
from vidrec.streaming.lowering import LoweringDecision, logger, module_names

__all__ = [
    "EngineUnavailable",
    "LoweringDecision",
    "StepBackend",
    "StepEngine",
    "TensorStateEngine",
    "logger",
    "module_names",
    "tf32_possible",
]

State = list[Tensor]
StepFn = Callable[[Tensor, State], tuple[Tensor, State]]


class StepBackend(enum.Enum):
    """The engine that executes the streaming step (``vidrec.streaming.engines``).

    ``StepBackend.parse`` accepts a member or its name as a string (``"compiled"``, ``"eager"``, ``"numpy"``,
    ``"onnxruntime"``; the older spellings ``"torch"`` and ``"torch-eager"`` still mean compiled and eager).
    """

    COMPILED = "compiled"  # generated flat steps (vidrec.streaming.fastpath) over ring buffers; unlowered parts eager
    EAGER = "eager"  # eager PyTorch under inference_mode, module by module
    NUMPY = "numpy"  # time series: one NumpyStreamStep per slot (vidrec.streaming.numpy_step), lowest batch-1 latency
    ONNXRUNTIME = "onnxruntime"  # the exported step graph (vidrec.streaming.export) in ONNX Runtime
    TORCH = "compiled"  # alias of COMPILED (the name before engines were named for what they are)
    TORCH_EAGER = "eager"  # alias of EAGER

    @classmethod
    def _missing_(cls, value: object) -> StepBackend | None:
        if isinstance(value, str):
            return _BACKEND_ALIASES.get(value.strip().lower().replace("_", "-"))
        return None

    @classmethod
    def parse(cls, value: StepBackend | str) -> StepBackend:
        """The member for an enum or a string; an unknown name raises ``ValueError`` listing the engines."""
        if isinstance(value, cls):
            return value
        if isinstance(value, str):
            try:
                return cls(value)
            except ValueError:
                pass
        names = ", ".join(repr(b.value) for b in cls)
        raise ValueError(f"unknown streaming engine {value!r}; expected a StepBackend or one of {names}")


_BACKEND_ALIASES = {
    "torch": StepBackend.COMPILED,
    "torch-eager": StepBackend.EAGER,
    "onnx": StepBackend.ONNXRUNTIME,
    "ort": StepBackend.ONNXRUNTIME,
}


def tf32_possible(device: torch.device, dtype: torch.dtype) -> bool:
    """True when float32 convolutions or matmuls on ``device`` may round to TF32 (cuDNN convolutions do by default).

    The eager step then differs from an exact float32 step by ~1e-3 relative (10-bit mantissas), so the engines'
    build-time checks against it allow for that instead of reporting a lowering bug; a misaligned frame or a wrong
    tap still shows as a difference of the order of the logits.
    """
    if device.type != "cuda" or dtype != torch.float32:
        return False
    return bool(torch.backends.cudnn.allow_tf32 or torch.backends.cuda.matmul.allow_tf32)


class EngineUnavailable(TypeError):
    """An engine cannot run this model at all (the runtime then picks another engine and records why)."""


class StepEngine(Protocol):
    """The protocol every streaming engine implements (see the module docstring)."""

    name: str
    capacity: int
    decisions: list[LoweringDecision]

    def grow(self, capacity: int) -> None: ...

    def step(self, x: Tensor, slots: np.ndarray | None) -> Tensor: ...

    def reset(self, slots: np.ndarray | None) -> None: ...

    def state(self) -> State: ...

    @property
    def num_state_tensors(self) -> int: ...


class TensorStateEngine:
    """Engines whose state is a flat list of tensors batched over slots (eager, compiled, ONNX Runtime).

    Subclasses set ``_step_fn`` (``(x, flat state) -> (logits, flat state)`` in the engine's layout) and may override
    the layout conversions (``_to_engine``, ``_to_protocol``, ``_batch_axes``) and the full-batch step
    (``_full_step``). ``layout`` is the structure of the model's state (``vidrec.layers.stream_state``).

    Args:
        model: The converted, configured model.
        chunk_shape: Shape of one slot's chunk, ``(C, hop, *frame_shape)``.
        dtype: Dtype of the step.
        device: Device of the state and the step.
    """

    name = "eager"

    def __init__(
        self, model: nn.Module, chunk_shape: tuple[int, ...], dtype: torch.dtype, device: torch.device
    ) -> None:
        self.model = model
        self.chunk_shape = tuple(chunk_shape)
        self.dtype = dtype
        self.device = device
        self.capacity = 0
        self.decisions: list[LoweringDecision] = []
        self._state: State = []
        self._step_fn: StepFn = self._eager_step
        with torch.inference_mode():
            one = torch.zeros((1, *self.chunk_shape), dtype=dtype, device=device)
            self.layout: StateLayout = state_layout(model.stream_state(one))  # type: ignore[operator]

    def _eager_step(self, x: Tensor, state: State) -> tuple[Tensor, State]:
        logits, new = self.model.stream_step(x, self.layout.unflatten(state))  # type: ignore[operator]
        return logits, flatten_state(new)

    def _fresh_state(self, capacity: int) -> State:
        """Zero flat state for ``capacity`` slots in the protocol layout (own tensors)."""
        zeros = torch.zeros((capacity, *self.chunk_shape), dtype=self.dtype, device=self.device)
        return [t.clone() for t in flatten_state(self.model.stream_state(zeros))]  # type: ignore[operator]

    # layout hooks (identity: the protocol's own layout)
    def _to_engine(self, state: State) -> State:
        return state

    def _to_protocol(self, state: State) -> State:
        return state

    def _batch_axes(self) -> list[int]:
        return [0] * len(self._history())

    def _history(self) -> State:
        """The state in the engine's layout (views where the engine keeps it elsewhere, e.g. ring buffers)."""
        return self._state

    def _load(self, state: State) -> None:
        self._state = state

    def _full_step(self, x: Tensor) -> Tensor:
        logits, self._state = self._step_fn(x, self._state)
        return logits

    @property
    def num_state_tensors(self) -> int:
        """Number of state tensors."""
        return len(self._history())

    def state(self) -> State:
        """The current flat state in the layer protocol's layout, each ``(capacity, ...)`` (views, do not modify)."""
        return self._to_protocol(self._history())

    def grow(self, capacity: int) -> None:
        """Raise the number of slots to ``capacity``; new slots start zeroed."""
        if capacity <= self.capacity:
            return
        with torch.inference_mode():
            fresh = self._to_engine(self._fresh_state(capacity))
            for new, old, axis in zip(fresh, self._history(), self._batch_axes()):
                new.narrow(axis, 0, self.capacity).copy_(old)
            self._load(fresh)
        self.capacity = capacity

    def reset(self, slots: np.ndarray | None) -> None:
        """Zero the state of ``slots`` (all when None)."""
        with torch.inference_mode():
            if slots is None:
                for t in self._history():
                    t.zero_()
                return
            idx = torch.as_tensor(np.asarray(slots, dtype=np.int64), device=self.device)
            for t, axis in zip(self._history(), self._batch_axes()):
                t.index_fill_(axis, idx, 0.0)

    def step(self, x: Tensor, slots: np.ndarray | None) -> Tensor:
        """One step of ``x`` for all slots (``slots`` None) or a subset (gathered, stepped, written back)."""
        with torch.inference_mode():
            if slots is None:
                return self._full_step(x)
            idx = torch.from_numpy(np.asarray(slots, dtype=np.int64)).to(self.device)
            axes, history = self._batch_axes(), self._history()
            sub = [t.index_select(a, idx) for t, a in zip(history, axes)]  # n slots per state tensor
            logits, new = self._step_fn(x, sub)
            for t, u, a in zip(history, new, axes):
                t.index_copy_(a, idx, u)
            return logits
