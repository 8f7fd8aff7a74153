"""Tests of the NumPy single-stream step (vidrec.streaming.numpy_step) and the runtime's numpy backend."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from tests.streaming.conftest import randomize_batchnorm
from vidrec.layers.residual1d import InvertedResidual1d
from vidrec.layers.temporal import TemporalAvgPoolHead, TemporalSequential, temporal_conv1d
from vidrec.models import build_model
from vidrec.models._base import StreamableClassifier
from vidrec.models.resnet1d import ResNet1D, Stage1d
from vidrec.streaming.numpy_step import NumpyStreamStep
from vidrec.streaming.runtime import StepBackend, StreamingClassifier

ATOL = 1e-4


def _half_har() -> nn.Module:
    """A half-width resnet1d_har (receptive field 87, dilations 1, 2, 4) with randomised BatchNorm."""
    torch.manual_seed(1)
    stages = [Stage1d(32, 2, 5, 1, 1), Stage1d(64, 2, 5, 1, 2), Stage1d(64, 2, 3, 1, 4)]
    return randomize_batchnorm(ResNet1D(in_channels=6, num_classes=6, stem_width=32, stages=stages), seed=1)


def _tiny() -> nn.Module:
    torch.manual_seed(0)
    return randomize_batchnorm(build_model("resnet1d_tiny", in_channels=3, num_classes=3))


MODELS = {"resnet1d_tiny": (_tiny, 40), "half_har": (_half_har, 96)}


def _offline(model: nn.Module, x: np.ndarray, ends: list[int], window: int) -> np.ndarray:
    """``(len(ends), K)`` offline logits of the windows of ``x`` (C, T) ending (exclusive) at ``ends``."""
    windows = torch.from_numpy(np.stack([x[:, e - window : e] for e in ends]))  # (n, C, window)
    with torch.no_grad():
        return model(windows).numpy()


def _stream(step: NumpyStreamStep, x: np.ndarray, hop: int) -> tuple[list[int], np.ndarray]:
    """Feed ``x`` (C, T) hop by hop; returns the end of each hop and the logits after it."""
    ends, out = [], []
    for start in range(0, x.shape[1] - hop + 1, hop):
        out.append(step.step(x[:, start : start + hop]))
        ends.append(start + hop)
    return ends, np.stack(out)


@pytest.mark.parametrize("name", list(MODELS))
@pytest.mark.parametrize("hop", [1, 4])
@pytest.mark.parametrize("fold_bn", [True, False], ids=["folded", "plain"])
def test_every_window_after_warmup_equals_offline(name: str, hop: int, fold_bn: bool) -> None:
    build, window = MODELS[name]
    model = build()
    step = NumpyStreamStep(StreamingClassifier(model, window, hop, fold_bn=fold_bn).model)
    # more than two ring periods, so the wrap-around copies of every ring are exercised
    x = np.random.default_rng(0).standard_normal((step.in_channels, window + 2 * 64 + 8)).astype(np.float32)
    ends, got = _stream(step, x, hop)
    ready = [i for i, e in enumerate(ends) if e >= window]
    ref = _offline(model, x, [ends[i] for i in ready], window)
    assert got.shape[1] == step.num_classes == ref.shape[1]
    np.testing.assert_allclose(got[ready], ref, atol=ATOL, rtol=0)


def test_reset_makes_a_restarted_stream_exact_again() -> None:
    model = _half_har()
    window = 96
    step = NumpyStreamStep(StreamingClassifier(model, window, 1).model)
    rng = np.random.default_rng(2)
    step.step(rng.standard_normal((6, 77)).astype(np.float32) * 5)  # an unrelated stream, 77 samples at once
    step.reset()
    x = rng.standard_normal((6, window + 30)).astype(np.float32)
    ends, got = _stream(step, x, 1)
    _, fresh = _stream(step.fresh(), x, 1)
    np.testing.assert_array_equal(got, fresh)  # reset is a full restart, bit for bit
    ready = [i for i, e in enumerate(ends) if e >= window]
    np.testing.assert_allclose(got[ready], _offline(model, x, [ends[i] for i in ready], window), atol=ATOL, rtol=0)


def test_fresh_streams_are_independent() -> None:
    model = _tiny()
    step = NumpyStreamStep(StreamingClassifier(model, 40, 2).model)
    other = step.fresh()
    rng = np.random.default_rng(3)
    a, b = (rng.standard_normal((3, 60)).astype(np.float32) for _ in range(2))
    got_a, got_b = [], []
    for s in range(0, 60, 2):  # interleaved
        got_a.append(step.step(a[:, s : s + 2]))
        got_b.append(other.step(b[:, s : s + 2]))
    np.testing.assert_allclose(got_a[-1], _offline(model, a, [60], 40)[0], atol=ATOL, rtol=0)
    np.testing.assert_allclose(got_b[-1], _offline(model, b, [60], 40)[0], atol=ATOL, rtol=0)


class _Small1d(StreamableClassifier):
    """A stem conv followed by ``block`` (3 -> 8 channels), pool and linear head."""

    def __init__(self, block: nn.Module) -> None:
        super().__init__()
        self.features = TemporalSequential(temporal_conv1d(3, 8, 3), block)
        self.pool = TemporalAvgPoolHead()
        self.classifier = nn.Linear(8, 4)
        self._init_geometry()


def test_unsupported_models_raise_type_error() -> None:
    strided = ResNet1D(in_channels=3, num_classes=3, stages=[Stage1d(8, 1, 3, 2, 1)], stem_width=8).eval()
    with pytest.raises(TypeError, match="stride"):
        NumpyStreamStep(StreamingClassifier(strided, 40, 2).model)
    with pytest.raises(TypeError, match="groups=2"):
        NumpyStreamStep(StreamingClassifier(_Small1d(temporal_conv1d(8, 8, 3, groups=2)).eval(), 40, 1).model)
    # InvertedResidual1d lowers as its body (the shared registry); the body's ReLU6 has no NumPy lowering
    with pytest.raises(TypeError, match="cannot lower ReLU6"):
        NumpyStreamStep(StreamingClassifier(_Small1d(InvertedResidual1d(8, 8, 3, expansion=2)).eval(), 40, 1).model)
    with pytest.raises(TypeError, match="StreamableClassifier"):
        NumpyStreamStep(nn.Sequential(nn.Conv1d(3, 3, 1)))
    unconfigured = _tiny()
    with pytest.raises(ValueError, match="configure_stream"):
        NumpyStreamStep(unconfigured)


def test_bad_chunks_are_refused() -> None:
    step = NumpyStreamStep(StreamingClassifier(_tiny(), 40, 1).model)
    with pytest.raises(ValueError, match=r"chunk must be \(C, n\)"):
        step.step(np.zeros((4, 1), dtype=np.float32))
    with pytest.raises(ValueError, match=r"chunk must be \(C, n\)"):
        step.step(np.zeros((3, 0), dtype=np.float32))


@pytest.mark.parametrize("hop", [1, 3])
def test_runtime_numpy_backend_equals_torch_with_subsets_and_reset(hop: int) -> None:
    model = _tiny()
    window = 40
    ticks = 2 * (window // hop) + 10
    mean, std = [0.5, -1.0, 0.0], [2.0, 0.5, 1.5]
    kw = dict(capacity=3, mean=mean, std=std)
    ref = StreamingClassifier(model, window, hop, backend=StepBackend.TORCH, **kw)  # type: ignore[arg-type]
    num = StreamingClassifier(model, window, hop, backend=StepBackend.NUMPY, **kw)  # type: ignore[arg-type]
    assert num.backend is StepBackend.NUMPY
    x = torch.randn(3, 3, ticks * hop) * 2
    compared = 0
    for tick in range(ticks):
        slots = [0, 2] if tick % 3 == 1 else None  # slot 1 skips every third hop
        if tick == window // hop + 2:  # restart slot 2: it is ready again window // hop ticks later
            for rt in (ref, num):
                rt.reset([2])
        rows = [0, 1, 2] if slots is None else slots
        chunk = x[rows, :, tick * hop : (tick + 1) * hop]
        a, b = ref.step(chunk, slots), num.step(chunk, slots)
        assert isinstance(b.logits, torch.Tensor) and b.logits.shape == a.logits.shape
        np.testing.assert_array_equal(a.ready, b.ready)
        np.testing.assert_array_equal(a.slots, b.slots)
        if a.ready.any():
            torch.testing.assert_close(b.logits[a.ready], a.logits[a.ready], atol=ATOL, rtol=0)
            compared += int(a.ready.sum())
    assert compared > 20 and ref.samples_seen[2] >= window  # the restarted slot was compared as well
    np.testing.assert_array_equal(num.samples_seen, ref.samples_seen)


def test_runtime_numpy_backend_grow_reset_and_errors() -> None:
    model = _tiny()
    x = torch.randn(1, 3, 60)
    a = StreamingClassifier(model, 40, 4, backend=StepBackend.NUMPY)
    a_logits, _ = a.run(x)
    b = StreamingClassifier(model, 40, 4, backend=StepBackend.NUMPY)
    b.run(x[:, :, :24])
    b.grow(3)
    assert b.capacity == 3 and b.samples_seen.tolist() == [24, 0, 0]
    rest = torch.zeros(3, 3, 36)
    rest[0] = x[0, :, 24:]
    b_logits, _ = b.run(rest)
    torch.testing.assert_close(b_logits[0, -1], a_logits[0, -1], atol=ATOL, rtol=0)
    b.reset()
    assert b.samples_seen.tolist() == [0, 0, 0]
    with pytest.raises(ValueError, match="slot indices"):
        b.step(torch.zeros(1, 3, 4), [3])
    with pytest.raises(ValueError, match="chunk must be"):
        b.step(torch.zeros(1, 3, 5), [0])
    with pytest.raises(ValueError, match="time series only"):
        StreamingClassifier(model, 40, 4, frame_shape=(8, 8), backend=StepBackend.NUMPY)


def test_runtime_falls_back_to_torch_for_unsupported_models() -> None:
    with pytest.warns(UserWarning, match="numpy backend unavailable"):
        rt = StreamingClassifier(_Small1d(nn.GELU()).eval(), 40, 1, backend=StepBackend.NUMPY)
    assert rt.backend is StepBackend.TORCH
    assert rt.step(torch.zeros(1, 3, 1)).logits.shape == (1, 4)
