"""Executors of the streaming step behind one protocol (``base.StepEngine``): compiled, eager, NumPy, ONNX Runtime.

``build_engine`` makes the requested engine for a converted, configured model. An engine that cannot take the model
at all raises ``EngineUnavailable``; the next one in the order numpy -> compiled -> eager runs instead, and the
decision (the module, the engine that runs it, the reason) is logged on the ``vidrec.streaming`` logger and kept in
the engine's ``decisions`` for ``StreamingClassifier.describe()``. Errors that are the caller's (video frames on a
time series engine, an unsupported dtype or device) are raised, not worked around.
"""

from __future__ import annotations

import warnings

import torch
from torch import nn

from vidrec.streaming.engines.base import (
    EngineUnavailable,
    LoweringDecision,
    StepBackend,
    StepEngine,
    TensorStateEngine,
    logger,
)
from vidrec.streaming.engines.compiled import CompiledEngine, CompiledParallelEngine
from vidrec.streaming.engines.eager import EagerEngine
from vidrec.streaming.engines.numpy import NumpyEngine
from vidrec.streaming.engines.onnx import OnnxRuntimeEngine

__all__ = [
    "CompiledEngine",
    "CompiledParallelEngine",
    "EagerEngine",
    "EngineUnavailable",
    "LoweringDecision",
    "NumpyEngine",
    "OnnxRuntimeEngine",
    "StepBackend",
    "StepEngine",
    "TensorStateEngine",
    "build_engine",
]


def _fallback(model: nn.Module, requested: StepBackend, err: EngineUnavailable, instead: str) -> LoweringDecision:
    decision = LoweringDecision("", type(model).__name__, instead, f"the {requested.value} engine cannot run it: {err}")
    logger.info("streaming engine: %s", decision)
    return decision


def build_engine(
    backend: StepBackend | str,
    model: nn.Module,
    window: int,
    chunk_shape: tuple[int, ...],
    dtype: torch.dtype,
    device: torch.device,
    *,
    ring_buffers: bool = True,
) -> StepEngine:
    """The engine ``backend`` for ``model`` (converted and configured for ``window``), or the logged fallback.

    Args:
        backend: The requested engine (a ``StepBackend`` or its name).
        model: The converted, configured model.
        window: The window it is configured for.
        chunk_shape: ``(C, hop, *frame_shape)`` of one slot's chunk.
        dtype: Step dtype.
        device: Step device.
        ring_buffers: Compiled engine: ring buffers for full steps.

    Returns:
        An engine with no slots yet (call ``grow``).
    """
    kind = StepBackend.parse(backend)
    decisions: list[LoweringDecision] = []
    if kind is StepBackend.NUMPY:
        try:
            return NumpyEngine(model, chunk_shape, dtype, device)
        except EngineUnavailable as err:
            decisions.append(_fallback(model, kind, err, "compiled"))
            warnings.warn(f"numpy backend unavailable for this model ({err}); using the compiled engine", stacklevel=3)
            kind = StepBackend.COMPILED
    if kind is StepBackend.ONNXRUNTIME:
        return OnnxRuntimeEngine(model, window, chunk_shape, dtype, device)
    if kind is StepBackend.COMPILED:
        from vidrec.models._base import ParallelClassifiers

        try:
            engine: CompiledEngine | CompiledParallelEngine
            if isinstance(model, ParallelClassifiers):  # members compiled on their own (time series or video), fused
                engine = CompiledParallelEngine(model, chunk_shape, dtype, device, ring_buffers=ring_buffers)
            elif len(chunk_shape) > 2:  # video frames: the video engine (vidrec.streaming.engines.video)
                from vidrec.streaming.engines.video import CompiledVideoEngine

                engine = CompiledVideoEngine(model, chunk_shape, dtype, device)  # type: ignore[assignment]
            else:
                engine = CompiledEngine(model, chunk_shape, dtype, device, ring_buffers=ring_buffers)
            engine.decisions = decisions + engine.decisions
            return engine
        except EngineUnavailable as err:
            decisions.append(_fallback(model, kind, err, "eager"))
    return EagerEngine(model, chunk_shape, dtype, device, decisions)
