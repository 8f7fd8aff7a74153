"""ONNX export of the streaming step of a streamable classifier, and its ONNX Runtime execution.

The exported graph is one hop of the runtime (``vidrec.streaming.runtime``)::

    inputs:  chunk (B, C, hop), state_0, ..., state_{S-1}        (each state tensor batched over B streams)
    outputs: logits (B, K),     new_state_0, ..., new_state_{S-1}

with a dynamic batch axis on every input and output, so one graph serves any number of streams. ``state_i`` are the
tensors of the model's structured state (``vidrec.layers.stream_state``) in ``flatten_state`` order, the order the
runtime's engines hold them in. Input normalisation is not part of the graph (callers normalise, as
``StreamingClassifier`` does). BatchNorm is folded before export.
"""

from __future__ import annotations

import copy
import io
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from vidrec.layers.stream_state import StateLayout, flatten_state, state_layout
from vidrec.streaming.optimize import fold_batchnorm

__all__ = ["StreamStepModule", "export_streaming_onnx", "OnnxStep", "onnx_session"]


class StreamStepModule(nn.Module):
    """``forward(chunk, *state) -> (logits, *new_state)``: a configured streamable model's step as a flat module.

    Args:
        model: The configured model.
        layout: The structure of its state (``state_layout(model.stream_state(...))``): the flat tensors are rebuilt
            into it for ``model.stream_step`` and the new state is flattened again.
    """

    def __init__(self, model: nn.Module, layout: StateLayout) -> None:
        super().__init__()
        self.model = model
        self.layout = layout
        self.num_state = layout.num_tensors

    def forward(self, chunk: Tensor, *state: Tensor) -> tuple[Tensor, ...]:
        logits, new_state = self.model.stream_step(chunk, self.layout.unflatten(state))  # type: ignore[operator]
        return (logits, *flatten_state(new_state))


def _prepared(
    model: nn.Module, window: int, hop: int, in_channels: int, batch: int
) -> tuple[nn.Module, StateLayout, list[Tensor]]:
    """A folded, configured copy of ``model``, its state layout and its flat zero state for ``batch`` streams."""
    m = fold_batchnorm(model)
    m.configure_stream(window, hop)  # type: ignore[operator]
    with torch.no_grad():
        state = m.stream_state(torch.zeros(batch, in_channels, hop))  # type: ignore[operator]
    return m, state_layout(state), [s.clone() for s in flatten_state(state)]


def _export(
    model: nn.Module, window: int, hop: int, in_channels: int, target: str | io.BytesIO, *, dynamo: bool = False
) -> int:
    """Export the step graph to ``target``; returns the number of state tensors."""
    recurrent = [name for name, mod in model.named_modules() if isinstance(mod, nn.RNNBase)]
    if recurrent:  # the exporter fixes an RNN's initial state to the traced batch, so other batches fail at run time
        raise ValueError(
            f"cannot export the streaming step of {type(model).__name__}: its recurrent layer {recurrent[0]!r} "
            "would be exported for one fixed number of streams; stream it with the compiled or eager engine instead"
        )
    batch = 2  # a batch of 2 keeps the exporter from specialising the batch axis to 1
    m, layout, state = _prepared(model, window, hop, in_channels, batch)
    step = StreamStepModule(m, layout).eval()
    names_in = ["chunk"] + [f"state_{i}" for i in range(len(state))]
    names_out = ["logits"] + [f"new_state_{i}" for i in range(len(state))]
    dynamic_axes = {n: {0: "batch"} for n in names_in + names_out}
    chunk = torch.zeros(batch, in_channels, hop)
    with torch.no_grad(), warnings.catch_warnings():
        # shape checks in the layers are constants for a fixed hop: the tracer's warnings about them are expected
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        torch.onnx.export(
            step,
            (chunk, *state),
            target,  # type: ignore[arg-type]  # BytesIO works (TorchScript exporter)
            input_names=names_in,
            output_names=names_out,
            dynamic_axes=dynamic_axes,
            opset_version=17,
            dynamo=dynamo,
        )
    return len(state)


def export_streaming_onnx(
    model: nn.Module,
    window: int,
    hop: int,
    path: str | Path,
    *,
    in_channels: int | None = None,
    dynamo: bool = False,
) -> Path:
    """Export one streaming step of ``model`` at ``(window, hop)`` to an ONNX file.

    Args:
        model: A streamable classifier (not modified; a BatchNorm-folded copy is exported).
        window: Window length in samples.
        hop: Samples per step.
        path: Output ``.onnx`` file.
        in_channels: Input channels; inferred from the first convolution when None.
        dynamo: Use the dynamo exporter instead of the TorchScript-based one (the default here: it handles the
            flat state list directly and gives a smaller graph).

    Returns:
        The written path. Inputs ``chunk``, ``state_i``; outputs ``logits``, ``new_state_i``; batch axis dynamic.
    """
    from vidrec.streaming.runtime import infer_in_channels

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    channels = in_channels if in_channels is not None else infer_in_channels(model)
    _export(copy.deepcopy(model), window, hop, channels, str(path), dynamo=dynamo)
    return path


def onnx_session(source: str | Path | bytes, threads: int | None = None) -> object:
    """An ONNX Runtime CPU session for an exported step (file path or serialized model)."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if threads is not None:
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
    data = source if isinstance(source, bytes) else str(source)
    return ort.InferenceSession(data, sess_options=opts, providers=["CPUExecutionProvider"])


class OnnxStep:
    """The streaming step of ``model`` executed by ONNX Runtime, callable like ``model.stream_step``."""

    def __init__(self, model: nn.Module, window: int, hop: int, in_channels: int, num_state: int) -> None:
        buf = io.BytesIO()
        n = _export(copy.deepcopy(model), window, hop, in_channels, buf)
        if n != num_state:
            raise RuntimeError(f"exported step has {n} state tensors, the runtime holds {num_state}")
        self.session = onnx_session(buf.getvalue(), threads=torch.get_num_threads())
        self._names = [f"state_{i}" for i in range(n)]

    def __call__(self, chunk: Tensor, state: list[Tensor]) -> tuple[Tensor, list[Tensor]]:
        feeds = {"chunk": np.ascontiguousarray(chunk.numpy())}
        feeds.update({k: np.ascontiguousarray(s.numpy()) for k, s in zip(self._names, state)})
        outs = self.session.run(None, feeds)  # type: ignore[attr-defined]
        return torch.from_numpy(outs[0]), [torch.from_numpy(o) for o in outs[1:]]
