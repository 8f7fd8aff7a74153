"""Tests of the compiled flat streaming step (vidrec.streaming.fastpath) against the eager layer protocol."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor, nn

from tests.streaming.conftest import randomize_batchnorm
from vidrec.layers.residual1d import InvertedResidual1d
from vidrec.layers.stream_state import flatten_state
from vidrec.layers.temporal import TemporalAvgPoolHead, TemporalSequential, temporal_conv1d
from vidrec.models._base import StreamableClassifier
from vidrec.streaming.fastpath import compile_stream_step
from vidrec.streaming.optimize import fold_batchnorm
from vidrec.streaming.runtime import StepBackend, StreamingClassifier

ATOL = 1e-4


class _MobileNet1d(StreamableClassifier):
    """Stem conv -> inverted residual (1-step convs, depthwise conv) -> strided conv -> pool -> linear."""

    def __init__(self) -> None:
        super().__init__()
        self.features = TemporalSequential(
            temporal_conv1d(3, 8, 3),
            InvertedResidual1d(8, 8, 3, expansion=2),
            temporal_conv1d(8, 8, 3, stride=2, dilation=2, bias=True),
            nn.ReLU6(),
        )
        self.pool = TemporalAvgPoolHead()
        self.classifier = nn.Sequential(nn.Dropout(0.1), nn.Linear(8, 4))
        self._init_geometry()


def _stream_both(model: nn.Module, window: int, hop: int, batch: int, steps: int, trace: bool) -> float:
    """Largest difference between eager and compiled steps (logits and protocol-layout state) over a stream."""
    model.configure_stream(window, hop)  # type: ignore[operator]
    gen = torch.Generator().manual_seed(1)
    chunk = torch.zeros(batch, 3, hop)
    compiled = compile_stream_step(model, chunk[:1], trace=trace)
    worst = 0.0
    with torch.inference_mode():
        eager_state = model.stream_state(chunk)  # type: ignore[operator]
        fast_state = compiled.to_compiled(flatten_state(eager_state))
        logits_seen: list[tuple[Tensor, Tensor]] = []
        for _ in range(steps):
            x = torch.randn(batch, 3, hop, generator=gen)
            ye, eager_state = model.stream_step(x, eager_state)  # type: ignore[operator]
            yf, fast_state = compiled(x, fast_state)
            logits_seen.append((ye, yf))
            flat = flatten_state(eager_state)
            diffs = [(a - b).abs().max() for a, b in zip(flat, compiled.to_protocol(fast_state)) if a.numel()]
            worst = max([worst, float((ye - yf).abs().max()), *(float(d) for d in diffs)])
        # logits are never overwritten by later steps (they do not alias the step's buffers)
        worst = max(worst, *(float((ye - yf).abs().max()) for ye, yf in logits_seen))
    return worst


@pytest.mark.parametrize("hop", [1, 4])
@pytest.mark.parametrize("trace", [True, False], ids=["traced", "python"])
def test_compiled_step_matches_eager_on_resnet1d(tiny_model: nn.Module, hop: int, trace: bool) -> None:
    folded = fold_batchnorm(tiny_model)
    worst = _stream_both(folded, 40, hop, batch=3, steps=12, trace=trace)
    assert worst <= ATOL, worst


def test_every_resnet_module_is_lowered_and_traced(tiny_model: nn.Module) -> None:
    folded = fold_batchnorm(tiny_model)
    folded.configure_stream(40, 1)  # type: ignore[operator]
    compiled = compile_stream_step(folded, torch.zeros(1, 3, 1))
    assert compiled.num_opaque == 0
    assert compiled.traced
    assert "torch.addmm" in compiled.source and "stream_step_of" not in compiled.source


def test_unfolded_batchnorm_runs_opaque_and_stays_exact(tiny_model: nn.Module) -> None:
    worst = _stream_both(tiny_model, 40, 1, batch=2, steps=8, trace=True)
    assert worst <= ATOL, worst


@pytest.mark.parametrize("hop", [2, 4])
def test_inverted_residual_and_strided_dilated_convs_are_exact(hop: int) -> None:
    torch.manual_seed(0)
    model = randomize_batchnorm(_MobileNet1d())
    window = model.receptive_field + 2 * hop
    folded = fold_batchnorm(model)
    assert _stream_both(folded, window, hop, batch=3, steps=6, trace=True) <= ATOL
    # through the runtime, against the offline model on the final window
    x = torch.randn(2, 3, 2 * window)
    rt = StreamingClassifier(model, window, hop, capacity=2)
    assert rt.compiled
    logits, ready = rt.run(x)
    assert bool(ready[:, -1].all())
    end = (x.shape[2] // hop) * hop
    with torch.no_grad():
        assert float((logits[:, -1] - model(x[:, :, end - window : end])).abs().max()) <= ATOL


def test_runtime_state_keeps_protocol_shapes(tiny_model: nn.Module) -> None:
    fast = StreamingClassifier(tiny_model, 40, 1, capacity=3)
    eager = StreamingClassifier(tiny_model, 40, 1, capacity=3, backend=StepBackend.TORCH_EAGER)
    assert fast.compiled and not eager.compiled
    x = torch.randn(3, 3, 45)
    fast.run(x)
    eager.run(x)
    assert [t.shape for t in fast.flat_state()] == [t.shape for t in eager.flat_state()]
    for a, b in zip(fast.flat_state(), eager.flat_state()):
        if a.numel():
            assert float((a - b).abs().max()) <= ATOL


def test_non_classifiers_are_refused(tiny_model: nn.Module) -> None:
    with pytest.raises(TypeError, match="StreamableClassifier"):
        compile_stream_step(nn.Linear(3, 3), torch.zeros(1, 3, 1))
    with pytest.raises(TypeError, match="time series"):
        compile_stream_step(tiny_model, torch.zeros(1, 3, 1, 4, 4))
