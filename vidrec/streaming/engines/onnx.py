"""The ONNX Runtime engine: the exported step graph (``vidrec.streaming.export``) run by ONNX Runtime on CPU.

State stays in the layer protocol's layout (the graph's inputs and outputs are the flattened protocol state).
"""

from __future__ import annotations

import torch
from torch import nn

from vidrec.streaming.engines.base import EngineUnavailable, TensorStateEngine

__all__ = ["OnnxRuntimeEngine"]


class OnnxRuntimeEngine(TensorStateEngine):
    """Exports the converted model's step once and runs it in an ONNX Runtime session (float32, CPU, time series).

    Args:
        model: The converted, configured model.
        window: The window it is configured for (the export configures its own copy).
        chunk_shape: ``(C, hop)``.
        dtype: Must be float32.
        device: Must be the CPU.

    Raises:
        EngineUnavailable: ``onnxruntime`` is not installed.
        ValueError: video frames, another dtype or device.
    """

    name = "onnxruntime"

    def __init__(
        self, model: nn.Module, window: int, chunk_shape: tuple[int, ...], dtype: torch.dtype, device: torch.device
    ) -> None:
        if len(chunk_shape) != 2:
            raise ValueError(
                "the onnxruntime engine streams time series only; use the compiled or eager engine for video"
            )
        if dtype != torch.float32:
            raise ValueError(f"the onnxruntime engine runs float32 only; got dtype {dtype}")
        if device.type != "cpu":
            raise ValueError(f"the onnxruntime engine runs on the CPU only; got device {device}")
        super().__init__(model, chunk_shape, dtype, device)
        try:
            import onnxruntime  # noqa: F401
        except ImportError as err:
            raise EngineUnavailable(f"onnxruntime is not installed ({err})") from err
        from vidrec.streaming.export import OnnxStep

        c, hop = chunk_shape
        self._step_fn = OnnxStep(model, window, hop, c, self.layout.num_tensors)
