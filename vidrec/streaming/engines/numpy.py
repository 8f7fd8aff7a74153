"""The NumPy engine: one ``vidrec.streaming.numpy_step.NumpyStreamStep`` per slot (float32, CPU, time series).

Each slot is its own set of ring buffers stepped by generated NumPy calls: the lowest latency for one stream at a
small hop, a Python loop over slots for several. The lowered program is checked against the eager step when built,
as the compiled one is.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor, nn

from vidrec.streaming.engines.base import EngineUnavailable, LoweringDecision, State
from vidrec.streaming.numpy_step import NumpyStreamStep

__all__ = ["NumpyEngine"]


class NumpyEngine:
    """Slots of ``NumpyStreamStep`` streams behind the engine protocol (``vidrec.streaming.engines.base``).

    Args:
        model: The converted, configured model.
        chunk_shape: ``(C, hop)``.
        dtype: Must be float32.
        device: Must be the CPU.

    Raises:
        EngineUnavailable: the model holds a module or geometry ``numpy_step`` does not lower.
        ValueError: video frames, another dtype or device.
    """

    name = "numpy"

    def __init__(
        self, model: nn.Module, chunk_shape: tuple[int, ...], dtype: torch.dtype, device: torch.device
    ) -> None:
        if len(chunk_shape) != 2:
            raise ValueError(
                f"the numpy engine streams time series only (frame_shape=() expected, got {tuple(chunk_shape[2:])}); "
                "use the compiled or eager engine for video"
            )
        if dtype != torch.float32:
            raise ValueError(f"the numpy engine runs float32 only; got dtype {dtype}")
        if device.type != "cpu":
            raise ValueError(f"the numpy engine runs on the CPU only; got device {device}")
        try:
            self.prototype = NumpyStreamStep(model, chunk_shape[0], check=True)
        except TypeError as err:
            raise EngineUnavailable(str(err)) from err
        self.capacity = 0
        self.decisions: list[LoweringDecision] = []
        self._slots: list[NumpyStreamStep] = []

    @property
    def num_state_tensors(self) -> int:
        """The NumPy engine keeps no protocol tensors (its state is each slot's rings)."""
        return 0

    def state(self) -> State:
        """Not available: the state lives in each slot's NumPy rings."""
        raise RuntimeError("the numpy engine keeps its state in NumpyStreamStep ring buffers, not protocol tensors")

    def grow(self, capacity: int) -> None:
        """Add fresh slots up to ``capacity`` (they share the lowered program)."""
        if capacity > self.capacity:
            self._slots += [self.prototype.fresh() for _ in range(capacity - self.capacity)]
            self.capacity = capacity

    def reset(self, slots: np.ndarray | None) -> None:
        """Forget ``slots`` (all when None)."""
        for i in range(self.capacity) if slots is None else slots.tolist():
            self._slots[i].reset()

    def step(self, x: Tensor, slots: np.ndarray | None) -> Tensor:
        """One hop of ``(n, C, hop)`` for ``slots`` (all when None): a loop over the slots' NumPy steps."""
        rows = x.numpy()
        if len(rows) == 1:  # one stream: the latency-bound case, no index list
            return torch.from_numpy(self._slots[0 if slots is None else int(slots[0])].step(rows[0])[None])  # (1, K)
        idx = range(self.capacity) if slots is None else slots.tolist()
        return torch.from_numpy(np.stack([self._slots[s].step(row) for s, row in zip(idx, rows)]))  # (n, K)
