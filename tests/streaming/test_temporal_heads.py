"""Any temporal head streams: lowered features, and a head the compiled engine cannot lower run eagerly on their output.

The head here is TS-LSTM's ``SegmentLSTMHead`` (vidrec.models.ts_lstm): it caches per-segment summaries of the
features and re-runs a small LSTM over the last segments at every hop.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from tests.streaming.conftest import randomize_batchnorm
from vidrec.layers.residual1d import conv_bn_relu_1d
from vidrec.layers.temporal import TemporalSequential, temporal_conv1d
from vidrec.models._base import StreamableClassifier
from vidrec.models.ts_lstm import SegmentLSTMHead
from vidrec.streaming.runtime import StepBackend, to_streaming

SEGMENTS, FRAMES = 3, 4  # the head summarises 3 segments of 4 feature steps
RECEPTIVE_FIELD = 7  # features: conv k3, then conv k3 dilation 2
WINDOW = RECEPTIVE_FIELD - 1 + SEGMENTS * FRAMES  # 18 samples -> 12 feature steps


class _SegmentHeadNet(StreamableClassifier):
    """Lowerable 1D features -> SegmentLSTMHead (per-segment BN + max, LSTM over the segments) -> linear."""

    def __init__(self) -> None:
        super().__init__()
        self.features = TemporalSequential(conv_bn_relu_1d(3, 8, 3), temporal_conv1d(8, 8, 3, dilation=2), nn.ReLU())
        self.pool = SegmentLSTMHead(8, SEGMENTS, hidden_sizes=(6,), segment_frames=FRAMES)
        self.classifier = nn.Linear(6, 5)
        self._init_geometry()


@pytest.fixture
def model() -> nn.Module:
    torch.manual_seed(0)
    return randomize_batchnorm(_SegmentHeadNet())


def _offline(model: nn.Module, x: torch.Tensor, hop: int) -> torch.Tensor:
    """``(B, steps, K)`` offline logits of the window ending at every hop (nan before the first full window)."""
    steps = x.shape[2] // hop
    out = torch.full((x.shape[0], steps, 5), float("nan"))
    with torch.no_grad():
        for k in range(steps):
            end = (k + 1) * hop
            if end >= WINDOW:
                out[:, k] = model(x[:, :, end - WINDOW : end])
    return out


@pytest.mark.parametrize("backend", [StepBackend.COMPILED, StepBackend.EAGER])
@pytest.mark.parametrize("hop", [FRAMES, 2 * FRAMES])
def test_segment_lstm_head_streams_exactly(model: nn.Module, backend: StepBackend, hop: int) -> None:
    x = torch.randn(2, 3, 6 * WINDOW)
    rt = to_streaming(model, WINDOW, hop, capacity=2, backend=backend)
    streamed, ready = rt.run(x)
    offline = _offline(model, x, hop)
    valid = torch.from_numpy(ready) & ~offline[..., 0].isnan()
    assert valid.sum() >= 2 * 10
    torch.testing.assert_close(streamed[valid], offline[valid], rtol=1e-5, atol=1e-5)


def test_compiled_engine_lowers_the_features_and_names_the_eager_head(model: nn.Module) -> None:
    rt = to_streaming(model, WINDOW, FRAMES, backend="compiled")
    d = rt.describe()
    assert d.engine == "compiled" and d.ring_buffers  # not a whole-model fallback: the features keep their rings
    parts = {(x.part, x.module, x.engine) for x in d.decisions}
    assert parts == {("pool", "SegmentLSTMHead", "eager"), ("classifier", "Linear", "eager")}
    assert "temporal head" in str(d)
    # the state is [features state, head state]; the head's is TS-LSTM's cached (max, min) per segment
    features_state, head_state = rt.state()  # type: ignore[misc]
    assert [tuple(t.shape) for t in head_state] == [(1, 8, SEGMENTS)] * 2


def test_eager_head_with_slot_subsets_and_resets(model: nn.Module) -> None:
    """Slots stepped out of lockstep and reset mid-stream give every stream its own offline logits."""
    x = torch.randn(3, 3, 5 * WINDOW)
    rt = to_streaming(model, WINDOW, FRAMES, capacity=3, backend="compiled")
    ref = to_streaming(model, WINDOW, FRAMES, capacity=3, backend="eager")
    steps = x.shape[2] // FRAMES
    for k in range(steps):
        chunk = x[:, :, k * FRAMES : (k + 1) * FRAMES]
        slots = [0, 2] if k % 3 == 1 else None  # slot 1 skips some hops (fed to both runtimes alike)
        rows = chunk[[0, 2]] if slots else chunk
        if k == steps // 2:
            rt.reset([2])
            ref.reset([2])
        a, b = rt.step(rows, slots), ref.step(rows, slots)
        torch.testing.assert_close(a.logits, b.logits, rtol=1e-5, atol=1e-5)
    for got, want in zip(
        [t for t in rt.flat_state() if t.numel()], [t for t in ref.flat_state() if t.numel()], strict=True
    ):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


def test_numpy_request_falls_back_to_compiled_not_eager(model: nn.Module) -> None:
    with pytest.warns(UserWarning, match="numpy backend unavailable"):
        rt = to_streaming(model, WINDOW, FRAMES, backend="numpy")
    assert rt.describe().engine == "compiled"
