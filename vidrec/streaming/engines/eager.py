"""The eager engine: the layers' own ``stream_step`` under ``torch.inference_mode``, module by module.

It runs every streamable model (any layout, time series or video, CPU or CUDA) and is the reference the other
engines are checked against.
"""

from __future__ import annotations

import torch
from torch import nn

from vidrec.streaming.engines.base import LoweringDecision, TensorStateEngine

__all__ = ["EagerEngine"]


class EagerEngine(TensorStateEngine):
    """Steps the converted model through its layers' ``stream_step`` (see ``TensorStateEngine`` for the arguments).

    Args:
        model: The converted, configured model.
        chunk_shape: ``(C, hop, *frame_shape)``.
        dtype: Step dtype.
        device: Step device.
        decisions: Why this engine runs instead of the requested one (kept for ``describe()``).
    """

    name = "eager"

    def __init__(
        self,
        model: nn.Module,
        chunk_shape: tuple[int, ...],
        dtype: torch.dtype,
        device: torch.device,
        decisions: list[LoweringDecision] | None = None,
    ) -> None:
        super().__init__(model, chunk_shape, dtype, device)
        self.decisions = list(decisions or [])
